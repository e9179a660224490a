"""CSV tables (optionally .gz/.bz2/.xz) with an id column and a CIF/POSCAR text column -> Material."""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd
from pymatgen.core import Composition

from mmjax.data.material import Material, RecordError
from mmjax.data.sources.result import ReadResult, SourceError, unique_ids
from mmjax.data.sources.structure_text import parse_structure
from mmjax.data.sources.tabular import (
    COMPOSITION_COLUMNS,
    ID_COLUMNS,
    STRUCTURE_COLUMN_PARTS,
    STRUCTURE_COLUMNS,
    TEXT_COLUMNS,
    find_column,
    is_missing,
    json_safe,
    to_float,
)

AUTO = "auto"


def _resolve(columns: list[str], choice: str | None, exact, parts=(), *, what: str, path) -> str | None:
    if choice is None:
        return None
    if choice == AUTO:
        return find_column(columns, exact, parts)
    if choice not in columns:
        raise SourceError(path, f"no {what} column {choice!r}; columns are {columns}")
    return choice


def read_csv(
    path: str | os.PathLike,
    *,
    id_column: str | None = AUTO,
    structure_column: str | None = AUTO,
    structure_format: str | None = None,
    targets: Sequence[str] | None = None,
    text_column: str | None = AUTO,
    text_source: str = "source",
    composition_column: str | None = AUTO,
    meta_columns: Sequence[str] | None = None,
    limit: int | None = None,
    duplicate_ids: str = "suffix",
) -> ReadResult:
    """Read a CSV of materials, one row each.

    id_column: "auto" = first of ``tabular.ID_COLUMNS`` present (e.g. ``material_id``); None or
        no match = the 0-based row number.
    structure_column: "auto" = a column named cif / structure / poscar, else the first whose name
        contains one of those; None = composition-only table. Cells hold CIF or POSCAR text
        (``structure_format`` forces one; default detects per cell).
    targets: float target columns; None = every floating-point column not used otherwise.
        Every material gets every target key (NaN where the cell is empty).
    text_column: "auto" = a column named description / text; None = no text. Non-empty cells
        become ``Material.text`` with ``text_source``.
    composition_column: "auto" = composition / formula / ...; used for rows whose structure
        cell is empty (composition-only material) or when there is no structure column.
    meta_columns: columns copied to ``Material.meta`` (JSON-safe, NaN -> None); None = all
        remaining columns. ``meta["source_file"]`` and ``meta["source_row"]`` (0-based) are added.
    limit: read only the first ``limit`` rows. duplicate_ids: see ``result.unique_ids``.

    Raises ``SourceError`` (names the file) when the file is missing/empty, or a named column is
    absent, or no structure column is found in "auto" mode and no composition column exists.
    Bad rows become ``RecordError``s naming the id and row.
    """
    if not os.path.isfile(path):
        raise SourceError(path, "file not found")
    try:
        frame = pd.read_csv(path, nrows=limit, compression="infer")
    except pd.errors.EmptyDataError:
        raise SourceError(path, "file is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise SourceError(path, f"is not a readable CSV ({exc})") from exc
    columns = [str(c) for c in frame.columns]
    frame.columns = columns

    id_col = _resolve(columns, id_column, ID_COLUMNS, what="id", path=path)
    structure_col = _resolve(
        columns, structure_column, STRUCTURE_COLUMNS, STRUCTURE_COLUMN_PARTS, what="structure", path=path
    )
    if structure_col is not None and frame[structure_col].dtype == bool:
        structure_col = None
    text_col = _resolve(columns, text_column, TEXT_COLUMNS, what="text", path=path)
    comp_col = _resolve(columns, composition_column, COMPOSITION_COLUMNS, what="composition", path=path)
    if structure_col is None and comp_col is None:
        if structure_column == AUTO:
            raise SourceError(
                path,
                "no structure column (looked for a name containing 'cif', 'poscar' or 'structure') "
                f"and no composition column; columns are {columns}. Pass structure_column=... "
                "(or structure_column=None, composition_column=... for composition-only data)",
            )
        raise SourceError(path, f"no composition column for a composition-only table; columns are {columns}")

    used = {c for c in (id_col, structure_col, text_col) if c is not None}
    if targets is None:
        target_cols = [c for c in columns if c not in used and pd.api.types.is_float_dtype(frame[c])]
    else:
        missing = [t for t in targets if t not in columns]
        if missing:
            raise SourceError(path, f"target columns {missing} are absent; columns are {columns}")
        target_cols = list(targets)
    if meta_columns is None:
        meta_cols = [c for c in columns if c not in used and c not in target_cols]
    else:
        absent = [c for c in meta_columns if c not in columns]
        if absent:
            raise SourceError(path, f"meta columns {absent} are absent; columns are {columns}")
        meta_cols = list(meta_columns)

    materials, errors = [], []
    records = frame.to_dict(orient="records")
    for row, rec in enumerate(records):
        rid = str(row) if id_col is None or is_missing(rec[id_col]) else str(json_safe(rec[id_col]))
        try:
            materials.append(
                _row_material(rid, row, rec, structure_col, structure_format, target_cols, text_col,
                              text_source, comp_col, meta_cols, str(path))
            )
        except (ValueError, KeyError) as exc:
            errors.append(RecordError(f"{rid} (row {row})", str(exc)))
    return ReadResult(unique_ids(materials, duplicate_ids, str(path)), errors)


def _row_material(rid, row, rec, structure_col, structure_format, target_cols, text_col, text_source,
                  comp_col, meta_cols, path) -> Material:
    structure = composition = None
    if structure_col is not None and not is_missing(rec[structure_col]):
        structure = parse_structure(str(rec[structure_col]), structure_format)
    elif comp_col is not None and not is_missing(rec[comp_col]):
        composition = Composition(str(rec[comp_col]))
        if composition.num_atoms <= 0:
            raise ValueError(f"composition {rec[comp_col]!r} has no atoms")
    elif structure_col is not None:
        raise ValueError(f"empty structure cell in column {structure_col!r}")
    else:
        raise ValueError(f"empty composition cell in column {comp_col!r}")
    text = None
    if text_col is not None and not is_missing(rec[text_col]):
        text = str(rec[text_col])
    meta = {c: json_safe(rec[c]) for c in meta_cols}
    meta["source_file"] = path
    meta["source_row"] = row
    return Material(
        id=rid,
        structure=structure,
        composition=composition,
        targets={t: to_float(rec[t], t) for t in target_cols},
        text=text,
        text_source=text_source if text is not None else None,
        meta=meta,
    )
