"""Folder of CIF / POSCAR / CONTCAR / *.vasp files -> Material (ids from file stems).

A folder in CGCNN's ``root_dir`` layout (txie-93/cgcnn ``CIFData``: ``id_prop.csv`` with rows
``id,target[,target...]`` and no header, one ``<id>.cif`` per row) is read as CGCNN reads it: the
rows of ``id_prop.csv``, in its order, with their targets (``"target"`` for one column,
``"target_0"``, ``"target_1"``, ... for several), each row's id as the material id (an id may name a
sub-folder, ``s1/x`` -> ``s1/x.cif``); structure files not listed there are not read, and a warning
line counts them. An ``atom_init.json`` in the folder is not read as data: CGCNN's table ships with
mmjax (``config.system.encoder.element_table``, ``"cgcnn_atom_init"``); a warning names the key
that takes this file instead when the two differ.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import pathlib

import numpy as np

from mmjax.data.features.elements import load_element_table
from mmjax.data.material import Material, RecordError
from mmjax.data.sources.compressed import base_suffix, compression_of, open_text
from mmjax.data.sources.result import ReadResult, SourceError, unique_ids
from mmjax.data.sources.structure_text import parse_structure

log = logging.getLogger(__name__)

_FORMAT_OF_SUFFIX = {".cif": "cif", ".mcif": "cif", ".vasp": "poscar", ".poscar": "poscar"}
_POSCAR_NAMES = ("poscar", "contcar")


def structure_file_format(path: str | os.PathLike) -> str | None:
    """"cif" / "poscar" from the file name (extension, or a POSCAR*/CONTCAR* name), else None.

    Compression suffixes (.gz, .bz2, .xz) are looked through: "a.cif.gz" -> "cif".
    """
    fmt = _FORMAT_OF_SUFFIX.get(base_suffix(path))
    if fmt is None and pathlib.Path(path).name.lower().startswith(_POSCAR_NAMES):
        fmt = "poscar"
    return fmt


def file_id(path: str | os.PathLike) -> str:
    """Material id of a structure file: its name without compression and format suffixes."""
    name = pathlib.Path(path).name
    if compression_of(name):
        name = os.path.splitext(name)[0]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in _FORMAT_OF_SUFFIX else name


def read_structure_file(path: str | os.PathLike, fmt: str | None = None) -> Material:
    """One structure file -> Material; raises ``RecordError`` naming the file when it is bad.

    fmt: "cif", "poscar", or None (from the name, else detected from the contents).
    """
    path = pathlib.Path(path)
    try:
        with open_text(path) as fh:
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordError(path.name, f"cannot be read ({exc})") from exc
    if not text.strip():
        raise RecordError(path.name, "file is empty")
    try:
        structure = parse_structure(text, fmt or structure_file_format(path))
    except ValueError as exc:
        raise RecordError(path.name, str(exc)) from exc
    return Material(id=file_id(path), structure=structure, meta={"source_file": str(path)})


def read_structure_folder(
    folder: str | os.PathLike,
    *,
    recursive: bool = False,
    all_files: bool = False,
    fmt: str | None = None,
    limit: int | None = None,
    duplicate_ids: str = "suffix",
    id_prop: bool = True,
) -> ReadResult:
    """Read every structure file in ``folder`` (sorted by path), or a single file.

    Files are chosen by name (``*.cif``, ``*.mcif``, ``*.vasp``, ``*.poscar``, ``POSCAR*``,
    ``CONTCAR*``, optionally compressed); with ``all_files`` every regular file that does not
    start with "." is tried and its format detected from the contents.
    recursive: also descend into sub-folders. fmt: force "cif" or "poscar" for every file.
    limit: read at most this many files. duplicate_ids: see ``result.unique_ids``.
    Returns ``ReadResult``; a file that does not parse becomes a ``RecordError`` naming it.
    A folder holding ``id_prop.csv`` is read in CGCNN's layout (module docstring; ``id_prop=False``
    reads the files alone).
    """
    folder = pathlib.Path(folder)
    if id_prop and (folder / ID_PROP).is_file():
        changed = {k: v for k, v in (("recursive", recursive), ("all_files", all_files),
                                     ("duplicate_ids", duplicate_ids)) if v != {"duplicate_ids": "suffix"}.get(k, False)}
        if changed:
            raise ValueError(f"{folder}: {ID_PROP} decides which files are read (CGCNN's root_dir), so "
                             f"{sorted(changed)} cannot apply; pass id_prop=False to read the structure files alone")
        return read_cgcnn_root(folder, fmt=fmt, limit=limit)
    if folder.is_file():
        paths = [folder]
    elif folder.is_dir():
        candidates = folder.rglob("*") if recursive else folder.iterdir()
        paths = sorted(
            p
            for p in candidates
            if p.is_file()
            and not p.name.startswith(".")
            and (all_files or structure_file_format(p) is not None)
        )
        if not paths:
            raise SourceError(folder, "holds no CIF/POSCAR files (*.cif, *.vasp, POSCAR*, CONTCAR*)")
    else:
        raise SourceError(folder, "no such file or folder")
    if limit is not None:
        paths = paths[:limit]
    materials, errors = [], []
    for path in paths:
        try:
            materials.append(read_structure_file(path, fmt))
        except RecordError as err:
            errors.append(err)
    return ReadResult(unique_ids(materials, duplicate_ids, str(folder)), errors)


ID_PROP = "id_prop.csv"


def cgcnn_target_names(n_columns: int) -> list[str]:
    """Target names of an ``id_prop.csv`` with ``n_columns`` value columns."""
    return ["target"] if n_columns == 1 else [f"target_{i}" for i in range(n_columns)]


def read_cgcnn_root(folder: str | os.PathLike, *, fmt: str | None = None, limit: int | None = None) -> ReadResult:
    """CGCNN ``root_dir`` -> ``ReadResult``: one Material per ``id_prop.csv`` row, from ``<id>.cif``.

    Every row must have the same number of value columns (else ``SourceError`` naming the line); a
    row whose value is not a finite number, whose id repeats, or whose ``<id>.cif`` is missing or does
    not parse becomes a ``RecordError`` naming that id, and the other rows are read.
    """
    folder = pathlib.Path(folder)
    with open(folder / ID_PROP, newline="") as fh:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(fh)) if r and any(c.strip() for c in r)]
    if not rows:
        raise SourceError(folder / ID_PROP, "has no rows (expected id,target[,target...] per line)")
    widths = {len(r) for _, r in rows}
    if len(widths) != 1 or min(widths) < 2:
        line, row = next((n, r) for n, r in rows if len(r) != len(rows[0][1]) or len(r) < 2)
        raise SourceError(folder / ID_PROP, f"line {line} has {len(row)} columns; every line needs the id and the "
                                            f"same number of targets ({len(rows[0][1])} columns on line {rows[0][0]})")
    names = cgcnn_target_names(len(rows[0][1]) - 1)
    if limit is not None:
        rows = rows[:limit]
    materials, errors, seen = [], [], set()
    for _, row in rows:
        rid = row[0].strip()
        if rid in seen:
            errors.append(RecordError(rid, f"listed twice in {ID_PROP}; the first row is kept"))
            continue
        seen.add(rid)
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            errors.append(RecordError(rid, f"{ID_PROP} value {row[1:]!r} is not a number"))
            continue
        if not all(math.isfinite(v) for v in values):
            errors.append(RecordError(rid, f"{ID_PROP} value {row[1:]!r} is not finite"))
            continue
        path = folder / f"{rid}.cif"
        if not path.is_file():
            errors.append(RecordError(rid, f"listed in {ID_PROP} but {path.name} is not in {folder}"))
            continue
        try:
            material = read_structure_file(path, fmt)
        except RecordError as err:
            errors.append(err)
            continue
        materials.append(dataclasses.replace(material, id=rid, targets=dict(zip(names, values))))
    if limit is None:
        _warn_unlisted(folder, seen)
    _warn_atom_init(folder)
    return ReadResult(materials, errors)


def _warn_unlisted(folder: pathlib.Path, listed: set) -> None:
    """One warning line counting the structure files in ``folder`` that no ``id_prop.csv`` row names."""
    unlisted = sorted(p.name for p in folder.iterdir()
                      if p.is_file() and structure_file_format(p) is not None and file_id(p) not in listed)
    if unlisted:
        log.warning("%s: %d structure file(s) not listed in %s are not read (e.g. %s); pass id_prop=False to read "
                    "every file without targets", folder, len(unlisted), ID_PROP, ", ".join(unlisted[:3]))


def _warn_atom_init(folder: pathlib.Path) -> None:
    """Warn when ``folder/atom_init.json`` differs from the shipped CGCNN table (or cannot be compared)."""
    path = folder / "atom_init.json"
    if not path.is_file():
        return
    try:
        same = np.array_equal(load_element_table(str(path)), load_element_table("cgcnn_atom_init"))
    except (OSError, ValueError, KeyError, TypeError):
        same = False  # unreadable here, or the shipped table is not found: say which table is used
    if not same:
        log.warning("%s is not read as data: the CGCNN systems use config.system.encoder.element_table (default "
                    "'cgcnn_atom_init', CGCNN's published table); set it to %s to use this file", path, path)
