"""Materials Project JSON documents -> Material (structure, optional DOS and charge density, targets).

Accepted file layouts (optionally .gz/.bz2/.xz): a JSON list of documents, JSON lines
(``.jsonl``), an API response ``{"data": [docs]}``, or a single document. A document has

* ``material_id`` (or ``task_id`` / ``id``),
* ``structure``: pymatgen ``Structure.as_dict()`` (CIF/POSCAR text also accepted),
* optional ``dos``: ``{"energies": [L], "densities": [L] or {"1": [L], "-1": [L]}, "efermi": float}``
  which is also pymatgen's ``Dos.as_dict()`` / ``CompleteDos.as_dict()`` layout,
* optional ``chgcar`` or ``charge_density``: ``{"data": {"total": nested [nx][ny][nz]}, ...}``
  (pymatgen ``VolumetricData.as_dict()``; monty's encoded numpy arrays work too) or a bare grid,
* any scalar property fields (``band_gap``, ``formation_energy_per_atom`` ...), used as targets.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from pymatgen.core import Structure

from mmjax.data.material import DOS, Material, RecordError
from mmjax.data.sources.compressed import load_json
from mmjax.data.sources.result import ReadResult, SourceError, unique_ids
from mmjax.data.sources.structure_text import parse_structure
from mmjax.data.sources.tabular import json_safe, to_target

ID_KEYS = ("material_id", "task_id", "id")
CHARGE_KEYS = ("chgcar", "charge_density")
_SPIN_KEYS = {"up": ("1", "Spin.up", "up", 1), "down": ("-1", "Spin.down", "down", -1)}
_RESERVED = ("structure", "dos", *CHARGE_KEYS, *ID_KEYS)


def _array(value: Any, what: str) -> np.ndarray:
    """Float64 array from a nested list or a monty-encoded numpy dict."""
    if isinstance(value, dict) and value.get("@module") == "numpy":
        value = np.asarray(value["data"], dtype=value.get("dtype", "float64"))
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a numeric array") from None
    return out


def parse_dos(doc: dict, spin: str = "total") -> DOS:
    """``DOS`` from an MP / pymatgen DOS dict.

    spin: "total" sums the spin channels ("1" and "-1"), "up" keeps channel "1" only (what
    MultiMat uses). Energies must be strictly increasing (eV) and match the densities in length.
    """
    if not isinstance(doc, dict) or "energies" not in doc or "densities" not in doc:
        raise ValueError("dos needs 'energies' and 'densities'")
    energies = _array(doc["energies"], "dos energies")
    dens = doc["densities"]
    if isinstance(dens, dict):
        channels = {}
        for name, keys in _SPIN_KEYS.items():
            for k in keys:
                if k in dens:
                    channels[name] = _array(dens[k], f"dos densities[{k!r}]")
                    break
        if "up" not in channels:
            raise ValueError(f"dos densities has no spin-up channel ('1'); keys {sorted(map(str, dens))}")
        if spin == "up":
            densities = channels["up"]
        elif spin == "total":
            densities = channels["up"] + channels["down"] if "down" in channels else channels["up"]
        else:
            raise ValueError(f"spin must be 'total' or 'up', got {spin!r}")
    else:
        densities = _array(dens, "dos densities")
    if energies.ndim != 1 or densities.shape != energies.shape or energies.size < 2:
        raise ValueError(f"dos energies {energies.shape} and densities {densities.shape} must be equal 1-D")
    if not np.all(np.diff(energies) > 0):
        raise ValueError("dos energies are not strictly increasing")
    efermi = doc.get("efermi")
    return DOS(energies=energies, densities=densities, efermi=None if efermi is None else float(efermi))


def parse_charge_density(doc: Any) -> np.ndarray:
    """Float32 [nx, ny, nz] grid from a CHGCAR-like dict (``data.total``) or a bare nested list."""
    grid = doc
    if isinstance(doc, dict) and doc.get("@module") != "numpy":
        data = doc.get("data")
        if not isinstance(data, dict) or "total" not in data:
            raise ValueError("charge density dict needs data['total']")
        grid = data["total"]
    grid = _array(grid, "charge density")
    if grid.ndim != 3 or min(grid.shape) < 1:
        raise ValueError(f"charge density must be a 3-D grid, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError("charge density has non-finite values")
    return grid.astype(np.float32)


def _documents(doc: Any, path) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return doc["data"]
    if isinstance(doc, dict) and any(k in doc for k in ID_KEYS):
        return [doc]
    raise SourceError(path, "expected a list of MP documents, JSON lines, or {'data': [...]}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_mp_json(
    path: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    spin: str = "total",
    limit: int | None = None,
    duplicate_ids: str = "suffix",
) -> ReadResult:
    """Read Materials Project documents (layouts in the module docstring).

    targets: property fields to keep as targets (missing/null -> NaN): a number, a list of
        numbers (a vector target) or a square symmetric matrix such as a 6 x 6 elastic tensor (its
        21 independent entries; `mmjax.data.sources.tabular.to_target`); None = every top-level
        number in the document. Other scalar fields (strings, bools) go to ``meta``;
        nested fields other than structure / dos / charge density are dropped.
    spin: DOS channel handling, see ``parse_dos``. limit: first ``limit`` documents only.
    A bad document (no id, no structure, malformed DOS or grid) becomes a ``RecordError``.
    """
    docs = _documents(load_json(path), path)
    if limit is not None:
        docs = docs[:limit]
    materials, errors = [], []
    for row, doc in enumerate(docs):
        rid = f"row {row}"
        try:
            if not isinstance(doc, dict):
                raise ValueError(f"document is a {type(doc).__name__}, expected an object")
            key = next((k for k in ID_KEYS if doc.get(k) is not None), None)
            if key is None:
                raise ValueError(f"document has no id field (one of {ID_KEYS})")
            rid = str(doc[key])
            materials.append(_material(rid, row, doc, targets, spin, str(path)))
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(RecordError(rid if rid.startswith("row") else f"{rid} (row {row})", str(exc)))
    return ReadResult(unique_ids(materials, duplicate_ids, str(path)), errors)


def _material(rid, row, doc, targets, spin, path) -> Material:
    raw = doc.get("structure")
    if raw is None:
        raise ValueError("document has no 'structure'")
    structure = parse_structure(raw) if isinstance(raw, str) else Structure.from_dict(raw)
    if len(structure) == 0:
        raise ValueError("structure has no sites")
    dos = parse_dos(doc["dos"], spin) if doc.get("dos") is not None else None
    charge_key = next((k for k in CHARGE_KEYS if doc.get(k) is not None), None)
    charge = parse_charge_density(doc[charge_key]) if charge_key else None
    if targets is None:
        target_keys = [k for k, v in doc.items() if k not in _RESERVED and _is_number(v)]
    else:
        target_keys = list(targets)
    meta = {
        k: json_safe(v)
        for k, v in doc.items()
        if k not in _RESERVED and k not in target_keys and (v is None or isinstance(v, (str, bool, int, float)))
    }
    meta.update(source_file=path, source_row=row)
    return Material(
        id=rid,
        structure=structure,
        targets={t: to_target(doc.get(t), t) for t in target_keys},
        dos=dos,
        charge_density=charge,
        meta=meta,
    )
