"""Pairwise contrastive objectives: symmetric InfoNCE / CLIP (O1), AllPairsCLIP and AnchoredCLIP (O2).

Shapes: embeddings ``[B, D]`` (any scale: they are L2-normalised here), masks bool ``[B]``,
temperature a scalar (python float or traced array, e.g. from ``temperature_from_log``).

Missing modalities: a row whose mask is False takes no part at all -- neither as an anchor row nor
as a negative column. Invalid logits are filled with a finite large negative number and the
per-row losses are dropped with ``jnp.where``; a pair with no valid row gives exactly 0 and finite
(zero) gradients.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from mmjax.objectives._common import as_mask, check_rows, l2_normalize, masked_logsumexp


def directional_cross_entropy(
    queries: jax.Array,
    keys: jax.Array,
    key_valid: jax.Array,
    positive_logits: jax.Array,
    temperature,
) -> jax.Array:
    """Per-query CE ``-pos + logsumexp_j(q . k_j / tau)`` over valid keys. ``[Q, D] x [K, D] -> [Q]``.

    ``queries`` and ``keys`` must already be unit-norm; ``positive_logits`` ``[Q]`` is the logit of
    each query's own positive (already divided by tau). Building block of the sharded variants,
    where the keys are the all-gathered global batch.
    """
    logits = (queries @ keys.T) / temperature
    return masked_logsumexp(logits, key_valid[None, :], axis=1) - positive_logits


def info_nce_per_row(a: jax.Array, b: jax.Array, temperature, mask: jax.Array | None = None):
    """Per-row symmetric CLIP terms ``0.5 * (CE_row_i + CE_col_i)`` ``[B]`` and the mask ``[B]``."""
    n = check_rows("info_nce", a, b)
    mask = as_mask(mask, n)
    a_hat, b_hat = l2_normalize(a), l2_normalize(b)
    pos = jnp.sum(a_hat * b_hat, axis=-1) / temperature
    ce_rows = directional_cross_entropy(a_hat, b_hat, mask, pos, temperature)  # a_i vs all b_j
    ce_cols = directional_cross_entropy(b_hat, a_hat, mask, pos, temperature)  # b_j vs all a_i
    return 0.5 * (ce_rows + ce_cols), mask


def info_nce(a: jax.Array, b: jax.Array, temperature, mask: jax.Array | None = None) -> jax.Array:
    """Symmetric InfoNCE (CLIP) loss between paired embeddings; 0-d.

    Args:
      a, b: ``[B, D]`` embeddings of two modalities; row i of ``a`` pairs with row i of ``b``.
      temperature: scalar tau > 0 (fixed or traced). logits = â b̂ᵀ / tau.
      mask: bool ``[B]``; rows/columns where False take no part. None = all rows valid.

    Returns:
      ``sum_valid_i 0.5 * (CE over row i + CE over column i) / n_valid``; exactly 0 if no row is valid.
      With one-hot a = b = I_B: ``log(1 + (B - 1) exp(-1 / tau))``.
    """
    per_row, mask = info_nce_per_row(a, b, temperature, mask)
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, per_row, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _present_mask(present: Mapping[str, jax.Array] | None, name: str, n: int) -> jax.Array:
    if present is None or name not in present:
        return jnp.ones((n,), dtype=bool)
    return as_mask(present[name], n)


def pairwise_clip(
    embeddings: Mapping[str, jax.Array],
    present: Mapping[str, jax.Array] | None,
    temperature,
    pairs: Sequence[tuple[str, str]],
) -> jax.Array:
    """Mean of ``info_nce`` over the given modality pairs, each masked by both ``present`` masks.

    A pair with no valid row contributes 0 and is left out of the mean; if no pair has a valid
    row the result is exactly 0. A modality missing from ``present`` counts as present everywhere.
    """
    if not pairs:
        raise ValueError(f"need at least one modality pair, got modalities {sorted(embeddings)}")
    losses, has_rows = [], []
    for m1, m2 in pairs:
        for m in (m1, m2):
            if m not in embeddings:
                raise ValueError(f"modality {m!r} not in embeddings {sorted(embeddings)}")
        n = check_rows(f"pair ({m1}, {m2})", embeddings[m1], embeddings[m2])
        mask = _present_mask(present, m1, n) & _present_mask(present, m2, n)
        losses.append(info_nce(embeddings[m1], embeddings[m2], temperature, mask))
        has_rows.append(jnp.any(mask))
    losses, has_rows = jnp.stack(losses), jnp.stack(has_rows)
    n_pairs = jnp.sum(has_rows)
    total = jnp.sum(jnp.where(has_rows, losses, 0.0))
    return jnp.where(n_pairs > 0, total / jnp.maximum(n_pairs, 1), 0.0)


def all_pairs(modalities: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered pairs in the given order: n(n-1)/2 of them."""
    return list(itertools.combinations(modalities, 2))


def anchored_pairs(modalities: Sequence[str], anchor: str) -> list[tuple[str, str]]:
    """(anchor, m) for every other modality m: n-1 pairs (MatBind hub-and-spoke, MultiMat anchored)."""
    if anchor not in modalities:
        raise ValueError(f"anchor modality {anchor!r} not among {list(modalities)}")
    return [(anchor, m) for m in modalities if m != anchor]


def all_pairs_clip(
    embeddings: Mapping[str, jax.Array],
    present: Mapping[str, jax.Array] | None,
    temperature,
) -> jax.Array:
    """AllPairsCLIP (MultiMat): mean of masked ``info_nce`` over all unordered modality pairs; 0-d.

    ``embeddings``: {modality: [B, D]}; ``present``: {modality: bool [B]}. Pair (m1, m2) uses rows
    where both are present; pairs with no such row are left out of the mean.
    """
    return pairwise_clip(embeddings, present, temperature, all_pairs(list(embeddings)))


def anchored_clip(
    embeddings: Mapping[str, jax.Array],
    present: Mapping[str, jax.Array] | None,
    temperature,
    anchor: str = "crystal",
) -> jax.Array:
    """AnchoredCLIP (MultiMat) / hub-and-spoke InfoNCE (MatBind): mean over pairs (anchor, m); 0-d.

    Same masking rules as ``all_pairs_clip``. (MultiMat's code sums the pairs and MatBind's code
    averages them; we average, as the spec says -- scale the weight in the config for the sum.)
    """
    return pairwise_clip(embeddings, present, temperature, anchored_pairs(list(embeddings), anchor))
