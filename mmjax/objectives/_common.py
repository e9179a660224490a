"""Small helpers shared by the objectives: normalisation, masks, safe means, masked logsumexp.

Everything here is a pure function of jax arrays. Masks are boolean ``[B]`` arrays (True = the row
takes part). Invalid logits are replaced by a large *finite* negative number (never ``-inf``), so a
logsumexp over an all-invalid row stays finite and its gradient is exactly zero after the final
``jnp.where`` that drops the row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Fill value for logits that must not take part in a logsumexp. Finite so that an all-masked row
# gives a finite (and afterwards discarded) value instead of NaN. |logits| <= 1/tau << 1e9.
NEG_FILL = -1e9

# Guard for L2 norms of zero vectors (padding rows).
NORM_EPS = 1e-12


def at_least_float32(x: jax.Array) -> jax.Array:
    """Promotes bf16/fp16 (mixed-precision) inputs to float32: loss statistics stay in fp32."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = NORM_EPS) -> jax.Array:
    """Rows scaled to unit L2 norm: ``x / max(||x||, eps)`` along ``axis`` (zero rows stay zero).

    Uses ``rsqrt(max(sum x^2, eps^2))`` so the gradient at a zero row is finite (zero). Computes
    in at least float32.
    """
    x = at_least_float32(x)
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def as_mask(mask: jax.Array | None, n: int) -> jax.Array:
    """``mask`` as a bool ``[n]`` array; None means every row is valid."""
    if mask is None:
        return jnp.ones((n,), dtype=bool)
    mask = jnp.asarray(mask)
    if mask.shape != (n,):
        raise ValueError(f"mask must have shape ({n},) to match the batch, got {mask.shape}")
    return mask.astype(bool)


def check_rows(name: str, *arrays: jax.Array, ndim: int = 2) -> int:
    """Checks the arrays are ``ndim``-D with the same leading size; returns that size."""
    n = None
    for i, x in enumerate(arrays):
        if x.ndim != ndim:
            raise ValueError(f"{name}: argument {i} must be {ndim}-D, got shape {x.shape}")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise ValueError(f"{name}: batch sizes differ ({n} vs {x.shape[0]}) in argument {i}")
    return int(n)


def safe_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` over entries where ``mask`` is True; exactly 0 (finite grads) if none."""
    mask = mask.astype(bool)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    count = jnp.sum(mask)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def masked_logsumexp(x: jax.Array, valid: jax.Array, axis) -> jax.Array:
    """logsumexp of ``x`` over ``axis`` counting only entries where ``valid`` (broadcastable).

    All-invalid slices give about ``NEG_FILL`` (finite); callers drop them with ``jnp.where``.
    """
    return jax.nn.logsumexp(jnp.where(valid, x, NEG_FILL), axis=axis)


def combine_logsumexp(lse_a: jax.Array, lse_b: jax.Array) -> jax.Array:
    """Streaming logsumexp accumulation: log(exp(a) + exp(b)), stable for large negatives."""
    return jnp.logaddexp(lse_a, lse_b)
