"""Generic early-stopping driver for fine-tuning and trained probes (E1).

Systems plug in two callables: ``train_epoch(state, epoch) -> (state, metrics)`` runs one epoch
(or any fixed number of steps) and ``evaluate(state) -> dict`` scores the validation split.
The driver keeps a host copy of the best state (so donated device buffers cannot invalidate
it), stops after ``patience`` epochs without improvement and returns the best state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass
class EarlyStoppingResult:
    """state: the best state (leaves restored to jax arrays); best_epoch: 0-based epoch of the
    best validation value; best_value: that value; history: one dict per epoch with
    "epoch", the train metrics (prefixed "train/") and the validation metrics ("val/")."""

    state: Any
    best_epoch: int
    best_value: float
    history: list[dict]
    stopped_early: bool


def _host_copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True) if hasattr(x, "shape") else x, tree)


def _restore(tree):
    return jax.tree.map(lambda x: jax.numpy.asarray(x) if isinstance(x, np.ndarray) else x, tree)


def fit_with_early_stopping(
    state: Any,
    train_epoch: Callable[[Any, int], tuple[Any, dict]],
    evaluate: Callable[[Any], dict],
    *,
    monitor: str,
    mode: str = "min",
    patience: int = 10,
    max_epochs: int = 100,
    min_delta: float = 0.0,
    on_epoch: Callable[[dict], None] | None = None,
) -> EarlyStoppingResult:
    """Train until ``monitor`` (a key of ``evaluate``'s dict) stops improving.

    An epoch improves when value < best - min_delta (mode "min") or value > best + min_delta
    (mode "max"). Non-finite validation values never improve. The state evaluated before any
    training is not a candidate: the best state is always a trained one (epoch >= 0).
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if patience < 1 or max_epochs < 1:
        raise ValueError(f"patience and max_epochs must be >= 1, got {patience}, {max_epochs}")
    sign = 1.0 if mode == "min" else -1.0
    best_score, best_epoch, best_state = math.inf, -1, None
    history: list[dict] = []
    since_best = 0
    for epoch in range(max_epochs):
        state, train_metrics = train_epoch(state, epoch)
        val = evaluate(state)
        if monitor not in val:
            raise KeyError(f"evaluate() returned no {monitor!r}; keys: {sorted(val)}")
        row = {"epoch": epoch, **{f"train/{k}": float(v) for k, v in (train_metrics or {}).items()}}
        row.update({f"val/{k}": float(v) for k, v in val.items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        value = float(val[monitor])
        score = sign * value
        if math.isfinite(score) and score < best_score - min_delta:
            best_score, best_epoch, best_state = score, epoch, _host_copy(state)
            since_best = 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    stopped_early = len(history) < max_epochs
    if best_state is None:
        raise FloatingPointError(f"validation {monitor!r} was never finite in {len(history)} epochs")
    return EarlyStoppingResult(_restore(best_state), best_epoch, sign * best_score, history, stopped_early)
