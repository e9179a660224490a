"""Data iterators as the engine sees them, a registry of sources, and a synthetic source.

A data iterator is any Python iterator of *host-local* Batches (`mmjax.data.schema`, every
leaf ``[n_local_devices, B_dev, ...]``) with ``get_state() -> JSON-able dict`` and
``set_state(dict)``; the engine stores the state in checkpoints so a resumed run sees exactly
the batches it would have seen. Train iterators are infinite; eval/predict iterators finite.

``DATA_SOURCES`` maps ``config.data.source`` to ``builder(config, split, input_path=None)``
with split in {"train", "eval", "predict"}; the grain pipeline registers itself here.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

Batch = dict[str, Any]


class SyntheticBatches:
    """Deterministic toy Batches: ``xrd`` [n_local, B, L] and a regression target ``y``.

    Batch k of the *global* stream is drawn from ``np.random.default_rng([seed, k])`` with
    shape [n_devices, B, L]; a process keeps its own device rows, so any process layout sees
    the same global batch. ``y = tanh(x @ w) + 0.1 x_0`` with a fixed ``w``; odd-numbered batches
    have their last slot per device padded (``slot_valid`` False) and ~10 % of labels missing.

    Args:
      n_devices: global device count; batch_per_device: B; length: L.
      process_index, process_count: this process's share of the device axis.
      num_batches: stop after this many batches (None = infinite).
      delay_s: sleep before each batch (simulates a slow input pipeline).
      nan_at_batch: make batch k's inputs NaN (to exercise divergence handling); -1 = never.
    """

    def __init__(self, n_devices: int, batch_per_device: int, length: int, seed: int = 0, *,
                 process_index: int = 0, process_count: int = 1, num_batches: int | None = None,
                 delay_s: float = 0.0, nan_at_batch: int = -1):
        if n_devices % process_count:
            raise ValueError(f"{n_devices} devices do not split over {process_count} processes")
        self.n_devices, self.b, self.length, self.seed = n_devices, batch_per_device, length, seed
        self.n_local = n_devices // process_count
        self.lo = process_index * self.n_local
        self.num_batches, self.delay_s, self.nan_at_batch = num_batches, delay_s, nan_at_batch
        self.w = np.random.default_rng([seed, 2**31 - 1]).normal(size=(length,)).astype(np.float32) / np.sqrt(length)
        self.index = 0

    def __iter__(self) -> Iterator[Batch]:
        return self

    def batch(self, k: int) -> Batch:
        """Host-local batch number `k` (pure function of k)."""
        rng = np.random.default_rng([self.seed, k])
        x = rng.normal(size=(self.n_devices, self.b, self.length)).astype(np.float32)
        y = (np.tanh(x @ self.w) + 0.1 * x[..., 0]).astype(np.float32)
        labelled = rng.random((self.n_devices, self.b)) > 0.1
        valid = np.ones((self.n_devices, self.b), bool)
        if k % 2 == 1:
            valid[:, -1] = False
        if k == self.nan_at_batch:
            x[:] = np.nan
        sl = slice(self.lo, self.lo + self.n_local)
        valid = valid[sl]
        return {
            "slot_valid": valid,
            "present": {"xrd": valid.copy()},
            "xrd": np.where(valid[..., None], x[sl], 0.0).astype(np.float32),
            "targets": {"y": np.where(valid, y[sl], 0.0).astype(np.float32)},
            "target_mask": {"y": labelled[sl] & valid},
        }

    def __next__(self) -> Batch:
        if self.num_batches is not None and self.index >= self.num_batches:
            raise StopIteration
        if self.delay_s:
            time.sleep(self.delay_s)
        out = self.batch(self.index)
        self.index += 1
        return out

    def get_state(self) -> dict:
        return {"next_index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["next_index"])


def synthetic_source(config: ml_collections.ConfigDict, split: str, input_path: str | None = None) -> SyntheticBatches:
    """Builder for ``config.data.source = "synthetic"``: keys batch_per_device, length, eval_batches,
    delay_s, nan_at_batch. Eval uses a different seed and ``eval_batches`` batches."""
    d = config.data
    common = dict(n_devices=jax.device_count(), batch_per_device=d.batch_per_device, length=d.length,
                  process_index=jax.process_index(), process_count=jax.process_count())
    if split == "train":
        return SyntheticBatches(seed=config.seed, delay_s=d.get("delay_s", 0.0),
                                nan_at_batch=d.get("nan_at_batch", -1), **common)
    return SyntheticBatches(seed=config.seed + 1000, num_batches=d.get("eval_batches", 2), **common)


DATA_SOURCES: dict[str, Callable] = {"synthetic": synthetic_source}


def build_iterator(config: ml_collections.ConfigDict, split: str, input_path: str | None = None):
    """Iterator for `split` from the source named by ``config.data.source``."""
    name = config.data.source
    if name not in DATA_SOURCES:
        raise ValueError(f"config.data.source={name!r} is not a registered data source; known: {sorted(DATA_SOURCES)}")
    return DATA_SOURCES[name](config, split, input_path=input_path)


def peek(iterator) -> Batch:
    """The next batch without consuming it (uses get_state / set_state)."""
    state = iterator.get_state()
    batch = next(iterator)
    iterator.set_state(state)
    return batch
