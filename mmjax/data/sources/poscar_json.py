"""JSON maps ``{id: {"poscar": str, <field>: value, ...}}`` -> Material.

Layout of ``perovskites/structures_all.json.gz`` and ``carbon24/structures_all.json.gz``
(fields ``poscar``, ``cdvae_split``) and of the JARVIS/ALIGNN samples
``jarvis/alignn_samples.json.gz`` (``poscar``, ``band_gap`` may be null) and
``jarvis/alignn_multi_prop_edos.json.gz`` (``poscar``, ``edos_up``: 300 floats).
"""

from __future__ import annotations

import os
from typing import Sequence

from mmjax.data.material import Material, RecordError
from mmjax.data.sources.compressed import load_json
from mmjax.data.sources.result import ReadResult, SourceError
from mmjax.data.sources.structure_text import parse_structure
from mmjax.data.sources.tabular import json_safe, to_target

STRUCTURE_KEYS = ("poscar", "cif", "structure")


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_poscar_json(
    path: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    limit: int | None = None,
) -> ReadResult:
    """Read ``{id: {"poscar": text, ...}}`` (CIF text under "cif" also works), in file order.

    targets: fields to use as targets (null -> NaN; a list of numbers or a square symmetric
        matrix is a vector target, `mmjax.data.sources.tabular.to_target`); None = every field whose values are
        numbers or null in the records read (so ``band_gap`` for JARVIS, none for CDVAE files).
    Every other field (e.g. ``cdvae_split``, ``edos_up``) goes to ``Material.meta`` unchanged,
    plus ``meta["source_file"]``. limit: read only the first ``limit`` entries.
    Raises ``SourceError`` when the file is not such a map; bad entries become ``RecordError``s.
    """
    doc = load_json(path)
    if not isinstance(doc, dict) or not doc:
        raise SourceError(path, "expected a non-empty JSON object {id: {\"poscar\": ...}}")
    items = list(doc.items())[:limit] if limit is not None else list(doc.items())
    if targets is None:
        fields: dict[str, bool] = {}
        for _, rec in items:
            if isinstance(rec, dict):
                for key, value in rec.items():
                    if key not in STRUCTURE_KEYS:
                        fields[key] = fields.get(key, True) and _is_number(value)
        target_keys = [k for k, numeric in fields.items() if numeric]
    else:
        target_keys = list(targets)
    materials, errors = [], []
    for rid, rec in items:
        try:
            if not isinstance(rec, dict):
                raise ValueError(f"entry is a {type(rec).__name__}, expected an object")
            key = next((k for k in STRUCTURE_KEYS if k in rec), None)
            if key is None:
                raise ValueError(f"entry has no structure field (one of {STRUCTURE_KEYS}); keys {sorted(rec)}")
            structure = parse_structure(rec[key], "cif" if key == "cif" else None)
            meta = {k: json_safe(v) for k, v in rec.items() if k not in STRUCTURE_KEYS and k not in target_keys}
            meta["source_file"] = str(path)
            materials.append(
                Material(
                    id=rid,
                    structure=structure,
                    targets={t: to_target(rec.get(t), t) for t in target_keys},
                    meta=meta,
                )
            )
        except ValueError as exc:
            errors.append(RecordError(rid, str(exc)))
    return ReadResult(materials, errors)
