"""Prediction heads and the supervised loss every system shares.

``outputs`` maps a target name to ``1`` (scalar regression), ``(d,)`` (a vector regression
target of d components) or the class count ``C >= 2`` (classification); `build_heads` makes one
head per target of the width its loss needs (2 for ``robust_l1``: value and log sigma),
`head_outputs` reads the raw head outputs back into ``{name: [N] | [N, d] | [N, C]}`` (plus
``name/log_sigma``), and `supervised_loss` is the weighted mean of the per-target masked losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.nn.heads import MultiTaskHead
from mmjax.systems.base import flatten_device_axis
from mmjax.systems.masks import target_mask
from mmjax.objectives.supervised import REGRESSION_LOSSES, masked_cross_entropy, masked_mae, masked_mse, regression_loss


def output_kind(name: str, n: Any) -> tuple[str, int]:
    """``("regression", width)`` or ``("class", classes)`` of one ``outputs`` entry.

    ``outputs[name]`` is ``1`` for a scalar regression target, the class count ``C >= 2`` of a
    classification target (crystal_system 7, space_group 230), or a 1-tuple / list ``(d,)`` for a
    regression vector of ``d`` components (e.g. ``(21,)``: an elastic tensor's independent entries).
    """
    if isinstance(n, (tuple, list)):
        if len(n) != 1 or int(n[0]) < 1:
            raise ValueError(f"target {name!r}: a vector target's outputs are (components,), got {n!r}")
        return "regression", int(n[0])
    if int(n) < 1:
        raise ValueError(f"target {name!r}: number of outputs must be >= 1, got {n}")
    return ("regression", 1) if int(n) == 1 else ("class", int(n))


def canonical_outputs(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``outputs`` with ints for scalar / class targets and ``(d,)`` tuples for vector targets
    (config dicts give lists), each entry checked by `output_kind`."""
    out = {}
    for k, v in (outputs or {}).items():
        output_kind(str(k), v)
        out[str(k)] = (int(v[0]),) if isinstance(v, (tuple, list)) else int(v)
    return out


def is_regression(outputs: Mapping[str, Any], name: str) -> bool:
    return output_kind(name, outputs[name])[0] == "regression"


def build_heads(outputs: Mapping[str, int], hidden: Sequence[int] = (), activation: str = "relu") -> MultiTaskHead:
    """One head per target of ``outputs[name]`` linear outputs (`head_widths`: 1 for a scalar
    regression target, the class count for a classification target, d for a d-vector)."""
    for name, n in outputs.items():
        if int(n) < 1:
            raise ValueError(f"target {name!r}: number of outputs must be >= 1, got {n}")
    return MultiTaskHead(tuple((str(k), int(v)) for k, v in outputs.items()), tuple(hidden), activation)


def check_losses(losses: Mapping[str, str] | None, outputs: Mapping[str, Any]) -> dict[str, str]:
    """``{target: loss}`` for the regression targets (default ``"mse"``), validated by name."""
    losses = dict(losses or {})
    unknown = sorted(set(losses) - set(outputs))
    if unknown:
        raise ValueError(f"config.system.target_losses names {unknown}, which are not targets ({sorted(outputs)})")
    out = {}
    for name, n in outputs.items():
        kind = str(losses.get(name, "mse"))
        if not is_regression(outputs, name):
            if name in losses and kind != "ce":
                raise ValueError(f"target {name!r} is a classification target: its loss is 'ce', not {kind!r}")
            continue
        if kind not in REGRESSION_LOSSES:
            raise ValueError(f"loss {kind!r} for target {name!r}; choose one of {REGRESSION_LOSSES}")
        out[name] = kind
    return out


def head_widths(outputs: Mapping[str, Any], losses: Mapping[str, str] | None = None) -> dict[str, int]:
    """Linear output width per target: the class count, 1 or d for a regression target, twice
    that (prediction, log sigma) for a ``robust_l1`` target."""
    losses = dict(losses or {})
    out = {}
    for k, n in outputs.items():
        kind, width = output_kind(k, n)
        out[k] = 2 * width if kind == "regression" and losses.get(k) == "robust_l1" else width
    return out


def head_outputs(raw: Mapping[str, jax.Array], outputs: Mapping[str, Any],
                 losses: Mapping[str, str] | None = None) -> dict[str, jax.Array]:
    """Scalar regression heads ``[N, 1] -> [N]``, vector ones ``[N, d]``; classification logits
    stay ``[N, C]``; a ``robust_l1`` head (twice as wide) gives ``{name: [N] or [N, d],
    name + "/log_sigma": same shape}`` (log sigma in batched units)."""
    losses = dict(losses or {})
    out = {}
    for k, v in raw.items():
        kind, width = output_kind(k, outputs[k])
        vector = isinstance(outputs[k], (tuple, list))
        if kind != "regression":
            out[k] = v
        elif losses.get(k) == "robust_l1":
            out[k], out[f"{k}/log_sigma"] = (v[:, :width], v[:, width:]) if vector else (v[:, 0], v[:, 1])
        else:
            out[k] = v if vector else v[:, 0]
    return out


def supervised_loss(predictions: Mapping[str, jax.Array], batch: Mapping[str, Any], outputs: Mapping[str, Any],
                    weights: Mapping[str, float] | None = None,
                    losses: Mapping[str, str] | None = None,
                    rows: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked supervised loss over ``batch["targets"]`` / ``batch["target_mask"]``.

    Regression targets: ``losses[name]`` (default MSE; ``l1``, ``huber``, or ``robust_l1`` with
    ``predictions[name + "/log_sigma"]``) on ``predictions[name]`` ``[N]`` (``[N, d]`` for a vector
    target, averaged over its labelled components) in the units of the target as batched, i.e.
    normalised if the pipeline normalises. Classification (C outputs): cross-entropy (nats) on
    logits ``[N, C]`` with int labels. Entries count only if ``slot_valid & target_mask[name]`` (and
    ``rows`` bool ``[N]`` when given: the rows whose head had an input, `head_rows`). The
    loss is the weighted mean over targets that have at least one label in the batch (0 if none).
    Metrics per target: ``<name>/mse`` and ``<name>/mae`` or ``<name>/ce`` and ``<name>/accuracy``,
    plus ``<name>/n`` (labelled rows; labelled components for a vector target).
    """
    weights = dict(weights or {})
    total, wsum, metrics = 0.0, 0.0, {}
    for name in outputs:
        labels = flatten_device_axis(jnp.asarray(batch["targets"][name]))
        mask = target_mask(batch, name)
        if rows is not None:
            mask = mask & rows.reshape(rows.shape + (1,) * (mask.ndim - 1))
        pred = predictions[name]
        if is_regression(outputs, name):
            kind = (losses or {}).get(name, "mse")
            mse = masked_mse(pred, labels.astype(jnp.float32), mask)
            term = mse if kind == "mse" else regression_loss(kind, pred, labels.astype(jnp.float32), mask,
                                                             predictions.get(f"{name}/log_sigma"))
            metrics[f"{name}/mse"] = mse
            if kind != "mse":
                metrics[f"{name}/{kind}"] = term
            metrics[f"{name}/mae"] = masked_mae(pred, labels.astype(jnp.float32), mask)
        else:
            term = masked_cross_entropy(pred, labels.astype(jnp.int32), mask)
            hit = (jnp.argmax(pred, axis=-1) == labels.astype(jnp.int32)) & mask
            metrics[f"{name}/ce"] = term
            metrics[f"{name}/accuracy"] = jnp.sum(hit) / jnp.maximum(jnp.sum(mask), 1)
        count = jnp.sum(mask)
        metrics[f"{name}/n"] = count.astype(jnp.float32)
        w = float(weights.get(name, 1.0)) * (count > 0)
        total = total + w * term
        wsum = wsum + w
    loss = jnp.where(wsum > 0, total / jnp.maximum(wsum, 1e-12), 0.0)
    return jnp.asarray(loss, jnp.float32), metrics
