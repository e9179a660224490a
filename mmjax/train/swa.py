"""Stochastic weight averaging as CrabNet does it (``crabnet/utils/optim.py``, class ``SWA`` in
manual mode, driven by ``Model.train``), on parameter pytrees.

CrabNet evaluates the validation MAE after every batch of each "SWA epoch" (every second epoch
from the second on, when the cyclic learning rate reaches its minimum) and calls
``update_swa(mae)``:

1. ``mae < 0.98 * maximum``: the average is reset and restarted from the current weights
   (``n_avg`` 0 -> 1), and ``maximum = mae``;
2. ``mae < minimum``: ``minimum = mae``;
3. ``mae <= 1.01 * minimum``: the current weights are added to the average and the update counts
   as a minimum found.

Adding weights w: ``buf += (w - buf) * (1 / (n_avg + 1)) ** (1 / 3)``, ``n_avg += 1`` (CrabNet's
cube-root "virtual decay", not a plain mean). An SWA epoch in which no batch found a minimum counts
as discarded; training stops after ``discard_n`` (3) discarded epochs. The final model is the
averaged weights (``swap_swa_sgd``), or the last weights when no average was ever taken.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


@jax.jit
def _add(buffer: PyTree, params: PyTree, decay: jax.Array) -> PyTree:
    return jax.tree.map(lambda b, p: b + (p.astype(b.dtype) - b) * decay, buffer, params)


class CrabNetSWA:
    """The running state of CrabNet's SWA (host thresholds, averaged weights on the devices).

    ``update(params, mae) -> bool`` applies the rule above and returns ``minimum_found``;
    ``end_epoch(found_any)`` counts a discarded SWA epoch; ``stop`` is True after ``discard_n``;
    ``averaged(params)`` is the model to use (the average, or ``params`` if none was taken).
    """

    def __init__(self, discard_n: int = 3):
        self.discard_n = int(discard_n)
        self.maximum_mae = 1e9
        self.minimum_mae = 1e9
        self.discard_count = 0
        self.n_avg = 0
        self.buffer: PyTree | None = None
        self.maes: list[float] = []

    def _add(self, params: PyTree) -> None:
        decay = jnp.asarray((1.0 / float(self.n_avg + 1)) ** (1.0 / 3.0), jnp.float32)
        if self.buffer is None:
            self.buffer = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        self.buffer = _add(self.buffer, params, decay)
        self.n_avg += 1

    def update(self, params: PyTree, mae: float) -> bool:
        mae = float(mae)
        self.maes.append(mae)
        if mae < 0.98 * self.maximum_mae:
            self.buffer, self.n_avg = None, 0
            self._add(params)
            self.maximum_mae = mae
        if mae < self.minimum_mae:
            self.minimum_mae = mae
        if mae <= 1.01 * self.minimum_mae:
            self._add(params)
            return True
        return False

    def end_epoch(self, found_any: bool) -> None:
        if not found_any:
            self.discard_count += 1

    @property
    def stop(self) -> bool:
        return self.discard_count >= self.discard_n

    def averaged(self, params: PyTree) -> PyTree:
        if self.buffer is None:
            return params
        return jax.tree.map(lambda b, p: b.astype(p.dtype), self.buffer, params)
