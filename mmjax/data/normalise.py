"""Target normalisation: one definition shared by training, evaluation and prediction.

A regression target is batched as ``(y - mean) / std`` on its labelled slots (0, mask False,
elsewhere; per component for a vector target). (mean, std) always come from one *table* in the
form of a trained model's ``targets.json``::

    {name: {"kind": "regression", "mean": m, "std": s[, "shape": [d]]} | {"kind": "class"[, "offset": k]}}

(m, s floats, or lists of d for a vector target). The table is made from

* a dataset's manifest statistics, `table_from_manifest` (the training data of ``mmjax.main``);
* label values, ``regression_entry(*moments(values))`` (the training rows of a benchmark fit, a
  subset whose statistics the manifest does not hold);
* a trained model's ``targets.json`` (predict / evaluate ``--input``: new labels in the model's units).

`mmjax.data.pipeline.BatchAssembler` applies it (`normalise`); nothing else normalises targets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def moments(values: np.ndarray, what: str = "training rows") -> tuple[float, float]:
    """(mean, std) of the finite entries of ``values`` (population std; 1 when it is 0)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError(f"no finite target values among the {what}")
    std = float(v.std())
    return float(v.mean()), (std if std > 0 else 1.0)


def regression_entry(mean, std, shape: Sequence[int] = ()) -> dict:
    """A regression target's table entry; scalars broadcast to ``shape`` (a vector target)."""
    shape = tuple(shape)
    if not shape:
        return {"kind": "regression", "mean": float(mean), "std": float(std)}
    return {"kind": "regression", "mean": np.broadcast_to(np.asarray(mean, np.float64), shape).tolist(),
            "std": np.broadcast_to(np.asarray(std, np.float64), shape).tolist(), "shape": list(shape)}


def target_moments(stats: dict, shape: tuple = ()) -> tuple[float | np.ndarray, float | np.ndarray]:
    """(mean, std) a regression target is normalised with, from a table entry or a manifest's
    statistics: floats for a scalar target, float32 ``shape`` arrays (per component) for a vector
    target; a zero or missing std is 1."""
    mean = np.asarray(stats.get("mean", 0.0), np.float64)
    std = np.asarray(stats.get("std", 1.0), np.float64)
    std = np.where(std > 0, std, 1.0)
    if not shape:
        return float(mean), float(std)
    return (np.broadcast_to(mean, shape).astype(np.float32), np.broadcast_to(std, shape).astype(np.float32))


def table_from_manifest(manifest, names: Sequence[str], normalize: bool) -> dict[str, dict]:
    """The table of the targets ``names`` of a stored dataset: its manifest statistics when
    ``normalize`` (mean 0, std 1 otherwise). Raises naming the target when one is not stored, or
    when ``normalize`` and a regression target has no labelled record."""
    schema, stats = manifest.schema, manifest.statistics.get("targets", {})
    table = {}
    for name in names:
        if f"target/{name}" in schema:
            shape = tuple(schema[f"target/{name}"]["shape"])
            st = stats.get(name, {})
            if normalize and not np.sum(st.get("count", 0)):
                raise ValueError(f"target {name!r} has no labelled records to normalise with")
            table[name] = regression_entry(*(target_moments(st, shape) if normalize else (0.0, 1.0)), shape)
        elif f"label/{name}" in schema:
            table[name] = {"kind": "class"}
        else:
            have = [k.split("/", 1)[1] for k in schema if k.startswith(("target/", "label/"))]
            raise ValueError(f"unknown target {name!r}; the dataset has {have}")
    return table


def normalise(values: np.ndarray, ok: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(values - mean) / std`` where labelled and finite, 0 elsewhere; the mask narrowed
    to the finite entries."""
    ok = ok & np.isfinite(values)
    return np.where(ok, (values - mean) / std, 0.0).astype(np.float32), ok
