"""Token packing: run the position-wise layers of a set encoder on the real tokens only.

A composition batch is padded to ``S`` element slots per material, but most materials have far
fewer elements (AFLOW band gap: 8 slots, 3.1 elements on average), and in CrabNet every
position-wise layer (the q/k/v/out projections, the FFN, the LayerNorms, the per-element head) costs
the same for a padding slot as for an element. Packing gathers the real tokens of a batch into
``[T, D]`` (``T`` a static token budget) for those layers and scatters them back to ``[B, S, ...]``
only where rows meet (the attention core, the pooling). Padding slots never influence a real token
(they are masked as keys and zeroed before pooling), so the packed computation gives the same
values and gradients as the padded one (up to float summation order; tests/systems/test_crabnet_packing.py).

``token_index`` [T] int32: flat indices ``b * S + s`` of the real tokens in ascending order, then
``B * S`` (one past the end) for every unused budget entry. A batch with more real tokens than
``T`` does not fit; callers check ``fits`` and take the padded path then (`packed_or_padded`), so
an over-budget batch is never truncated.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def token_budget(batch: int, slots: int, fraction: float) -> int:
    """Static budget ``T`` for a ``[batch, slots]`` mask: ``fraction`` of the slots, rounded up to a
    multiple of 8, at least 1 and at most ``batch * slots``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"packed token fraction must be in (0, 1], got {fraction}")
    total = int(batch) * int(slots)
    return max(1, min(total, int(math.ceil(fraction * total / 8.0)) * 8))


def pack_index(mask, budget: int):
    """``(token_index [budget] int32, fits bool [])`` for ``mask`` bool [B, S] (see module doc)."""
    b, s = mask.shape
    flat = mask.reshape(-1).astype(bool)
    index = jnp.nonzero(flat, size=int(budget), fill_value=b * s)[0].astype(jnp.int32)
    fits = jnp.sum(flat, dtype=jnp.int32) <= int(budget)
    return index, fits


def pack(x, token_index):
    """``x`` [B, S, ...] -> [T, ...]: the rows ``token_index`` names, zeros for unused entries."""
    flat = x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
    return jnp.take(flat, token_index, axis=0, mode="fill", fill_value=0)


def unpack(xp, token_index, batch: int, slots: int):
    """``xp`` [T, ...] -> [B, S, ...]: packed rows back to their slots, zeros in every other slot."""
    out = jnp.zeros((batch * slots,) + xp.shape[1:], xp.dtype)
    out = out.at[token_index].set(xp, mode="drop", indices_are_sorted=True)  # fill entries repeat B * S: not unique
    return out.reshape((batch, slots) + xp.shape[1:])


def packed_or_padded(mask, fraction: float, packed: Callable, padded: Callable):
    """``packed(token_index)`` when the real tokens of ``mask`` [B, S] fit ``fraction`` of the
    slots, else ``padded()`` (both traced, one executed: `jax.lax.cond`); ``fraction`` 0 or a
    budget of every slot = always ``padded()``. The two must return the same structure."""
    if not fraction:
        return padded()
    budget = token_budget(mask.shape[0], mask.shape[1], fraction)
    if budget >= mask.shape[0] * mask.shape[1]:
        return padded()
    index, fits = pack_index(mask, budget)
    return jax.lax.cond(fits, lambda: packed(index), padded)


def auto_fraction(counts, slots: int, batch: int, sigmas: float = 5.0, most: float = 0.9) -> float:
    """A packed-token fraction for a dataset whose materials have ``counts`` real tokens each (e.g.
    distinct elements) in ``slots`` slots, at ``batch`` materials per step: the mean token count of
    a random batch plus ``sigmas`` standard deviations (sampling with replacement), as a fraction of
    the slots; 0.0 (padded) when that is above ``most`` (packing would save little). A batch above
    the budget still runs padded (`packed_or_padded`), so this sets only how often packing pays."""
    c = np.asarray(counts, np.float64)
    if c.size == 0 or slots < 1 or batch < 1:
        return 0.0
    need = (c.mean() + sigmas * c.std() / math.sqrt(batch)) / float(slots)
    return 0.0 if need > most else float(min(1.0, need))
