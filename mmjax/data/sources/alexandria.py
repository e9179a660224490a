"""Alexandria database dumps -> Material.

Layout (``.json``, ``.json.bz2``, ``.json.gz``): ``{"entries": [ComputedStructureEntry.as_dict(), ...]}``.
Each entry has ``structure`` (``Structure.as_dict()``), ``energy`` (uncorrected total energy, eV),
``correction`` / ``energy_adjustments``, ``entry_id`` and ``data`` (``mat_id``, ``e_form``,
``e_above_hull``, ``band_gap_ind``, ``spg`` ...).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from pymatgen.core import Structure

from mmjax.data.material import Material, RecordError
from mmjax.data.sources.compressed import load_json
from mmjax.data.sources.result import ReadResult, SourceError, unique_ids
from mmjax.data.sources.tabular import json_safe, to_float

ENTRY_TARGETS = ("energy", "energy_per_atom")


def entry_energy(entry: dict) -> float:
    """Corrected total energy (eV) of an entry dict: uncorrected ``energy`` plus the sum of
    ``energy_adjustments`` values when present, else plus ``correction`` (as pymatgen's
    ``ComputedEntry.energy``)."""
    adjustments = entry.get("energy_adjustments")
    if adjustments:
        correction = sum(float(a["value"]) for a in adjustments)
    else:
        correction = float(entry.get("correction") or 0.0)
    return float(entry["energy"]) + correction


def _float_data_keys(entries: list) -> list[str]:
    """Keys of ``data`` that hold a float in some entry and only numbers/null in all."""
    seen_float: dict[str, bool] = {}
    numeric: dict[str, bool] = {}
    for entry in entries:
        data = entry.get("data") if isinstance(entry, dict) else None
        for k, v in (data or {}).items():
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            numeric[k] = numeric.get(k, True) and ok
            seen_float[k] = seen_float.get(k, False) or isinstance(v, float)
    return [k for k in numeric if numeric[k] and seen_float[k]]


def read_alexandria(
    path: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    limit: int | None = None,
    duplicate_ids: str = "suffix",
) -> ReadResult:
    """Read an Alexandria dump.

    id: ``data["mat_id"]``, else ``entry_id``. targets: names among ``energy`` (corrected total,
    eV), ``energy_per_atom`` (eV/atom) and the keys of ``data`` (null -> NaN); None = those two
    plus every float field of ``data`` (e_form, e_above_hull, band gaps ...). Other scalar
    ``data`` fields (``spg``, ``formula``, ``location`` ...) go to ``meta``.
    limit: first ``limit`` entries only. Bad entries become ``RecordError``s.
    """
    doc = load_json(path)
    entries = doc.get("entries") if isinstance(doc, dict) else doc if isinstance(doc, list) else None
    if not isinstance(entries, list):
        raise SourceError(path, "expected {'entries': [ComputedStructureEntry dicts]}")
    if limit is not None:
        entries = entries[:limit]
    target_keys = list(ENTRY_TARGETS) + _float_data_keys(entries) if targets is None else list(targets)
    materials, errors = [], []
    for row, entry in enumerate(entries):
        rid = f"row {row}"
        try:
            if not isinstance(entry, dict):
                raise ValueError(f"entry is a {type(entry).__name__}, expected an object")
            data = entry.get("data") or {}
            ident = data.get("mat_id") or entry.get("entry_id")
            if ident is None:
                raise ValueError("entry has neither data['mat_id'] nor entry_id")
            rid = str(ident)
            materials.append(_material(rid, row, entry, data, target_keys, str(path)))
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(RecordError(rid if rid.startswith("row") else f"{rid} (row {row})", str(exc)))
    return ReadResult(unique_ids(materials, duplicate_ids, str(path)), errors)


def _material(rid: str, row: int, entry: dict, data: dict, target_keys: list[str], path: str) -> Material:
    if not isinstance(entry.get("structure"), dict):
        raise ValueError("entry has no structure dict (is it a ComputedEntry without structure?)")
    structure = Structure.from_dict(entry["structure"])
    if len(structure) == 0:
        raise ValueError("structure has no sites")
    values: dict[str, Any] = dict(data)
    if "energy" in entry:
        values["energy"] = entry_energy(entry)
        values["energy_per_atom"] = values["energy"] / len(structure)
    meta = {
        k: json_safe(v)
        for k, v in data.items()
        if k not in target_keys and (v is None or isinstance(v, (str, bool, int, float)))
    }
    meta.update(source_file=path, source_row=row)
    if entry.get("entry_id") is not None:
        meta["entry_id"] = str(entry["entry_id"])
    return Material(
        id=rid,
        structure=structure,
        targets={t: to_float(values.get(t), t) for t in target_keys},
        meta=meta,
    )
