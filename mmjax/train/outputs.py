"""Outputs of a system method over a finite iterator, padding removed (predict, embed, health)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from mmjax.train import mesh as mesh_lib
from mmjax.train.step import make_apply_fn


def collect_outputs(method: Callable, params, params_shardings, mesh, iterator, *,
                    with_targets: bool = False) -> dict[str, np.ndarray]:
    """``method(params, batch)`` over a finite iterator; padding slots removed, rows in batch order.

    Returns ``{output name: [n, ...]}`` plus ``ids`` (unicode [n], from ``iterator.last_ids()``
    when it has them, else running numbers) and, with `with_targets`, ``target/<name>`` and
    ``target_mask/<name>`` ([n], or [n, d] for a vector target) of the batches.
    """
    apply = make_apply_fn(method, params_shardings, mesh)
    chunks: dict[str, list] = {}
    ids: list = []
    seen = 0
    for host_batch in iterator:
        batch = mesh_lib.host_to_global(host_batch, mesh)
        out = dict(apply(params, batch))
        out["slot_valid"] = batch["slot_valid"].reshape(-1)
        if with_targets:
            for name, t in batch.get("targets", {}).items():
                out[f"target/{name}"] = t.reshape(-1, *t.shape[2:])  # [n] ([n, d] for a vector target)
                m = batch["target_mask"][name]
                out[f"target_mask/{name}"] = m.reshape(-1, *m.shape[2:])
        if jax.process_count() > 1:
            out = multihost_utils.process_allgather(out, tiled=True)
        out = {k: np.asarray(v) for k, v in jax.device_get(out).items()}
        n = out["slot_valid"].shape[0]
        if hasattr(iterator, "last_ids"):
            ids.append(iterator.last_ids().reshape(-1))
        else:
            ids.append(np.array([str(seen + i) for i in range(n)]))
        seen += n
        for k, v in out.items():
            chunks.setdefault(k, []).append(v)
    if not chunks:
        raise ValueError("the split yielded no batches")
    valid = np.concatenate(chunks.pop("slot_valid")).astype(bool)
    result = {k: np.concatenate(v)[valid] for k, v in chunks.items()}
    result["ids"] = np.concatenate(ids)[valid].astype(str)
    return result
