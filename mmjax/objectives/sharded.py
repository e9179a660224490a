"""Explicit ``jax.shard_map`` variants of the batch-coupled losses (O9).

The plain losses already give global results under ``jax.jit`` with a batch sharded by a
``NamedSharding`` (GSPMD inserts the collectives). The functions here are the hand-written
per-device bodies for use *inside* ``jax.shard_map`` (``check_vma=True``) over ``axis_name``:
each device holds its ``[B / n_dev, D]`` slice of every modality and the result is the global,
replicated loss, equal (values and gradients) to the plain function on the whole batch.

* InfoNCE / AllPairs / Anchored (big_vision style): all_gather both modalities' normalised
  embeddings and the masks; each device scores its own rows against all columns and its own
  columns against all rows; the per-row sums and counts are psum'd (global negatives).
* TensorCLIP: all_gather b and c; each device streams over its own first-axis rows; the partial
  logsumexps of axes 2 and 3 are combined over devices with a pmax/psum logsumexp all-reduce.
  Memory per device O(B_local B^2) (or O(chunk B^2) with ``chunk_size``).
* Barlow Twins / VICReg: psum of the sufficient statistics (row counts, column sums, centred
  cross-products and squared sums); then the loss is computed identically on every device.

``on_mesh(fn, mesh)`` wraps such a body into a function of globally sharded arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mmjax.objectives import barlow as _barlow
from mmjax.objectives import tensorclip as _tc
from mmjax.objectives import vicreg as _vicreg
from mmjax.objectives._common import as_mask, at_least_float32, check_rows, l2_normalize
from mmjax.objectives.contrastive import all_pairs, anchored_pairs, directional_cross_entropy


def on_mesh(fn, mesh: jax.sharding.Mesh, axis_name: str = "data", **static_kwargs):
    """``fn(*local_args, axis_name=..., **static_kwargs, **array_kwargs)`` on global arrays.

    Returns ``wrapped(*args, **array_kwargs)``: every array leaf of the call's arguments with
    ``ndim >= 1`` is split on its leading (batch) axis over ``axis_name``; scalars (e.g. the
    temperature) are replicated; the output is replicated. Python-level options (``variant``,
    ``half_targets``, ``chunk_size`` ...) go in ``static_kwargs``.
    """
    body = functools.partial(fn, axis_name=axis_name, **static_kwargs)

    def wrapped(*args, **array_kwargs):
        specs = jax.tree.map(lambda x: P(axis_name) if jnp.ndim(x) >= 1 else P(),
                             (args, array_kwargs))
        mapped = jax.shard_map(lambda a, kw: body(*a, **kw), mesh=mesh, in_specs=specs,
                               out_specs=P(), check_vma=True)
        return mapped(args, array_kwargs)

    return wrapped


def _gather(x, axis_name):
    return jax.lax.all_gather(x, axis_name, tiled=True)


def _global_index(n_local: int, axis_name: str) -> jax.Array:
    return jax.lax.axis_index(axis_name) * n_local + jnp.arange(n_local)


def psum_logsumexp(x: jax.Array, axis_name: str) -> jax.Array:
    """``log sum_devices exp(x)`` elementwise (stable: shift by the stop-gradient pmax)."""
    shift = jax.lax.pmax(jax.lax.stop_gradient(x), axis_name)  # a constant shift: no gradient
    return shift + jnp.log(jax.lax.psum(jnp.exp(x - shift), axis_name))


# ------------------------------------------------------------------------------------ contrastive
def info_nce_sharded(a, b, temperature, mask=None, axis_name: str = "data"):
    """Per-device body of ``info_nce``: local ``a, b`` ``[B_loc, D]``, ``mask`` ``[B_loc]``; 0-d."""
    n = check_rows("info_nce_sharded", a, b)
    mask = as_mask(mask, n)
    a_hat, b_hat = l2_normalize(a), l2_normalize(b)
    a_all, b_all = _gather(a_hat, axis_name), _gather(b_hat, axis_name)
    mask_all = _gather(mask, axis_name)
    pos = jnp.sum(a_hat * b_hat, axis=-1) / temperature
    ce_rows = directional_cross_entropy(a_hat, b_all, mask_all, pos, temperature)
    ce_cols = directional_cross_entropy(b_hat, a_all, mask_all, pos, temperature)
    total = jax.lax.psum(jnp.sum(jnp.where(mask, 0.5 * (ce_rows + ce_cols), 0.0)), axis_name)
    count = jax.lax.psum(jnp.sum(mask), axis_name)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def pairwise_clip_sharded(embeddings: Mapping[str, jax.Array], present, temperature,
                          pairs: Sequence[tuple[str, str]], axis_name: str = "data"):
    """Per-device body of ``pairwise_clip`` (mean of masked InfoNCE over ``pairs``); 0-d."""
    losses, has_rows = [], []
    for m1, m2 in pairs:
        n = check_rows(f"pair ({m1}, {m2})", embeddings[m1], embeddings[m2])
        mask = jnp.ones((n,), bool)
        for m in (m1, m2):
            if present is not None and m in present:
                mask = mask & as_mask(present[m], n)
        losses.append(info_nce_sharded(embeddings[m1], embeddings[m2], temperature, mask, axis_name))
        has_rows.append(jax.lax.psum(jnp.sum(mask), axis_name) > 0)
    losses, has_rows = jnp.stack(losses), jnp.stack(has_rows)
    n_pairs = jnp.sum(has_rows)
    total = jnp.sum(jnp.where(has_rows, losses, 0.0))
    return jnp.where(n_pairs > 0, total / jnp.maximum(n_pairs, 1), 0.0)


def all_pairs_clip_sharded(embeddings, present, temperature, axis_name: str = "data"):
    """Per-device body of ``all_pairs_clip``; 0-d."""
    return pairwise_clip_sharded(embeddings, present, temperature, all_pairs(list(embeddings)),
                                 axis_name)


def anchored_clip_sharded(embeddings, present, temperature, anchor: str = "crystal",
                          axis_name: str = "data"):
    """Per-device body of ``anchored_clip``; 0-d."""
    return pairwise_clip_sharded(embeddings, present, temperature,
                                 anchored_pairs(list(embeddings), anchor), axis_name)


# ------------------------------------------------------------------------------------- tensorclip
def tensor_clip_sharded(a, b, c, temperature, present=None, chunk_size=None, variant="paper",
                        axis_name: str = "data"):
    """Per-device body of ``tensor_clip``: local ``[B_loc, D]`` slices; 0-d."""
    _tc._check_variant(variant)
    n_loc = check_rows("tensor_clip_sharded", a, b, c)
    valid = as_mask(present, n_loc)
    a, b, c = l2_normalize(a), l2_normalize(b), l2_normalize(c)
    a_all, b_all, c_all = (_gather(x, axis_name) for x in (a, b, c))
    valid_all = _gather(valid, axis_name)
    rows = _global_index(n_loc, axis_name)
    n_valid = jax.lax.psum(jnp.sum(valid), axis_name).astype(jnp.float32)
    row_valid = valid
    if variant == "multimat_code":
        row_valid = valid & (n_valid >= 3)
        n_valid = jnp.where(n_valid >= 3, n_valid, 0.0)
    lse1, lse2_part, lse3_part = _tc.row_block_logsumexps(
        a, valid, rows, b_all, c_all, valid_all, temperature, variant, chunk_size)
    start = jax.lax.axis_index(axis_name) * n_loc
    lse2 = jax.lax.dynamic_slice_in_dim(psum_logsumexp(lse2_part, axis_name), start, n_loc)
    lse3 = jax.lax.dynamic_slice_in_dim(psum_logsumexp(lse3_part, axis_name), start, n_loc)
    pos = (_tc.positive_terms(a, rows, b_all, c_all, valid_all, temperature, variant),
           _tc.positive_terms(b, rows, a_all, c_all, valid_all, temperature, variant),
           _tc.positive_terms(c, rows, a_all, b_all, valid_all, temperature, variant))
    local = _tc._combine_axes(pos, (lse1, lse2, lse3), row_valid, n_valid, variant)
    return _tc._finish(jax.lax.psum(local, axis_name), n_valid, variant)


# --------------------------------------------------------------------------- redundancy reduction
def _centered_sharded(z, mask, axis_name):
    z = at_least_float32(z)
    m = mask[:, None]
    count = jax.lax.psum(jnp.sum(mask), axis_name)
    mean = jax.lax.psum(jnp.sum(jnp.where(m, z, 0.0), axis=0), axis_name) / jnp.maximum(count, 1)
    return jnp.where(m, z - mean, 0.0), count


def _barlow_sharded(zs, lambd, half_targets, mask, axis_name):
    n = check_rows("barlow_twins_sharded", *zs)
    mask = as_mask(mask, n)
    centred = [_centered_sharded(z, mask, axis_name) for z in zs]
    zc = [z for z, _ in centred]
    count = centred[0][1]
    letters = _barlow._LETTERS[: len(zs)]
    cross = jnp.einsum(",".join(f"b{x}" for x in letters) + "->" + letters, *zc)
    cross = jax.lax.psum(cross, axis_name)
    sums_sq = [jax.lax.psum(jnp.sum(z * z, axis=0), axis_name) for z in zc]
    c = _barlow.correlation_from_stats(cross, sums_sq)
    loss = _barlow.barlow_loss_from_correlation(c, lambd, half_targets)
    return jnp.where(count > 0, loss, 0.0)


def barlow_twins_sharded(z1, z2, lambd=0.0051, mask=None, axis_name: str = "data"):
    """Per-device body of ``barlow_twins`` (psum of centred cross-products); 0-d."""
    return _barlow_sharded([z1, z2], lambd, False, mask, axis_name)


def barlow_twins_3d_sharded(z1, z2, z3, lambd=0.0051, half_targets=True, mask=None,
                            axis_name: str = "data"):
    """Per-device body of ``barlow_twins_3d`` (psum of the ``D^3`` cross-product tensor); 0-d."""
    return _barlow_sharded([z1, z2, z3], lambd, half_targets, mask, axis_name)


def vicreg_sharded(z, gamma=1.0, lambda_var=1.0, lambda_cov=1.0, *, z_other=None, lambda_inv=1.0,
                   mask=None, use_std=False, axis_name: str = "data"):
    """Per-device body of ``vicreg`` (psum of counts, column sums and centred cross-products); 0-d.

    With ``on_mesh``, pass ``z_other`` and ``mask`` as call-time keywords (they are sharded too).
    """
    branches = [z] if z_other is None else [z, z_other]
    n = check_rows("vicreg_sharded", *branches)
    mask = as_mask(mask, n)
    reg, count = 0.0, None
    for branch in branches:
        zc, count = _centered_sharded(branch, mask, axis_name)
        cov = jax.lax.psum(zc.T @ zc, axis_name) / jnp.maximum(count - 1, 1)
        var_term, cov_term = _vicreg.variance_covariance_terms(cov, gamma, use_std)
        reg = reg + lambda_var * var_term + lambda_cov * cov_term
    loss = reg / len(branches)
    if z_other is not None:
        per_row = jnp.mean(jnp.square(at_least_float32(z) - z_other), axis=-1)
        inv = jax.lax.psum(jnp.sum(jnp.where(mask, per_row, 0.0)), axis_name)
        loss = loss + lambda_inv * inv / jnp.maximum(count, 1)
    return jnp.where(count >= 2, loss, 0.0)
