"""X-MoPA cross-modal latent prediction loss (appendix Eq. 2-4) (O7).

Each modality m's latent ``z_m`` ``[B, D]`` is predicted from the other two by a light MLP
``h_m([z_m1, z_m2])`` (the predictor lives in ``mmjax.nn`` / ``mmjax.systems``; this loss takes
its outputs). Per Eq. 3 the term is the squared L2 distance ``||ẑ_m - z_m||_2^2`` per sample
(``reduction="sum"``, default; ``"mean"`` divides by D, the "MSE" of the main text), averaged over
the valid samples, and Eq. 4 sums the terms over the modalities.

Stop-gradient: the paper describes no EMA target encoder and no stop-gradient; collapse is
prevented by the VICReg term instead. So by default gradients flow into the targets too
(``stop_gradient_targets=False``); ``True`` gives the JEPA-style detached target.

Masks: sample b counts for term m only if every modality in ``targets`` is present for b (the
target and the predictor's inputs). Optionally ``target_index`` ``[B]`` (int, index into the
sorted modality names) keeps only one sampled term per sample -- the main text's "select two
modalities and predict the third" per instance. A term with no valid sample contributes 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from mmjax.objectives._common import as_mask


def cross_modal_prediction(
    predictions: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    present: Mapping[str, jax.Array] | None = None,
    stop_gradient_targets: bool = False,
    reduction: str = "sum",
    target_index: jax.Array | None = None,
) -> jax.Array:
    """Sum over modalities m of mean_valid_b ||predictions[m]_b - targets[m]_b||^2; 0-d.

    Args:
      predictions: {m: ``[B, D]``} predicted latents ẑ_m = h_m(other modalities).
      targets: {m: ``[B, D]``} actual latents z_m (same keys as ``predictions``).
      present: {m: bool ``[B]``}; missing keys count as present.
      stop_gradient_targets: detach the targets (see module docstring).
      reduction: ``"sum"`` over latent dims (Eq. 3) or ``"mean"`` (MSE).
      target_index: optional int ``[B]``; sample b only counts for modality sorted(keys)[index].
    """
    if set(predictions) != set(targets):
        raise ValueError(f"predictions {sorted(predictions)} and targets {sorted(targets)} differ")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    names = sorted(targets)
    n = None
    for m in names:
        if predictions[m].shape != targets[m].shape or predictions[m].ndim != 2:
            raise ValueError(f"modality {m!r}: prediction {predictions[m].shape} and target "
                             f"{targets[m].shape} must be the same [B, D] shape")
        n = predictions[m].shape[0] if n is None else n
    all_present = jnp.ones((n,), bool)
    for m in names:
        if present is not None and m in present:
            all_present = all_present & as_mask(present[m], n)
    total = 0.0
    for t, m in enumerate(names):
        target = jax.lax.stop_gradient(targets[m]) if stop_gradient_targets else targets[m]
        sq = jnp.square(predictions[m] - target)
        per_row = jnp.sum(sq, axis=-1) if reduction == "sum" else jnp.mean(sq, axis=-1)
        valid = all_present if target_index is None else all_present & (target_index == t)
        count = jnp.sum(valid)
        term = jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(count, 1)
        total = total + jnp.where(count > 0, term, 0.0)
    return jnp.asarray(total)
