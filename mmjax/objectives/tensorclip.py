"""TensorCLIP (MultiMat Supplemental Eq. S1-S2): InfoNCE over a 3-way similarity tensor (O3).

With unit-norm rows â, b̂, ĉ (``[B, D]``) and temperature tau,

    s_ijk = sum_l â_il b̂_jl ĉ_kl / tau                                   (B x B x B)

``variant="paper"`` (default, Eq. S1-S2 averaged over rows)::

    L = 1/3 * sum_axes  mean_{valid x} [ -s_xxx + logsumexp_{other two indices} s ]

``variant="multimat_code"`` (``TensorCLIPLoss2`` of the public code): weights M = 1 on the
hyper-diagonal, 1/2 where exactly two indices coincide, 0 elsewhere; negatives are only the fully
mismatched triples (i != j != k != i); for each axis with index x::

    loss_axis = mean_{valid x} sum_{others} M * (-s + logsumexp_{negatives with index x} s)

and the three axes are *summed* (no 1/3). Rows that have no negative at all (fewer than 3 valid
rows) are dropped, where the code would take log(0).

Masks: ``present`` bool ``[B]`` (all three modalities exist). Invalid rows take no part on any
axis; means run over valid rows; an all-false mask gives exactly 0 with finite gradients.

Memory: the naive path forms the B^3 tensor. ``chunk_size=C`` streams over chunks of the first
index with ``lax.scan`` (rematerialised, so the backward pass also stays at O(C B^2)): each chunk
forms ``s[i in chunk, :, :]``, finishes the axis-1 logsumexp of its rows, and folds its partial
logsumexps for axes 2 and 3 into running ``[B]`` accumulators with ``logaddexp``. The positive
terms (hyper-diagonal and, for the code variant, the two-equal-index "semi-diagonals") are
O(B^2 D) matrix products and never need the cube.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmjax.objectives._common import (
    NEG_FILL,
    as_mask,
    check_rows,
    combine_logsumexp,
    l2_normalize,
    masked_logsumexp,
)

VARIANTS = ("paper", "multimat_code")
_LETTERS = "ijklmnopqr"


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown TensorCLIP variant {variant!r}; choose one of {VARIANTS}")


def similarity_tensor(a: jax.Array, b: jax.Array, c: jax.Array, temperature) -> jax.Array:
    """``s_ijk = sum_l â_il b̂_jl ĉ_kl / tau`` -> ``[B, B, B]`` (normalises the rows first)."""
    check_rows("similarity_tensor", a, b, c)
    a, b, c = l2_normalize(a), l2_normalize(b), l2_normalize(c)
    return jnp.einsum("il,jl,kl->ijk", a, b, c) / temperature


# ----------------------------------------------------------------------------- positives (O(B^2 D))
def positive_terms(q, q_index, x, y, valid, temperature, variant):
    """Numerator terms for the rows of one axis. Unit-norm ``q`` ``[Q, D]`` (rows of the axis'
    modality, at global indices ``q_index`` ``[Q]``), ``x, y`` ``[B, D]`` (the other two
    modalities, global batch), ``valid`` bool ``[B]``. Returns ``[Q]``.

    paper: ``s_qqq``. multimat_code: ``s_qqq + 1/2 * sum`` over valid other indices t != q of
    ``s(q,q,t) + s(q,t,q) + s(q,t,t)`` (the three kinds of exactly-two-equal triples).
    """
    xq, yq = x[q_index], y[q_index]
    diag = jnp.sum(q * xq * yq, axis=-1) / temperature
    if variant == "paper":
        return diag
    other = valid[None, :] & (q_index[:, None] != jnp.arange(x.shape[0])[None, :])  # [Q, B]
    s_qqt = ((q * xq) @ y.T) / temperature  # t on the third axis
    s_qtq = ((q * yq) @ x.T) / temperature  # t on the second axis
    s_qtt = (q @ (x * y).T) / temperature  # t on both
    semi = jnp.sum(jnp.where(other, s_qqt + s_qtq + s_qtt, 0.0), axis=1)
    return diag + 0.5 * semi


# ------------------------------------------------------------------------- streamed logsumexps
def row_block_logsumexps(a_block, block_valid, block_index, b, c, valid, temperature, variant,
                         chunk_size=None):
    """Logsumexps of ``s`` for a block of first-axis rows, streaming over chunks of that block.

    Args:
      a_block: unit-norm ``[R, D]`` rows of the first modality at global indices ``block_index``.
      block_valid: bool ``[R]``. b, c: unit-norm ``[B, D]``; valid: bool ``[B]``.
      chunk_size: rows per step (None = the whole block at once). Need not divide R.

    Returns:
      ``lse1 [R]``: for each block row i, logsumexp over allowed (j, k) of s_ijk.
      ``lse2 [B]``, ``lse3 [B]``: for each j (resp. k), logsumexp over allowed (i in block, k)
      (resp. (i in block, j)) -- partial sums to be combined over blocks with ``logaddexp``.
      "Allowed" = all indices valid (paper) and additionally pairwise distinct (multimat_code).
      Empty sets give about NEG_FILL (finite).
    """
    r, d = a_block.shape
    n = b.shape[0]
    chunk = r if chunk_size is None else max(1, min(int(chunk_size), r))
    n_chunks = -(-r // chunk)
    pad = n_chunks * chunk - r
    a_p = jnp.pad(a_block, ((0, pad), (0, 0)))
    v_p = jnp.pad(block_valid, (0, pad))  # padded rows are invalid
    i_p = jnp.pad(block_index, (0, pad), constant_values=-1)
    cols = jnp.arange(n)
    pair_valid = valid[:, None] & valid[None, :]  # [B(j), B(k)]
    if variant == "multimat_code":
        pair_valid = pair_valid & (cols[:, None] != cols[None, :])

    def chunk_stats(a_c, v_c, i_c):  # [C, D], [C], [C] -> lse1 [C], partial lse2 / lse3 [B]
        s = jnp.einsum("il,jl,kl->ijk", a_c, b, c) / temperature  # [C, B, B]
        allowed = v_c[:, None, None] & pair_valid[None]
        if variant == "multimat_code":
            allowed = (allowed & (i_c[:, None, None] != cols[None, :, None])
                       & (i_c[:, None, None] != cols[None, None, :]))
        s = jnp.where(allowed, s, NEG_FILL)
        return (jax.nn.logsumexp(s, axis=(1, 2)), jax.nn.logsumexp(s, axis=(0, 2)),
                jax.nn.logsumexp(s, axis=(0, 1)))

    def body(carry, xs):
        lse1_c, lse2_c, lse3_c = chunk_stats(*xs)
        return (combine_logsumexp(carry[0], lse2_c), combine_logsumexp(carry[1], lse3_c)), lse1_c

    xs = (a_p.reshape(n_chunks, chunk, d), v_p.reshape(n_chunks, chunk), i_p.reshape(n_chunks, chunk))
    # The first chunk seeds the carries (so they have the right type, also inside shard_map).
    lse1_first, lse2, lse3 = chunk_stats(*(x[0] for x in xs))
    if n_chunks == 1:
        return lse1_first[:r], lse2, lse3
    # Rematerialise each chunk in the backward pass: only the O(B) carries are stored.
    rest = jax.tree.map(lambda x: x[1:], xs)
    (lse2, lse3), lse1_rest = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), (lse2, lse3), rest)
    lse1 = jnp.concatenate([lse1_first, lse1_rest.reshape(-1)])
    return lse1[:r], lse2, lse3


def _combine_axes(pos, lse, row_valid, n_valid, variant):
    """Sum over axes of the per-row terms (masked), before dividing by the number of rows.

    ``pos`` and ``lse``: tuples of three ``[R]`` arrays; ``n_valid``: global count of valid rows.
    """
    if variant == "paper":
        terms = sum(-p + l for p, l in zip(pos, lse))
    else:
        weight = 1.0 + 1.5 * (n_valid - 1.0)  # sum of M over one row slice: 1 + 3 (n-1) / 2
        terms = sum(-p + weight * l for p, l in zip(pos, lse))
    return jnp.sum(jnp.where(row_valid, terms, 0.0))


def _finish(total, n_valid, variant):
    scale = 3.0 if variant == "paper" else 1.0
    return jnp.where(n_valid > 0, total / (scale * jnp.maximum(n_valid, 1.0)), 0.0)


def _row_valid(valid, variant):
    n_valid = jnp.sum(valid).astype(jnp.float32)
    if variant == "multimat_code":  # a row needs at least one fully mismatched triple
        valid = valid & (n_valid >= 3)
        n_valid = jnp.where(n_valid >= 3, n_valid, 0.0)
    return valid, n_valid


def tensor_clip(
    a: jax.Array,
    b: jax.Array,
    c: jax.Array,
    temperature,
    present: jax.Array | None = None,
    chunk_size: int | None = None,
    variant: str = "paper",
) -> jax.Array:
    """TensorCLIP loss for three modalities; 0-d. See the module docstring for the formulas.

    Args:
      a, b, c: ``[B, D]`` embeddings (normalised here), row i of each describes material i.
      temperature: scalar tau (fixed or traced).
      present: bool ``[B]``, rows where all three modalities exist; None = all.
      chunk_size: None forms the ``[B, B, B]`` tensor; an int streams over chunks of that many rows
        (memory O(chunk B^2), forward and backward) and gives the same value to float tolerance.
      variant: ``"paper"`` or ``"multimat_code"``.
    """
    _check_variant(variant)
    n = check_rows("tensor_clip", a, b, c)
    valid = as_mask(present, n)
    a, b, c = l2_normalize(a), l2_normalize(b), l2_normalize(c)
    if chunk_size is None:
        return _tensor_clip_naive(a, b, c, temperature, valid, variant)
    rows = jnp.arange(n)
    row_valid, n_valid = _row_valid(valid, variant)
    lse1, lse2, lse3 = row_block_logsumexps(a, valid, rows, b, c, valid, temperature, variant,
                                            chunk_size)
    pos = (positive_terms(a, rows, b, c, valid, temperature, variant),
           positive_terms(b, rows, a, c, valid, temperature, variant),
           positive_terms(c, rows, a, b, valid, temperature, variant))
    total = _combine_axes(pos, (lse1, lse2, lse3), row_valid, n_valid, variant)
    return _finish(total, n_valid, variant)


def _tensor_clip_naive(a, b, c, temperature, valid, variant):
    """Direct B^3 implementation (the reference the chunked path is tested against)."""
    n = a.shape[0]
    s = jnp.einsum("il,jl,kl->ijk", a, b, c) / temperature
    idx = jnp.arange(n)
    i, j, k = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    vol = valid[:, None, None] & valid[None, :, None] & valid[None, None, :]
    row_valid, n_valid = _row_valid(valid, variant)
    total = 0.0
    if variant == "paper":
        diag = jnp.einsum("iii->i", s)
        for others in ((1, 2), (0, 2), (0, 1)):
            lse = masked_logsumexp(s, vol, axis=others)
            total = total + jnp.sum(jnp.where(row_valid, -diag + lse, 0.0))
        return _finish(total, n_valid, variant)
    n_equal = (i == j).astype(jnp.int32) + (i == k) + (j == k)  # 3: all equal, 1: exactly two
    weights = jnp.where(n_equal == 3, 1.0, jnp.where(n_equal == 1, 0.5, 0.0)) * vol
    negatives = (n_equal == 0) & vol
    for axis, others in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
        lse = jnp.expand_dims(masked_logsumexp(s, negatives, axis=others), others)
        per_index = jnp.sum(weights * (-s + lse), axis=others)
        total = total + jnp.sum(jnp.where(row_valid, per_index, 0.0))
    return _finish(total, n_valid, variant)


def tensor_clip_nd(embeddings: Sequence[jax.Array], temperature, present: jax.Array | None = None):
    """Paper-form TensorCLIP for n >= 2 modalities (naive, forms the ``B^n`` tensor); 0-d.

    ``s_{i1..in} = sum_l prod_m ê^m_{i_m l} / tau``; L = (1/n) sum_axes mean over valid rows of
    ``-s_{x..x} + logsumexp`` over the other n-1 indices. For n = 2 this is ``info_nce``; for n = 3
    it equals ``tensor_clip(..., variant="paper")``.
    """
    m = len(embeddings)
    if not 2 <= m <= len(_LETTERS):
        raise ValueError(f"tensor_clip_nd needs 2..{len(_LETTERS)} modalities, got {m}")
    n = check_rows("tensor_clip_nd", *embeddings)
    valid = as_mask(present, n)
    es = [l2_normalize(e) for e in embeddings]
    letters = _LETTERS[:m]
    s = jnp.einsum(",".join(f"{x}z" for x in letters) + "->" + letters, *es) / temperature
    diag = jnp.sum(jnp.prod(jnp.stack(es), axis=0), axis=-1) / temperature
    vol = valid
    for _ in range(m - 1):
        vol = vol[..., None] & valid
    total = 0.0
    for axis in range(m):
        others = tuple(x for x in range(m) if x != axis)
        lse = masked_logsumexp(s, vol, axis=others)
        total = total + jnp.sum(jnp.where(valid, -diag + lse, 0.0))
    n_valid = jnp.sum(valid).astype(jnp.float32)
    return jnp.where(n_valid > 0, total / (m * jnp.maximum(n_valid, 1.0)), 0.0)
