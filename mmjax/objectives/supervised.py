"""Supervised losses with label masks and uniform task sampling for multi-target training (O8).

Shapes: predictions ``[B]`` (regression) or logits ``[B, K]`` (classification), labels ``[B]``
(float or int), ``mask`` bool ``[B]`` (True where the label exists; combine with ``slot_valid``).
A vector regression target (e.g. the 21 independent components of an elastic tensor) has
predictions, labels and mask ``[B, d]``: the mean runs over every labelled component.
All losses average over valid entries and return exactly 0 (finite gradients) when none is valid.

Multi-target training (XxaCT-NN): ``sample_task`` draws one task per example uniformly;
``multitask_loss`` scores each example only on its sampled task, i.e. the mean over examples
(whose sampled label exists) of that task's per-example loss. Tasks are indexed by their position
in ``task_names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from mmjax.objectives._common import as_mask, safe_mean

LOSS_KINDS = ("mse", "mae", "ce", "huber")
REGRESSION_LOSSES = ("mse", "l1", "huber", "robust_l1")  # config names (``l1`` is ``mae``)
HUBER_DELTA = 1.0
SQRT2 = 1.4142135623730951


def _check(name, pred, labels, mask):
    """The bool label mask, shaped like ``labels`` (``[B]``, or ``[B, d]`` for a vector target)."""
    if pred.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}: batch sizes differ: {pred.shape} vs {labels.shape}")
    if labels.ndim == 1:
        return as_mask(mask, labels.shape[0])
    if name != "ce" and pred.shape != labels.shape:
        raise ValueError(f"{name}: predictions {pred.shape} and labels {labels.shape} differ in shape")
    if mask is None:
        return jnp.ones(labels.shape, bool)
    mask = jnp.asarray(mask)
    if mask.shape != labels.shape:
        raise ValueError(f"{name}: mask {mask.shape} must have the labels' shape {labels.shape}")
    return mask.astype(bool)


def per_example_loss(kind: str, pred: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example loss ``[B]``: squared error, absolute error, or softmax cross-entropy."""
    if kind == "mse":
        return jnp.square(pred - labels)
    if kind == "mae":
        return jnp.abs(pred - labels)
    if kind == "huber":  # 0.5 r^2 for |r| <= delta, delta (|r| - 0.5 delta) beyond (torch's HuberLoss)
        r = jnp.abs(pred - labels)
        return jnp.where(r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (r - 0.5 * HUBER_DELTA))
    if kind == "ce":
        if pred.ndim != 2:
            raise ValueError(f"ce needs logits [B, K], got {pred.shape}")
        labels = labels.astype(jnp.int32)
        logp = jax.nn.log_softmax(pred, axis=-1)
        return -jnp.take_along_axis(logp, jnp.clip(labels, 0, pred.shape[-1] - 1)[:, None], 1)[:, 0]
    raise ValueError(f"unknown loss kind {kind!r}; choose one of {LOSS_KINDS}")


def _masked(kind, pred, labels, mask):
    mask = _check(kind, pred, labels, mask)
    # where-guard the labels too: a missing (NaN) label must not leak NaN into the gradient.
    safe_labels = jnp.where(mask, labels, jnp.zeros_like(labels))
    return safe_mean(per_example_loss(kind, pred, safe_labels), mask)


def masked_mse(pred: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error over rows with a label; ``pred``, ``labels`` ``[B]``; 0-d."""
    return _masked("mse", pred, labels, mask)


def masked_mae(pred: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean absolute error over rows with a label; ``[B]``; 0-d (same units as the target)."""
    return _masked("mae", pred, labels, mask)


def masked_huber(pred: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Huber loss (delta = 1 in the batched, i.e. normalised, units) over rows with a label; 0-d."""
    return _masked("huber", pred, labels, mask)


def robust_l1_per_example(pred: jax.Array, log_sigma: jax.Array, labels: jax.Array) -> jax.Array:
    """CrabNet's RobustL1 (Laplace negative log-likelihood up to a constant), ``[B]``:
    ``sqrt(2) * |y - pred| * exp(-log_sigma) + log_sigma``."""
    return SQRT2 * jnp.abs(pred - labels) * jnp.exp(-log_sigma) + log_sigma


def masked_robust_l1(pred: jax.Array, log_sigma: jax.Array, labels: jax.Array,
                     mask: jax.Array | None = None) -> jax.Array:
    """Mean `robust_l1_per_example` over rows with a label; ``pred``, ``log_sigma``, ``labels``
    ``[B]`` (``log_sigma`` is the predicted log scale, in the batched units); 0-d."""
    mask = _check("robust_l1", pred, labels, mask)
    if log_sigma.shape != pred.shape:
        raise ValueError(f"robust_l1: log_sigma {log_sigma.shape} must match predictions {pred.shape}")
    safe_labels = jnp.where(mask, labels, jnp.zeros_like(labels))
    safe_sigma = jnp.where(mask, log_sigma, jnp.zeros_like(log_sigma))
    return safe_mean(robust_l1_per_example(pred, safe_sigma, safe_labels), mask)


def regression_loss(kind: str, pred: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
                    log_sigma: jax.Array | None = None) -> jax.Array:
    """Masked regression loss by config name (`REGRESSION_LOSSES`); ``robust_l1`` needs ``log_sigma``."""
    if kind == "mse":
        return masked_mse(pred, labels, mask)
    if kind == "l1":
        return masked_mae(pred, labels, mask)
    if kind == "huber":
        return masked_huber(pred, labels, mask)
    if kind == "robust_l1":
        if log_sigma is None:
            raise ValueError("the robust_l1 loss needs a predicted log sigma per row")
        return masked_robust_l1(pred, log_sigma, labels, mask)
    raise ValueError(f"unknown regression loss {kind!r}; choose one of {REGRESSION_LOSSES}")


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
    """Softmax cross-entropy (nats) over rows with a label; logits ``[B, K]``, int labels ``[B]``."""
    return _masked("ce", logits, labels, mask)


def sample_task(rng: jax.Array, task_names: Sequence[str], batch_size: int | None = None):
    """Uniformly sampled task index: int32 scalar, or ``[batch_size]`` (one task per example)."""
    if len(task_names) == 0:
        raise ValueError("sample_task needs at least one task name")
    shape = () if batch_size is None else (batch_size,)
    return jax.random.randint(rng, shape, 0, len(task_names), dtype=jnp.int32)


def multitask_loss(
    predictions: Mapping[str, jax.Array],
    labels: Mapping[str, jax.Array],
    label_mask: Mapping[str, jax.Array],
    task_kinds: Mapping[str, str],
    task_names: Sequence[str],
    task_index: jax.Array | None = None,
) -> jax.Array:
    """Multi-target loss counting only each example's sampled task; 0-d.

    Args:
      predictions/labels/label_mask: {task: ``[B]`` / ``[B, K]``}, {task: ``[B]``}, {task: bool ``[B]``}.
      task_kinds: {task: "mse" | "mae" | "ce"}.
      task_names: the task order that ``task_index`` refers to.
      task_index: int ``[B]`` from ``sample_task`` (or a scalar: the whole batch on one task);
        None counts every (example, task) pair whose label exists.

    Returns ``sum_b sum_t [b counts for t] l_t(b) / #(b, t) counted``; 0 if nothing counts.
    """
    total, count = 0.0, 0
    for t, name in enumerate(task_names):
        for d, what in ((predictions, "predictions"), (labels, "labels"), (task_kinds, "task_kinds")):
            if name not in d:
                raise ValueError(f"task {name!r} missing from {what} (has {sorted(d)})")
        lab = labels[name]
        mask = _check(name, predictions[name], lab, label_mask.get(name))
        if task_index is not None:
            mask = mask & (jnp.asarray(task_index) == t)
        safe_labels = jnp.where(mask, lab, jnp.zeros_like(lab))
        per = per_example_loss(task_kinds[name], predictions[name], safe_labels)
        total = total + jnp.sum(jnp.where(mask, per, 0.0))
        count = count + jnp.sum(mask)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
