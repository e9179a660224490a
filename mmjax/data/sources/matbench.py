"""Matbench task files -> Material.

Two layouts, told apart by their keys:

(a) matminer's ``<task>.json.gz``: pandas "split" orientation
    ``{"index": [...], "columns": ["structure", "<target>"], "data": [[structure_dict, y], ...]}``
    with ``structure_dict`` = pymatgen ``Structure.as_dict()`` (composition tasks hold a
    composition string or ``Composition.as_dict()`` under "composition" instead).
(b) the label artifacts ``matbench_<task>.json.bz2`` of the Matbench repository: column
    orientation ``{column: {"0": v0, ...}}`` with ``mbid``, the target, ``composition`` (unit-cell
    composition string), ``spg_num``, ``crys_sys`` and no structures (composition-only materials).

Ids are Matbench's ``mbid`` (``mb-perovskites-00001`` ...): given in (b), computed in (a) the way
``matbench.data_ops.load`` does. ``meta["source_row"]`` is the row in file order, which is what
``mmjax.data.splits.matbench_folds`` indexes.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
import shutil
import tempfile
import urllib.request
from typing import Any

from pymatgen.core import Composition, Structure

from mmjax.data.material import Material, RecordError
from mmjax.data.sources.compressed import load_json
from mmjax.data.sources.result import ReadResult, SourceError
from mmjax.data.sources.tabular import json_safe, to_float

# name -> (input column, target column, sha256 of matminer's file); from matminer 0.10.1's
# datasets/dataset_metadata.json. Files live at MATMINER_URL.format(name=name).
MATMINER_URL = "https://ml.materialsproject.org/projects/{name}.json.gz"
MATBENCH_TASKS: dict[str, tuple[str, str, str]] = {
    "matbench_dielectric": ("structure", "n", "83befa09bc2ec2f4b6143afc413157827a90e5e2e42c1eb507ccfa01bf26a1d6"),
    "matbench_expt_gap": ("composition", "gap expt", "783e7d1461eb83b00b2f2942da4b95fda5e58a0d1ae26b581c24cf8a82ca75b2"),
    "matbench_expt_is_metal": ("composition", "is_metal", "8f2a4f9bacdcbc5c2c73615629ee7986f09d39bed40ba7db52b61b2889730887"),
    "matbench_glass": ("composition", "gfa", "36beb654e2a463ee2a6572105bea0ca2961eee7c7b26a25377bff2c3b338e53a"),
    "matbench_jdft2d": ("structure", "exfoliation_en", "26057dc4524e193e32abffb296ce819b58b6e11d1278cae329a2f97817a4eddf"),
    "matbench_log_gvrh": ("structure", "log10(G_VRH)", "098af941f4c663270f1fe21abf20ffad6fb85ecbfcba5786ceac03983ac29da7"),
    "matbench_log_kvrh": ("structure", "log10(K_VRH)", "44b113ddb7e23aa18731a62c74afa7e5aa654199e0db5f951c8248a00955c9cd"),
    "matbench_mp_e_form": ("structure", "e_form", "dedcb1d4ba2e3e50dbdd45ba5bc647a00e9c2bcf8f8bf556dc8e92caa39eb21f"),
    "matbench_mp_gap": ("structure", "gap pbe", "58b65746bd88329986ed66031a2ac1369c7c522f7bc9f9081528e07097c2c057"),
    "matbench_mp_is_metal": ("structure", "is_metal", "9a028ed5750a4c76ca36e9f3c8d48fe0bf3fb21b76ec2289e58ae7048d527919"),
    "matbench_perovskites": ("structure", "e_form", "4641e2417f8ec8b50096d2230864468dfa08278dc9d257c327f65d0305278483"),
    "matbench_phonons": ("structure", "last phdos peak", "4db551f21ec5f577e6202725f10e34dfc509aa7df3a6bdaac497da7f6dbbb9b3"),
    "matbench_steels": ("composition", "yield strength", "473bc4957b2ea5e6465aef84bc29bb48ac34db27d69ea4ec5f508745c6fae252"),
}
_LABEL_META_COLUMNS = ("spg_num", "crys_sys")
_INPUT_COLUMNS = ("structure", "composition")


def task_name(task: str) -> str:
    """Canonical task name: "perovskites" or "matbench_perovskites" -> "matbench_perovskites"."""
    name = task if task.startswith("matbench_") else f"matbench_{task}"
    if name not in MATBENCH_TASKS:
        raise KeyError(f"unknown Matbench task {task!r}; known: {sorted(MATBENCH_TASKS)}")
    return name


def matbench_mbid(task: str, row: int, n_rows: int) -> str:
    """Matbench id of 0-based ``row`` in a task of ``n_rows``: prefix "mb-<task>" with "_" -> "-",
    then row + 1 zero-padded to floor(log10(n_rows)) + 1 digits (as ``matbench.data_ops.load``)."""
    prefix = task.replace("matbench", "mb", 1).replace("_", "-")
    width = math.floor(math.log10(n_rows)) + 1
    return f"{prefix}-{row + 1:0{width}d}"


def _task_of_path(path: str | os.PathLike) -> str | None:
    stem = pathlib.Path(path).name.split(".")[0]
    return stem if stem.startswith("matbench_") else None


def _composition(value: Any) -> Composition:
    if isinstance(value, Composition):
        return value
    if isinstance(value, dict):
        return Composition({k: v for k, v in value.items() if not k.startswith("@")})
    if isinstance(value, str) and value.strip():
        return Composition(value)
    raise ValueError(f"composition is not a formula string or dict: {value!r}")


def read_matbench(path: str | os.PathLike, *, limit: int | None = None) -> ReadResult:
    """Read a Matbench task file in either layout (see module docstring).

    Materials carry one target (the task's target column, bools as 0/1), ``meta["source_row"]``
    (0-based row in file order), ``meta["source_file"]`` and, for layout (b), ``spg_num`` and
    ``crys_sys``. limit: read only the first ``limit`` rows.
    Raises ``SourceError`` for a file in neither layout; bad rows become ``RecordError``s.
    """
    doc = load_json(path)
    if isinstance(doc, dict) and {"columns", "data"} <= set(doc):
        return _read_split_layout(doc, path, limit)
    if isinstance(doc, dict) and isinstance(doc.get("mbid"), dict):
        return _read_label_layout(doc, path, limit)
    keys = sorted(doc)[:8] if isinstance(doc, dict) else type(doc).__name__
    raise SourceError(path, f"not a Matbench file: expected keys columns/data/index or mbid, got {keys}")


def _read_split_layout(doc: dict, path, limit: int | None) -> ReadResult:
    columns = list(doc["columns"])
    input_col = next((c for c in _INPUT_COLUMNS if c in columns), None)
    if input_col is None or len(columns) != 2:
        raise SourceError(path, f"expected columns [structure|composition, <target>], got {columns}")
    target_col = columns[1 - columns.index(input_col)]
    data = doc["data"]
    index = doc.get("index", list(range(len(data))))
    if len(index) != len(data):
        raise SourceError(path, f"index has {len(index)} entries but data has {len(data)} rows")
    task = _task_of_path(path)
    n_rows = len(data)
    materials, errors = [], []
    for row, (idx, values) in enumerate(zip(index, data)):
        if limit is not None and row >= limit:
            break
        rid = matbench_mbid(task, row, n_rows) if task else str(idx)
        try:
            if not isinstance(values, (list, tuple)) or len(values) != 2:
                raise ValueError(f"row is not a [{input_col}, {target_col}] pair: {str(values)[:80]}")
            value = values[columns.index(input_col)]
            structure = composition = None
            if input_col == "structure":
                if not isinstance(value, dict) or "lattice" not in value or "sites" not in value:
                    raise ValueError("structure is not a pymatgen Structure.as_dict()")
                structure = Structure.from_dict(value)
                if len(structure) == 0:
                    raise ValueError("structure has no sites")
            else:
                composition = _composition(value)
            y = values[columns.index(target_col)]
            materials.append(
                Material(
                    id=rid,
                    structure=structure,
                    composition=composition,
                    targets={target_col: to_float(y, target_col)},
                    meta={"source_file": str(path), "source_row": row, "source_index": json_safe(idx)},
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(RecordError(f"{rid} (row {row})", str(exc)))
    return ReadResult(materials, errors)


def _read_label_layout(doc: dict, path, limit: int | None) -> ReadResult:
    columns = list(doc)
    target_cols = [c for c in columns if c not in ("mbid", "composition", *_LABEL_META_COLUMNS)]
    if "composition" not in doc or len(target_cols) != 1:
        raise SourceError(path, f"expected columns mbid, composition, spg_num, crys_sys and one target; got {columns}")
    (target_col,) = target_cols
    keys = sorted(doc["mbid"], key=int)
    if limit is not None:
        keys = keys[:limit]
    materials, errors = [], []
    for row, key in enumerate(keys):
        rid = str(doc["mbid"][key])
        try:
            if int(key) != row:
                raise ValueError(f"row keys are not 0..n-1 (key {key!r} at position {row})")
            meta = {c: json_safe(doc[c].get(key)) for c in _LABEL_META_COLUMNS if c in doc}
            meta.update(source_file=str(path), source_row=row)
            materials.append(
                Material(
                    id=rid,
                    composition=_composition(doc["composition"].get(key)),
                    targets={target_col: to_float(doc[target_col].get(key), target_col)},
                    meta=meta,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(RecordError(f"{rid} (row {row})", str(exc)))
    return ReadResult(materials, errors)


def default_cache_dirs() -> list[pathlib.Path]:
    """Where ``load_matbench`` looks: $MMJAX_DATA/matbench, $MATMINER_DATA, ~/.cache/mmjax/matbench."""
    dirs = []
    if os.environ.get("MMJAX_DATA"):
        dirs.append(pathlib.Path(os.environ["MMJAX_DATA"]).expanduser() / "matbench")
    if os.environ.get("MATMINER_DATA"):
        dirs.append(pathlib.Path(os.environ["MATMINER_DATA"]).expanduser())
    dirs.append(pathlib.Path("~/.cache/mmjax/matbench").expanduser())
    return dirs


def _fetch(url: str, dest: pathlib.Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` (via a temporary file in the same folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            shutil.copyfileobj(response, tmp)
    os.replace(tmp.name, dest)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_matbench(
    task: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    limit: int | None = None,
) -> ReadResult:
    """Read Matbench task ``task`` ("perovskites" or "matbench_perovskites") from matminer's file.

    Looks for ``<task>.json.gz`` in ``cache_dir`` (or in ``default_cache_dirs()``). When absent and
    ``download`` is true, fetches it from ``MATMINER_URL`` into ``cache_dir`` (or the last default
    folder), checks matminer's sha256 and reads it. Raises ``SourceError`` naming the folders
    searched and the URL when the file is absent and cannot be downloaded (e.g. no network).
    """
    name = task_name(task)
    dirs = [pathlib.Path(cache_dir).expanduser()] if cache_dir is not None else default_cache_dirs()
    filename = f"{name}.json.gz"
    for folder in dirs:
        if (folder / filename).is_file():
            return read_matbench(folder / filename, limit=limit)
    url = MATMINER_URL.format(name=name)
    where = ", ".join(str(d) for d in dirs)
    if not download:
        raise SourceError(filename, f"not found in [{where}] and download=False; get it from {url}")
    dest = dirs[-1] / filename
    try:
        _fetch(url, dest)
    except OSError as exc:  # URLError, timeouts, DNS failure are all OSErrors
        raise SourceError(
            filename,
            f"not found in [{where}] and downloading {url} failed ({exc}); the network may be "
            f"unavailable: download it elsewhere and place it in {dest.parent}",
        ) from exc
    expected = MATBENCH_TASKS[name][2]
    if _sha256(dest) != expected:
        dest.unlink()
        raise SourceError(filename, f"downloaded from {url} but its sha256 is not matminer's {expected}; removed")
    return read_matbench(dest, limit=limit)
