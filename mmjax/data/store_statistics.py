"""Statistics of a stored dataset, always recomputed from its chunk files (so a merge of shards
gives the unsharded result): availability per key and modality, target / label / scale
statistics, padding statistics (graph and composition sizes with percentiles)."""

from __future__ import annotations

import numpy as np

from mmjax.data import modalities as registry


def scaled(key: str) -> bool:
    """Whether the store records the value moments (count, sum, sum of squares, min, max, per chunk)
    of float record ``key``: the ``scale_keys`` a modality declares (`mmjax.data.modalities`)."""
    return key in registry.scale_keys()


def modality_of(key: str) -> str:
    """Modality name (a ``Batch["present"]`` key, or 'target'/'label'/'text_raw') of a record key."""
    for name, record_key in registry.dense_keys().items():
        if key == record_key:
            return name
    if key.startswith("text/"):
        return "text_raw"
    return key.split("/", 1)[0]


def column_moments(values: np.ndarray) -> dict:
    v = values.astype(np.float64, copy=False)
    if v.size == 0:
        return {"count": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None}
    return {"count": int(v.size), "sum": float(v.sum()), "sumsq": float(np.square(v).sum()),
            "min": float(v.min()), "max": float(v.max())}


def summary(values: np.ndarray) -> dict:
    v = values.astype(np.float64)
    if v.size == 0:
        return {"count": 0}
    mean = float(v.mean())
    return {"count": int(v.size), "mean": mean, "std": float(v.std()), "mad": float(np.abs(v - mean).mean()),
            "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def component_summary(values: np.ndarray) -> dict:
    """`summary` of each column of ``values`` [n, d] over its finite entries: the same keys, each
    a list of d numbers (a component without labels: count 0, mean 0, std 1)."""
    parts = [summary(col[np.isfinite(col)]) for col in values.T]
    fill = {"mean": 0.0, "std": 1.0, "mad": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {k: [p.get(k, fill.get(k, 0)) for p in parts] for k in ("count", *fill)}


def update_statistics(ds) -> None:
    """Recompute availability, target/label/scale statistics and padding statistics of
    ``ds.manifest`` in place, from the columns of ``ds`` (a whole `mmjax.data.store.Dataset`)."""
    manifest = ds.manifest
    schema = manifest.schema
    ids = ds.ids
    avail: dict = {}
    targets, labels, scales = {}, {}, {}
    for key, entry in schema.items():
        if key.startswith(("target/", "label/")):
            present, values = ds.column(key)
        else:
            present, values = ds.present(key), None
        avail[key] = int(present.sum())
        if key.startswith("target/"):
            v = np.asarray(values, np.float64)[present]
            targets[key.split("/", 1)[1]] = (summary(v[np.isfinite(v)]) if v.ndim == 1 else
                                             component_summary(v.reshape(len(v), -1)))
        elif key.startswith("label/"):
            v = np.asarray(values)[present]
            size = 231 if key == "label/space_group" else int(v.max(initial=0)) + 1
            labels[key.split("/", 1)[1]] = {"count": int(v.size), "histogram": np.bincount(v, minlength=size).tolist()}
    for key in registry.scale_keys():
        parts = [f.get("moments", {}).get(key) for f in manifest.files]
        parts = [p for p in parts if p and p["count"]]
        if parts:
            count = sum(p["count"] for p in parts)
            mean = sum(p["sum"] for p in parts) / count
            var = max(sum(p["sumsq"] for p in parts) / count - mean * mean, 0.0)
            scales[key] = {"count": count, "mean": mean, "std": var ** 0.5,
                           "min": min(p["min"] for p in parts), "max": max(p["max"] for p in parts)}
    by_modality: dict = {}
    for key, count in avail.items():
        mod = modality_of(key)
        if mod in ("target", "label"):
            continue
        by_modality[mod] = max(by_modality.get(mod, 0), count)
    avail.update(by_modality)
    padding = {}
    for name in registry.known():
        modality = registry.get(name)
        if modality.presence_key in schema:
            padding.update(modality.padding(ds, ids))
    manifest.availability = avail
    manifest.statistics = {"targets": targets, "labels": labels, "scales": scales}
    manifest.padding = padding
    manifest.num_records = len(ds)
