"""Barlow Twins across modalities, 2-D and 3-D / n-D (MultiMat Supplemental Eq. S3-S4) (O4).

Embeddings ``z_m`` ``[B, D]`` are centred over the valid rows of the batch (no other
normalisation of rows), and the generalised cross-correlation is (Eq. S4)::

    C_{ij..} = sum_b z1_bi z2_bj ... / (||z1_:i|| ||z2_:j|| ...)

with the norms of the *centred* feature columns (``sqrt(sum + eps^2)``, eps = 1e-8, guards a
constant column; no BatchNorm-style ``var + 1e-5``). Losses:

* 2-D: ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.
* 3-D (Eq. S3): ``(1 - C)^2`` on the hyper-diagonal; where exactly two indices coincide
  ``(1/2 - C)^2`` if ``half_targets`` else ``lambda C^2``; ``lambda C^2`` where all differ.
* n-D: ``(1 - C)^2`` on the hyper-diagonal, ``lambda C^2`` elsewhere (= 3-D without half targets).

Masks: bool ``[B]``; rows with False are excluded from the centring and from every sum (exactly as
if they were deleted). If no row is valid the loss is 0. The statistics are sums over rows, so the
sharded variants (``mmjax.objectives.sharded``) ``psum`` them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmjax.objectives._common import as_mask, at_least_float32, check_rows

COLUMN_EPS = 1e-8
_LETTERS = "ijklmnop"


def center(z: jax.Array, mask: jax.Array) -> jax.Array:
    """``z - mean over valid rows``, with invalid rows set to 0. ``[B, D] -> [B, D]`` (>= fp32)."""
    z = at_least_float32(z)
    m = mask[:, None]
    count = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(jnp.where(m, z, 0.0), axis=0) / count
    return jnp.where(m, z - mean, 0.0)


def column_scale(sum_sq: jax.Array, eps: float = COLUMN_EPS) -> jax.Array:
    """``1 / sqrt(sum_sq + eps^2)`` for the column norms in Eq. S4 (finite for a zero column)."""
    return jax.lax.rsqrt(sum_sq + eps * eps)


def correlation_from_stats(cross: jax.Array, sums_sq: Sequence[jax.Array]) -> jax.Array:
    """Normalises an n-way cross-product tensor ``[D, ..., D]`` by the column norms (Eq. S4)."""
    out = cross
    m = len(sums_sq)
    for axis, ss in enumerate(sums_sq):
        shape = [1] * m
        shape[axis] = -1
        out = out * column_scale(ss).reshape(shape)
    return out


def cross_correlation(zs: Sequence[jax.Array], mask: jax.Array | None = None) -> jax.Array:
    """The n-way cross-correlation ``C`` of Eq. S4 for centred embeddings -> ``[D1, ..., Dn]``."""
    n = check_rows("cross_correlation", *zs)
    mask = as_mask(mask, n)
    zc = [center(z, mask) for z in zs]
    letters = _LETTERS[: len(zs)]
    cross = jnp.einsum(",".join(f"b{x}" for x in letters) + "->" + letters, *zc)
    return correlation_from_stats(cross, [jnp.sum(z * z, axis=0) for z in zc])


def index_coincidence(m: int, d: int) -> jax.Array:
    """int ``[d]*m``: number of coinciding index pairs of each entry (m(m-1)/2 on the diagonal)."""
    idx = [jax.lax.broadcasted_iota(jnp.int32, (d,) * m, axis) for axis in range(m)]
    count = jnp.zeros((d,) * m, jnp.int32)
    for p in range(m):
        for q in range(p + 1, m):
            count = count + (idx[p] == idx[q])
    return count


def barlow_loss_from_correlation(c: jax.Array, lambd, half_targets: bool = False) -> jax.Array:
    """Eq. S3 (and its 2-D / n-D forms) for a cross-correlation tensor ``c`` ``[D]*n``; 0-d.

    ``half_targets`` is only defined for n = 3 (target 1/2 where exactly two indices coincide).
    """
    m, d = c.ndim, c.shape[0]
    if any(s != d for s in c.shape):
        raise ValueError(f"Barlow Twins needs equal embedding sizes, got correlation shape {c.shape}")
    if half_targets and m != 3:
        raise ValueError(f"half_targets is defined for 3 modalities, got {m}")
    pairs = index_coincidence(m, d)
    diagonal = pairs == m * (m - 1) // 2
    on = jnp.sum(jnp.where(diagonal, jnp.square(1.0 - c), 0.0))
    if half_targets:
        semi = pairs == 1
        half = jnp.sum(jnp.where(semi, jnp.square(0.5 - c), 0.0))
        off = jnp.sum(jnp.where(pairs == 0, jnp.square(c), 0.0))
        return on + half + lambd * off
    return on + lambd * jnp.sum(jnp.where(diagonal, 0.0, jnp.square(c)))


def _with_rows(loss, mask):
    return jnp.where(jnp.any(mask), loss, 0.0)


def barlow_twins(z1: jax.Array, z2: jax.Array, lambd=0.0051, mask: jax.Array | None = None):
    """2-D Barlow Twins between two modalities ``[B, D]``; 0-d.

    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` with C from Eq. S4 (centred columns,
    divided by their norms). ``lambd`` defaults to MultiMat's 0.0051.
    """
    n = check_rows("barlow_twins", z1, z2)
    mask = as_mask(mask, n)
    return _with_rows(barlow_loss_from_correlation(cross_correlation([z1, z2], mask), lambd), mask)


def barlow_twins_3d(z1, z2, z3, lambd=0.0051, half_targets: bool = True,
                    mask: jax.Array | None = None):
    """3-D Barlow Twins (Eq. S3-S4) over three modalities ``[B, D]``; builds a ``D^3`` tensor; 0-d."""
    n = check_rows("barlow_twins_3d", z1, z2, z3)
    mask = as_mask(mask, n)
    c = cross_correlation([z1, z2, z3], mask)
    return _with_rows(barlow_loss_from_correlation(c, lambd, half_targets), mask)


def barlow_twins_nd(zs: Sequence[jax.Array], lambd=0.0051, mask: jax.Array | None = None):
    """n-D Barlow Twins (target 1 on the hyper-diagonal, lambd C^2 elsewhere); ``D^n`` memory; 0-d."""
    if len(zs) < 2:
        raise ValueError(f"barlow_twins_nd needs at least 2 modalities, got {len(zs)}")
    n = check_rows("barlow_twins_nd", *zs)
    mask = as_mask(mask, n)
    return _with_rows(barlow_loss_from_correlation(cross_correlation(zs, mask), lambd), mask)
