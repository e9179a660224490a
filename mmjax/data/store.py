"""Featurised datasets on disk: chunk folders of raw ``.npy`` columns plus one ``manifest.json``.

Layout of a dataset folder (nothing in it can execute code when read: every array is loaded with
``np.load(..., allow_pickle=False)``, strings are fixed-width unicode arrays or JSON)::

    manifest.json                      schema, counts, statistics, skipped records, provenance
    s00000-c00000/                     chunk 0 of shard 0 (``records_per_file`` records)
        ids.npy                        <U..  [n]          material ids
        xrd.npy                        float32 [n, L]     fixed-shape column (absent rows are 0)
        xrd.present.npy                bool [n]           record has the key
        crystal.senders.values.npy     int32 [sum E]      ragged column: concatenated values
        crystal.senders.offsets.npy    int64 [n + 1]      record i = values[off[i]:off[i+1]]
        crystal.senders.present.npy    bool [n]
        text.raw.json                  [str | null] * n   string column
    s00000-c00001/ ...

Column names are the record keys of :mod:`mmjax.data.schema` with ``/`` written as ``.``.
Columns whose leading dimension varies per material (``crystal/*``, ``composition/*``) are
ragged; every other array column has one fixed per-record shape. A chunk that lacks a column
file means the column is absent for all its records.

Sharded featurisation (``num_shards > 1``) writes ``manifest-SSSSS-of-NNNNN.json`` per shard
into the same folder; `mmjax.data.store_writer.merge_manifests` joins them into ``manifest.json``.
This module reads datasets (`Manifest`, `Dataset`); `mmjax.data.store_writer` writes them and
`mmjax.data.store_statistics` computes the manifest's statistics.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import sys
from typing import Any, Iterable, Sequence

import numpy as np

import mmjax

from mmjax.data import modalities as registry
from mmjax.data.material import RecordError
from mmjax.data.store_statistics import column_moments, scaled, update_statistics


FORMAT_VERSION = 1


MANIFEST = "manifest.json"


RAGGED_PREFIXES = tuple(f"{m.name}/" for m in registry.BUILTIN.values() if m.ragged)

# Declared dtypes of the record keys in mmjax.data.schema (each modality's ``record_dtypes``, and the
# symmetry labels); other keys keep their own dtype.
DTYPES = {**{k: v for m in registry.BUILTIN.values() for k, v in m.record_dtypes.items()},
          "label/space_group": np.int32, "label/crystal_system": np.int32}


STRING_KEYS = ("text/raw", "text/source")


KEY_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)*$")


def file_stem(key: str) -> str:
    if not KEY_RE.match(key):
        raise ValueError(f"invalid record key {key!r}: use lower-case words joined by '/'")
    return key.replace("/", ".")


def is_ragged(key: str) -> bool:
    return key.startswith(RAGGED_PREFIXES)


def load_npy(path: pathlib.Path) -> np.ndarray:
    """Memory-mapped, pickle-free load, returned as a plain ndarray view (fast slicing)."""
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclasses.dataclass
class Manifest:
    """Everything known about a stored dataset, saved as JSON.

    schema: key -> {"kind": "array"|"string", "dtype": str, "shape": per-record shape with
        ``None`` for the ragged leading dimension, "ragged": bool}.
    files: chunk folders in dataset order, each {"name", "num_records", "moments": {key: {...}}}.
    availability: record key or modality -> number of records that have it.
    statistics: {"targets": {name: {count, mean, std, mad, median, min, max}} over finite labels
        (for a vector target each value is a list, one per component),
        "labels": {name: {count, histogram}}, "scales": {key: {count, mean, std, min, max}}}.
    padding: {"crystal/nodes"|"crystal/edges"|"composition/elements": {count, mean, max, max_id,
        percentiles: {"90.0": value, ...}}} per material.
    counts: {"input", "written", "skipped"}; skipped: [{"id", "reason"}]; warnings: [{"id",
        "warning"}] of records written with a caveat (e.g. isolated atoms).
    grids: fixed grids shared by all records (e.g. "dos/energies", eV, Fermi-shifted).
    shard: {"index", "count"}; provenance: sources, spec, created, mmjax version, command.
    """

    num_records: int = 0
    schema: dict = dataclasses.field(default_factory=dict)
    files: list = dataclasses.field(default_factory=list)
    availability: dict = dataclasses.field(default_factory=dict)
    statistics: dict = dataclasses.field(default_factory=dict)
    padding: dict = dataclasses.field(default_factory=dict)
    counts: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    grids: dict = dataclasses.field(default_factory=dict)
    shard: dict = dataclasses.field(default_factory=lambda: {"index": 0, "count": 1})
    provenance: dict = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"manifest has unknown fields {sorted(unknown)}")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(f"manifest format {data['format_version']} is newer than this mmjax reads")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(pathlib.Path(path), json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        return cls.from_dict(json.loads(pathlib.Path(path).read_text()))

    @property
    def target_names(self) -> list[str]:
        return sorted(k.split("/", 1)[1] for k in self.schema if k.startswith("target/"))


def provenance(spec: Any = None, sources: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Provenance block: sources, spec (a dict), UTC creation time, versions, command line."""
    version = getattr(mmjax, "__version__", None)
    if version is None:  # e.g. imported as a namespace package through an editable install
        try:
            version = importlib.metadata.version("mmjax")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return {
        "sources": list(sources or []),
        "spec": spec,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mmjax_version": version,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "command": command if command is not None else " ".join(sys.argv),
    }


def column_entry(key: str, value: Any) -> dict:
    if key in STRING_KEYS or isinstance(value, str):
        return {"kind": "string", "dtype": "str", "shape": [], "ragged": False}
    arr = np.asarray(value)
    ragged = is_ragged(key)
    if ragged and arr.ndim == 0:
        raise ValueError(f"ragged column {key!r} needs at least one dimension")
    shape = [None, *arr.shape[1:]] if ragged else list(arr.shape)
    return {"kind": "array", "dtype": arr.dtype.str if arr.dtype.kind != "b" else "bool", "shape": shape,
            "ragged": ragged}


class _Chunk:
    """Lazily opened columns of one chunk folder."""

    def __init__(self, folder: pathlib.Path, schema: dict, num_records: int):
        self.folder = folder
        self.schema = schema
        self.n = num_records
        self._cols: dict = {}

    def column(self, key: str):
        """(present bool [n], data) where data is an array, (values, offsets) or a list of str."""
        if key not in self._cols:
            stem = file_stem(key)
            entry = self.schema[key]
            ppath = self.folder / f"{stem}.present.npy"
            if not ppath.exists():
                self._cols[key] = None
            else:
                present = load_npy(ppath)
                if entry["kind"] == "string":
                    data = json.loads((self.folder / f"{stem}.json").read_text())
                elif entry["ragged"]:
                    data = (load_npy(self.folder / f"{stem}.values.npy"),
                            np.asarray(load_npy(self.folder / f"{stem}.offsets.npy")))
                else:
                    data = load_npy(self.folder / f"{stem}.npy")
                self._cols[key] = (present, data)
        return self._cols[key]

    def ids(self) -> np.ndarray:
        return np.load(self.folder / "ids.npy", allow_pickle=False)

    def record(self, i: int, keys: Iterable[str]) -> dict:
        out = {}
        for key in keys:
            col = self.column(key)
            if col is None or not col[0][i]:
                continue
            data = col[1]
            if isinstance(data, tuple):
                values, offsets = data
                out[key] = values[offsets[i]:offsets[i + 1]]
            else:
                out[key] = data[i]
        return out


class Dataset:
    """Random access to a stored dataset: ``len(ds)``, ``ds[i] -> record dict``, ``ds.ids``.

    Records are the flat dicts of :mod:`mmjax.data.schema` (read-only numpy views into
    memory-mapped files; copy before writing) plus string keys ("text/raw", "text/source").
    A ``Dataset`` is a valid ``grain.MapDataset.source(...)`` (it has ``__len__`` and
    ``__getitem__``). ``subset(indices)`` gives a view over some records in the given order.
    """

    def __init__(self, root: pathlib.Path, manifest: Manifest, index: np.ndarray | None = None):
        self.root = pathlib.Path(root)
        self.manifest = manifest
        self._index = None if index is None else np.asarray(index, np.int64)
        self._open_chunks()

    def _open_chunks(self) -> None:
        m = self.manifest
        self._chunks = [_Chunk(self.root / f["name"], m.schema, f["num_records"]) for f in m.files]
        self._starts = np.zeros(len(self._chunks) + 1, np.int64)
        np.cumsum([f["num_records"] for f in m.files], out=self._starts[1:])
        self._keys = tuple(m.schema)
        self._ids = None
        self._sizes = None

    def __getstate__(self) -> dict:
        # pickled for grain worker processes: send the path and manifest, never mapped data
        return {"root": str(self.root), "manifest": self.manifest.to_dict(), "index": self._index}

    def __setstate__(self, state: dict) -> None:
        self.__init__(pathlib.Path(state["root"]), Manifest.from_dict(state["manifest"]), state["index"])

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Dataset":
        root = pathlib.Path(root)
        path = root / MANIFEST
        if not path.exists():
            shards = sorted(root.glob("manifest-*-of-*.json"))
            hint = f" ({len(shards)} shard manifests found: run merge_manifests({str(root)!r}))" if shards else ""
            raise FileNotFoundError(f"no {MANIFEST} in {root}{hint}")
        return cls(root, Manifest.load(path))

    # -- size and ids --------------------------------------------------------------------------
    @property
    def num_base_records(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_base_records if self._index is None else len(self._index)

    @property
    def ids(self) -> np.ndarray:
        """Material ids, unicode array [len(self)]."""
        if self._ids is None:
            parts = [c.ids() for c in self._chunks]
            self._ids = np.concatenate(parts) if parts else np.zeros(0, "<U1")
        return self._ids if self._index is None else self._ids[self._index]

    @property
    def keys(self) -> tuple[str, ...]:
        return self._keys

    def _base(self, i) -> int:
        i = int(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for dataset of {n} records")
        i %= n
        return i if self._index is None else int(self._index[i])

    def _locate(self, base: int) -> tuple[_Chunk, int]:
        c = int(np.searchsorted(self._starts, base, side="right")) - 1
        return self._chunks[c], base - int(self._starts[c])

    def __getitem__(self, i) -> dict:
        chunk, local = self._locate(self._base(i))
        return chunk.record(local, self._keys)

    def record(self, i, keys: Iterable[str] | None = None) -> dict:
        """Record ``i`` restricted to ``keys`` (all keys by default)."""
        chunk, local = self._locate(self._base(i))
        return chunk.record(local, self._keys if keys is None else [k for k in keys if k in self.manifest.schema])

    def subset_base(self) -> "Dataset":
        """The whole dataset this view was taken from."""
        return Dataset(self.root, self.manifest)

    def subset(self, indices) -> "Dataset":
        """View over ``indices`` (positions in this dataset, in that order)."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"subset indices out of range for dataset of {n} records")
        indices = indices % max(n, 1)
        base = indices if self._index is None else self._index[indices]
        view = Dataset.__new__(Dataset)
        view.__dict__.update(self.__dict__)
        view._index = base
        return view

    # -- whole columns -------------------------------------------------------------------------
    def column(self, key: str) -> tuple[np.ndarray, Any]:
        """(present bool [len], values) of a fixed-shape array column ([len, *shape], 0 where absent)
        or a string column (list, None where absent)."""
        entry = self.manifest.schema.get(key)
        if entry is None:
            raise KeyError(f"dataset has no column {key!r}; columns: {sorted(self.manifest.schema)}")
        if entry["kind"] == "array" and entry["ragged"]:
            raise ValueError(f"{key!r} is ragged; read it per record")
        presents, values = [], []
        for chunk in self._chunks:
            col = chunk.column(key)
            if col is None:
                presents.append(np.zeros(chunk.n, bool))
                values.append([None] * chunk.n if entry["kind"] == "string"
                              else np.zeros((chunk.n, *entry["shape"]), np.dtype(entry["dtype"])))
            else:
                presents.append(np.asarray(col[0]))
                values.append(col[1] if entry["kind"] == "string" else np.asarray(col[1]))
        present = np.concatenate(presents) if presents else np.zeros(0, bool)
        if entry["kind"] == "string":
            flat = [v for part in values for v in part]
            return (present, flat) if self._index is None else (present[self._index], [flat[j] for j in self._index])
        data = np.concatenate(values) if values else np.zeros((0, *entry["shape"]), np.dtype(entry["dtype"]))
        return (present, data) if self._index is None else (present[self._index], data[self._index])

    def present(self, key: str) -> np.ndarray:
        """bool [len]: which records have ``key``."""
        parts = [np.zeros(c.n, bool) if c.column(key) is None else np.asarray(c.column(key)[0]) for c in self._chunks]
        present = np.concatenate(parts) if parts else np.zeros(0, bool)
        return present if self._index is None else present[self._index]

    def ragged_lengths(self, key: str) -> np.ndarray:
        """Per-record leading length of a ragged column, int64 [len] (0 where absent)."""
        parts = []
        for chunk in self._chunks:
            col = chunk.column(key)
            parts.append(np.zeros(chunk.n, np.int64) if col is None else np.diff(col[1][1]))
        lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return lengths if self._index is None else lengths[self._index]

    def graph_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """(nodes int64 [len], edges int64 [len]) of each material's crystal graph (0 if absent)."""
        if self._sizes is None:
            base = self if self._index is None else self.subset_base()
            self._sizes = tuple(base.ragged_lengths(k) if k in self.manifest.schema
                                else np.zeros(self.num_base_records, np.int64)
                                for k in registry.GRAPH.size_keys)
        nodes, edges = self._sizes
        return (nodes, edges) if self._index is None else (nodes[self._index], edges[self._index])

    # -- adding a column in place --------------------------------------------------------------
    def add_column(self, name: str, values, present=None, overwrite: bool = False) -> None:
        """Add a per-record column (e.g. "text_embedding" float32 [N, D]) to the dataset in place.

        values: array [N, *shape] in dataset order (N = len(self)), a sequence of N per-record
            arrays / ``None`` (absent), or a sequence of N strings / ``None``.
        present: optional bool [N]; False rows are stored as absent.
        Updates the manifest (schema, availability, scale statistics) and rewrites it.
        """
        if self._index is not None:
            raise ValueError("add_column works on the whole dataset, not on a subset view")
        file_stem(name)
        if is_ragged(name):
            raise ValueError(f"add_column stores fixed-shape columns; {name!r} is a ragged key")
        n = len(self)
        if len(values) != n:
            raise ValueError(f"add_column({name!r}): got {len(values)} values for {n} records")
        if name in self.manifest.schema and not overwrite:
            raise ValueError(f"column {name!r} exists; pass overwrite=True to replace it")
        pres = np.ones(n, bool) if present is None else np.asarray(present, bool).copy()
        if pres.shape != (n,):
            raise ValueError(f"present must have shape ({n},)")
        is_string = name in STRING_KEYS or any(isinstance(v, str) for v in values)
        ids = self.ids
        if is_string:
            rows = [v if p else None for v, p in zip(values, pres)]
            for i, v in enumerate(rows):
                if v is not None and not isinstance(v, str):
                    raise RecordError(ids[i], f"{name} must be a string, got {type(v).__name__}")
            pres &= np.array([v is not None for v in rows], bool)
            entry = {"kind": "string", "dtype": "str", "shape": [], "ragged": False}
        else:
            if isinstance(values, np.ndarray):
                arr = values
            else:
                pres &= np.array([v is not None for v in values], bool)
                first = next((np.asarray(v) for v, p in zip(values, pres) if p), None)
                if first is None:
                    raise ValueError(f"add_column({name!r}): no record has a value")
                arr = np.zeros((n, *first.shape), first.dtype)
                for i, v in enumerate(values):
                    if pres[i]:
                        v = np.asarray(v)
                        if v.shape != first.shape:
                            raise RecordError(ids[i], f"{name} has shape {v.shape}, others {first.shape}")
                        arr[i] = v
            if name in DTYPES and arr.dtype != DTYPES[name]:
                if not np.can_cast(arr.dtype, DTYPES[name], casting="same_kind"):
                    raise ValueError(f"add_column({name!r}): dtype {arr.dtype}, expected {np.dtype(DTYPES[name])}")
                arr = arr.astype(DTYPES[name])
            entry = column_entry(name, arr[0] if n else arr)
        stem = file_stem(name)
        moments = None
        for f, chunk, lo, hi in zip(self.manifest.files, self._chunks, self._starts[:-1], self._starts[1:]):
            p = pres[lo:hi]
            for old in chunk.folder.glob(f"{stem}.*"):
                old.unlink()
            if p.any():
                np.save(chunk.folder / f"{stem}.present.npy", p)
                if is_string:
                    (chunk.folder / f"{stem}.json").write_text(json.dumps(rows[lo:hi]))
                else:
                    block = np.where(p.reshape(-1, *[1] * (arr.ndim - 1)), arr[lo:hi], 0).astype(arr.dtype)
                    np.save(chunk.folder / f"{stem}.npy", block)
                    if scaled(name):
                        moments = column_moments(block[p])
            f.setdefault("moments", {}).pop(name, None)
            if moments is not None:
                f["moments"][name] = moments
                moments = None
        self.manifest.schema[name] = entry
        update_statistics(Dataset(self.root, self.manifest))
        self.manifest.save(self.root / MANIFEST)
        self._open_chunks()
