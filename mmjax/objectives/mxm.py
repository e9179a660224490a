"""Masked XRD modelling (XxaCT-NN Eq. 3) loss and its token-mask sampler (O6).

Shapes: ``pred``, ``target`` ``[B, T, P]`` (T tokens of P pattern points, e.g. 17 x 250),
``token_mask`` bool ``[B, T]`` (True = the token was replaced by [MASK] and is scored).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.objectives._common import at_least_float32

DEFAULT_MASK_RATIO = 0.05


def masked_xrd_loss(pred: jax.Array, target: jax.Array, token_mask: jax.Array,
                    sample_mask: jax.Array | None = None) -> jax.Array:
    """MXM regression loss; 0-d.

    Per-token MSE is the mean over P; per sample, the mean over its masked tokens; the loss is the
    mean over samples with at least one masked token (and ``sample_mask`` True, e.g. the batch's
    ``slot_valid`` and ``present["xrd"]``). 0 if no sample qualifies.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be [B, T, P], got {pred.shape}, {target.shape}")
    if token_mask.shape != pred.shape[:2]:
        raise ValueError(f"token_mask must be [B, T] = {pred.shape[:2]}, got {token_mask.shape}")
    token_mask = token_mask.astype(bool)
    if sample_mask is not None:
        token_mask = token_mask & sample_mask.astype(bool)[:, None]
    token_mse = jnp.mean(jnp.square(at_least_float32(pred) - target), axis=-1)  # [B, T], >= fp32
    n_masked = jnp.sum(token_mask, axis=1)  # [B]
    per_sample = jnp.sum(jnp.where(token_mask, token_mse, 0.0), axis=1) / jnp.maximum(n_masked, 1)
    has = n_masked > 0
    count = jnp.sum(has)
    total = jnp.sum(jnp.where(has, per_sample, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def sample_token_mask(rng: jax.Array, batch_size: int, num_tokens: int,
                      mask_ratio: float = DEFAULT_MASK_RATIO, exact_count: bool = True) -> jax.Array:
    """Random MXM token mask, bool ``[batch_size, num_tokens]``; deterministic for ``rng``.

    ``exact_count=True``: each sample masks exactly ``max(1, round(mask_ratio * T))`` distinct
    tokens (17 tokens at 5 % -> 1). ``exact_count=False``: each token is masked independently with
    probability ``mask_ratio``, and a sample that drew none gets the token with the smallest
    uniform draw masked.
    Either way every sample has at least one masked token.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    scores = jax.random.uniform(rng, (batch_size, num_tokens))
    if exact_count:
        k = max(1, min(num_tokens, int(round(mask_ratio * num_tokens))))
        ranks = jnp.argsort(jnp.argsort(-scores, axis=1), axis=1)  # 0 = highest score
        return ranks < k
    drawn = scores < mask_ratio
    forced = jax.nn.one_hot(jnp.argmin(scores, axis=1), num_tokens, dtype=bool)
    return jnp.where(jnp.any(drawn, axis=1, keepdims=True), drawn, forced)
