"""Source readers: files of many formats -> ``Material`` records (SPEC D1).

Every reader returns a ``ReadResult(materials, errors)``: the records it could read, and one
``RecordError`` (naming the record and the reason) per record it could not. Whole-file problems
(missing, empty, wrong layout, absent column) raise ``SourceError`` naming the file.

``SOURCES`` maps a source name to its reader; ``read_source`` dispatches on a name or a path.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

from mmjax.data.sources.alexandria import read_alexandria
from mmjax.data.sources.cif import read_structure_file, read_structure_folder, structure_file_format
from mmjax.data.sources.compressed import base_suffix, open_text
from mmjax.data.sources.csv import read_csv
from mmjax.data.sources.matbench import MATBENCH_TASKS, load_matbench, matbench_mbid, read_matbench
from mmjax.data.sources.mp import parse_charge_density, parse_dos, read_mp_json
from mmjax.data.sources.poscar_json import read_poscar_json
from mmjax.data.sources.prototypes import generate_prototypes
from mmjax.data.sources.result import ReadResult, SourceError
from mmjax.data.sources.structure_text import detect_format, parse_structure


def read_prototypes(n: int = 3000, seed: int = 0, **kwargs: Any) -> ReadResult:
    """The embedded default dataset: ``prototypes.generate_prototypes(n, seed)``."""
    return ReadResult(list(generate_prototypes(n=n, seed=seed, **kwargs)), [])


SOURCES: dict[str, Callable[..., ReadResult]] = {
    "cif": read_structure_folder,  # folder (or single file) of CIF / POSCAR / *.vasp
    "csv": read_csv,  # CSV with id + CIF/POSCAR column
    "poscar_json": read_poscar_json,  # {id: {"poscar": ..., ...}} (CDVAE sets, JARVIS samples)
    "matbench": read_matbench,  # a Matbench file (matminer json.gz or label json.bz2)
    "matbench_task": load_matbench,  # a Matbench task by name, from the cache (or download)
    "mp": read_mp_json,  # Materials Project documents
    "alexandria": read_alexandria,  # Alexandria ComputedStructureEntry dumps
    "prototypes": read_prototypes,  # embedded offline default dataset
}

_SNIFF_CHARS = 1 << 16


def detect_source(path: str | os.PathLike) -> str:
    """Name of the reader for ``path``, from its type, name and (for JSON) its first 64 KiB.

    folder or *.cif / *.vasp / POSCAR* -> "cif"; *.csv -> "csv"; JSON: a ``matbench_*`` name or
    ``"columns"``/``"mbid"`` keys -> "matbench", ``"entries"`` -> "alexandria", ``"poscar"`` ->
    "poscar_json", ``"material_id"`` / ``"structure"`` -> "mp". Raises ``SourceError`` otherwise.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        return "cif"
    if not p.is_file():
        raise SourceError(path, "no such file or folder")
    if structure_file_format(p) is not None:
        return "cif"
    suffix = base_suffix(p)
    if suffix == ".csv":
        return "csv"
    if suffix in (".json", ".jsonl", ".ndjson"):
        if p.name.startswith("matbench_"):
            return "matbench"
        with open_text(p) as fh:
            head = fh.read(_SNIFF_CHARS)
        if '"entries"' in head:
            return "alexandria"
        if '"columns"' in head or head.lstrip().startswith('{"mbid"'):
            return "matbench"
        if '"poscar"' in head:
            return "poscar_json"
        if '"material_id"' in head or '"structure"' in head:
            return "mp"
        raise SourceError(path, "JSON layout not recognised (pass the source name, e.g. read_source('mp', path))")
    raise SourceError(path, f"unknown file type {suffix!r}; known sources: {sorted(SOURCES)}")


def read_source(name_or_path: str | os.PathLike, path: str | os.PathLike | None = None, **kwargs: Any) -> ReadResult:
    """Read a source by name or by path.

    ``read_source("csv", "x.csv.gz", targets=[...])``: the named reader on ``path``;
    ``read_source("prototypes", n=100)``: a reader that takes no path;
    ``read_source("matbench_perovskites")``: ``load_matbench`` for that task;
    ``read_source("data/x.csv.gz")``: the reader chosen by ``detect_source``.
    Keyword arguments go to the reader. Always returns a ``ReadResult``.
    """
    key = str(name_or_path)
    if key in SOURCES:
        reader = SOURCES[key]
        result = reader(path, **kwargs) if path is not None else reader(**kwargs)
    elif key in MATBENCH_TASKS and path is None and not os.path.exists(key):
        result = load_matbench(key, **kwargs)
    else:
        if path is not None:
            raise ValueError(f"unknown source name {key!r}; known: {sorted(SOURCES)}")
        result = SOURCES[detect_source(key)](key, **kwargs)
    if not isinstance(result, ReadResult):
        result = ReadResult(list(result), [])
    return result


__all__ = [
    "SOURCES",
    "MATBENCH_TASKS",
    "ReadResult",
    "SourceError",
    "detect_format",
    "detect_source",
    "load_matbench",
    "matbench_mbid",
    "parse_charge_density",
    "parse_dos",
    "parse_structure",
    "read_alexandria",
    "read_csv",
    "read_matbench",
    "read_mp_json",
    "read_poscar_json",
    "read_prototypes",
    "read_source",
    "read_structure_file",
    "read_structure_folder",
]
