"""Writing stored datasets: chunk folders of ``.npy`` columns (`StoreWriter`), the manifest of a
run or shard (`finish_manifest`), and the merge of shard manifests (`merge_manifests`); the layout
is described in `mmjax.data.store`."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from mmjax.data import modalities as registry
from mmjax.data.material import RecordError
from mmjax.data.store import (DTYPES, MANIFEST, STRING_KEYS, Dataset, Manifest, column_entry, file_stem,
                              provenance)
from mmjax.data.store_statistics import column_moments, scaled, update_statistics


def coerce_value(record_id: str, key: str, value: Any, entry: dict | None) -> Any:
    """Record value cast to its declared dtype and checked against the schema entry."""
    if key in STRING_KEYS or isinstance(value, str):
        if not isinstance(value, str):
            raise RecordError(record_id, f"{key} must be a string, got {type(value).__name__}")
        return value
    arr = np.asarray(value)
    if key in DTYPES and arr.dtype != DTYPES[key]:
        if not np.can_cast(arr.dtype, DTYPES[key], casting="same_kind"):
            raise RecordError(record_id, f"{key} has dtype {arr.dtype}, expected {np.dtype(DTYPES[key])}")
        arr = arr.astype(DTYPES[key])
    if entry is not None:
        if entry["kind"] != "array":
            raise RecordError(record_id, f"{key} is an array but the dataset stores strings there")
        if np.dtype(entry["dtype"]) != arr.dtype:
            raise RecordError(record_id, f"{key} has dtype {arr.dtype}, dataset has {entry['dtype']}")
        expected = entry["shape"]
        got = [None, *arr.shape[1:]] if entry["ragged"] else list(arr.shape)
        if got != expected or arr.ndim != len(expected):
            raise RecordError(record_id, f"{key} has per-record shape {list(arr.shape)}, dataset has {expected}")
    return arr


def write_chunk(root: pathlib.Path, name: str, ids: Sequence[str], records: Sequence[dict], schema: dict) -> dict:
    """Write one chunk folder; returns its manifest entry. ``schema`` must cover every key used."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    n = len(records)
    np.save(folder / "ids.npy", np.asarray(list(ids), dtype=str) if n else np.zeros(0, "<U1"))
    moments = {}
    for key, entry in schema.items():
        stem = file_stem(key)
        present = np.array([key in r for r in records], dtype=bool)
        if not present.any():
            continue
        np.save(folder / f"{stem}.present.npy", present)
        if entry["kind"] == "string":
            (folder / f"{stem}.json").write_text(json.dumps([r.get(key) for r in records]))
            continue
        dtype = np.dtype(entry["dtype"])
        if entry["ragged"]:
            trailing = tuple(entry["shape"][1:])
            parts = [r[key] if key in r else np.zeros((0, *trailing), dtype) for r in records]
            lengths = np.array([len(p) for p in parts], dtype=np.int64)
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            values = np.concatenate(parts, axis=0) if parts else np.zeros((0, *trailing), dtype)
            np.save(folder / f"{stem}.values.npy", values.astype(dtype, copy=False))
            np.save(folder / f"{stem}.offsets.npy", offsets)
        else:
            shape = tuple(entry["shape"])
            out = np.zeros((n, *shape), dtype)
            for i, r in enumerate(records):
                if key in r:
                    out[i] = r[key]
            np.save(folder / f"{stem}.npy", out)
            if scaled(key):
                vals = out[present]
                mask_key = registry.scale_mask(key)
                if mask_key in schema:
                    mask = np.stack([r[mask_key] for r in records if key in r])
                    vals = vals[mask]
                moments[key] = column_moments(vals)
    return {"name": name, "num_records": n, "moments": moments}


class StoreWriter:
    """Buffers records and writes them as chunk folders of ``records_per_file`` records.

    Keys are fixed by the first record that has them (dtype and per-record shape); a later
    record that disagrees raises :class:`RecordError` from :meth:`add` (nothing is written for it).
    """

    def __init__(self, root: str | os.PathLike, shard_index: int = 0, records_per_file: int = 4096):
        if records_per_file < 1:
            raise ValueError("records_per_file must be >= 1")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_index = int(shard_index)
        self.records_per_file = int(records_per_file)
        self.schema: dict = {}
        self.files: list = []
        self.ids_seen: set = set()
        self._ids: list = []
        self._records: list = []

    def add(self, record_id: str, record: dict) -> None:
        record_id = str(record_id)
        if record_id in self.ids_seen:
            raise RecordError(record_id, "duplicate id")
        coerced, new_entries = {}, {}
        for key, value in record.items():
            file_stem(key)
            entry = self.schema.get(key)
            coerced[key] = coerce_value(record_id, key, value, entry)
            if entry is None:
                new_entries[key] = column_entry(key, coerced[key])
        self.schema.update(new_entries)
        self.ids_seen.add(record_id)
        self._ids.append(record_id)
        self._records.append(coerced)
        if len(self._records) >= self.records_per_file:
            self.flush()

    def flush(self) -> None:
        if not self._records:
            return
        name = f"s{self.shard_index:05d}-c{len(self.files):05d}"
        self.files.append(write_chunk(self.root, name, self._ids, self._records, self.schema))
        self._ids, self._records = [], []

    @property
    def num_records(self) -> int:
        return sum(f["num_records"] for f in self.files) + len(self._records)


def finish_manifest(root: str | os.PathLike, writer: StoreWriter, *, skipped: list, num_input: int,
                    warnings: list | None = None, shard_index: int = 0, num_shards: int = 1, grids: dict | None = None,
                    provenance_info: dict | None = None) -> Manifest:
    """Flush ``writer``, compute statistics, write the (shard) manifest file and return it."""
    writer.flush()
    root = pathlib.Path(root)
    m = Manifest(schema=dict(writer.schema), files=list(writer.files), skipped=list(skipped),
                 warnings=list(warnings or []),
                 counts={"input": int(num_input), "written": writer.num_records, "skipped": len(skipped)},
                 grids=dict(grids or {}), shard={"index": int(shard_index), "count": int(num_shards)},
                 provenance=dict(provenance_info or provenance()))
    update_statistics(Dataset(root, m))
    m.save(root / manifest_name(shard_index, num_shards))
    return m


def manifest_name(shard_index: int, num_shards: int) -> str:
    """``manifest.json`` for an unsharded run, else ``manifest-SSSSS-of-NNNNN.json``."""
    if num_shards == 1:
        return MANIFEST
    return f"manifest-{shard_index:05d}-of-{num_shards:05d}.json"


def merge_manifests(root: str | os.PathLike) -> Manifest:
    """Join the shard manifests in ``root`` (written by ``featurize_dataset(..., num_shards=k)``)
    into ``manifest.json``, in shard order, with statistics recomputed over all records.

    Raises if a shard is missing, the shards disagree on the spec or a column's dtype/shape,
    or an id occurs in two shards.
    """
    root = pathlib.Path(root)
    paths = sorted(root.glob("manifest-*-of-*.json"))
    if not paths:
        raise FileNotFoundError(f"no shard manifests (manifest-*-of-*.json) in {root}")
    shards = [Manifest.load(p) for p in paths]
    count = shards[0].shard["count"]
    got = sorted(s.shard["index"] for s in shards)
    if any(s.shard["count"] != count for s in shards) or got != list(range(count)):
        missing = sorted(set(range(count)) - set(got))
        raise ValueError(f"shard manifests in {root} are incomplete or mixed: expected {count} shards, "
                         f"missing {missing}, found {[p.name for p in paths]}")
    shards.sort(key=lambda s: s.shard["index"])
    spec = shards[0].provenance.get("spec")
    schema: dict = {}
    for s in shards:
        if s.provenance.get("spec") != spec:
            raise ValueError(f"shard {s.shard['index']} was featurised with a different spec")
        for key, entry in s.schema.items():
            if key in schema and schema[key] != entry:
                raise ValueError(f"shards disagree on column {key!r}: {schema[key]} vs {entry}")
            schema[key] = entry
    merged = Manifest(
        schema=schema, files=[f for s in shards for f in s.files], skipped=[r for s in shards for r in s.skipped],
        warnings=[r for s in shards for r in s.warnings],
        counts={k: sum(s.counts.get(k, 0) for s in shards) for k in ("input", "written", "skipped")},
        grids=shards[0].grids, shard={"index": 0, "count": 1},
        provenance={**shards[0].provenance, "merged_from": [p.name for p in paths],
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    )
    update_statistics(Dataset(root, merged))
    ids = Dataset(root, merged).ids
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"ids occur in more than one shard: {uniq[counts > 1][:5].tolist()}")
    merged.save(root / MANIFEST)
    return merged
