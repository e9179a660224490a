"""Data iterators as the engine sees them, a registry of sources, and a synthetic source.

A data iterator is any Python iterator of *host-local* Batches (`mmjax.data.schema`, every
leaf ``[n_local_devices, B_dev, ...]``) with ``get_state() -> JSON-able dict`` and
``set_state(dict)``; the engine stores the state in checkpoints so a resumed run sees exactly
the batches it would have seen. Train iterators are infinite; eval/predict iterators finite.

``DATA_SOURCES`` maps ``config.data.source`` to ``builder(config, split, input_path=None, *,
workdir=None)`` with split in {"train", "eval", "predict"}. Every name that is not registered
(``"prototypes"``, a path, a source name of `mmjax.data.sources`) goes to `featurized_source`:
the cached featurised dataset (`mmjax.data.cache.prepare_dataset`) -> train / eval / test split
(`mmjax.data.spec.split_indices`) -> `mmjax.data.pipeline.make_batches` with graph budgets from
the manifest -> this process's device rows (`HostBatches`), fed from the host or from the
devices (`device_feed`).

Batch conventions added here: classification targets are 0-based class indices (space group
1..230 is stored and batched as 0..229); regression targets are normalised with the manifest's
statistics when ``config.data.normalize_targets`` (`mmjax.data.cache.target_statistics` gives the
table that undoes it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from mmjax.data.cache import prepare_dataset, training_target_stats
from mmjax.data.pipeline import make_batches
from mmjax.data.spec import (CLASS_LABEL_OFFSETS, SPLITS, check_modalities, check_target_shapes, config_modalities,
                             config_option, config_targets, split_indices, stored_modalities)
from mmjax.train.prefetch import batch_put_fn

Batch = dict[str, Any]
log = logging.getLogger(__name__)


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


def synthetic_source(config: ml_collections.ConfigDict, split: str, input_path: str | None = None,
                     **_unused) -> SyntheticBatches:
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


def build_iterator(config: ml_collections.ConfigDict, split: str, input_path: str | None = None, *,
                   workdir: str | None = None):
    """Iterator for `split` from the source named by ``config.data.source`` (registered builders,
    else `featurized_source`); `workdir` holds the featurised cache unless ``config.data.data_dir``."""
    builder = DATA_SOURCES.get(config.data.source, featurized_source)
    return builder(config, split, input_path=input_path, workdir=workdir)


def peek(iterator) -> Batch:
    """The next batch without consuming it (uses get_state / set_state)."""
    state = iterator.get_state()
    batch = next(iterator)
    iterator.set_state(state)
    return batch


class HostBatches:
    """This process's rows of a global `mmjax.data.pipeline.BatchIterator`.

    The pipeline packs ``n_devices`` (global) micro-batches per step; every process walks the
    same deterministic stream and keeps its devices' rows, so any process layout sees the same
    global batch. Classification targets are shifted to 0-based class indices
    (`CLASS_LABEL_OFFSETS`). ``last_ids()`` gives the material ids of the last batch
    ``<U [n_devices, B_dev]`` (global, "" on padding slots).
    """

    def __init__(self, inner, ids: np.ndarray, lo: int, n_local: int):
        self.inner, self.ids, self.lo, self.n_local = inner, ids, lo, n_local
        self.dataset = inner.dataset

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        return self._local(shift_class_labels(next(self.inner)))

    def _local(self, batch: Batch) -> Batch:
        """This process's device rows of a global batch."""
        if self.n_local == batch["slot_valid" if "slot_valid" in batch else "record_index"].shape[0]:
            return batch
        sl = slice(self.lo, self.lo + self.n_local)
        return jax.tree.map(lambda x: x[sl], batch)

    def device_feed(self, max_bytes: int | None = None):
        """``(index_iterator, store)`` for device-resident batches, or None if the store would
        exceed `max_bytes` (estimate; None = no limit).

        ``store.put_fn(mesh)(next(index_iterator))`` is the Batch ``batch_put_fn(mesh)(next(self))``
        would give (same stream, same state, bit for bit; `mmjax.data.device_store`); only record
        indices are read per step. The index iterator shares this iterator's position."""
        inner = self.inner
        if max_bytes is not None and inner.device_store_nbytes() > max_bytes:
            return None
        return _IndexBatches(self), inner.device_store(finalize=shift_class_labels)

    def last_ids(self) -> np.ndarray:
        idx = self.inner.last_indices
        out = np.full(idx.shape, "", dtype=self.ids.dtype if len(self.ids) else "<U1")
        out[idx >= 0] = self.ids[idx[idx >= 0]]
        return out

    def get_state(self) -> dict:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)


def shift_class_labels(batch: Batch) -> Batch:
    """Class targets stored 1-based (`CLASS_LABEL_OFFSETS`) -> 0-based (0 where unlabelled), in place."""
    t = batch.get("targets", {})
    for name, off in CLASS_LABEL_OFFSETS.items():
        if off and name in t and t[name].dtype.kind in "iu":
            t[name] = np.where(batch["target_mask"][name], t[name] - off, 0).astype(np.int32)
    return batch


class _IndexBatches:
    """`HostBatches` yielding ``{"record_index": int32 [n_local_dev, B_dev]}`` (see ``device_feed``)."""

    def __init__(self, host: HostBatches):
        self.host = host

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        return self.host._local(self.host.inner.next_indices())

    def get_state(self) -> dict:
        return self.host.get_state()

    def set_state(self, state: dict) -> None:
        self.host.set_state(state)


def device_feed(iterator, config, mesh):
    """``(source, put_fn, store)``: what the training loop feeds from.

    Device-resident data (``config.data.device_resident`` "on", or "auto" and the store at most
    ``config.data.device_resident_max_mb`` MiB per device; featurised sources only): `source`
    yields ``{"record_index": [n_local_dev, B_dev]}``, `put_fn` readies it for the step and
    `store` is the `mmjax.data.device_store.DeviceStore` to build the step with
    (`mmjax.train.step.make_train_step`), which gathers the Batch on the devices. Otherwise
    ``(iterator, batch_put_fn(mesh), None)``: host-assembled Batches. Both train on the same
    Batches."""

    mode = str(config_option(config.data, "device_resident", "off"))
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"config.data.device_resident={mode!r}; expected 'auto', 'on' or 'off'")
    if mode != "off":
        if not hasattr(iterator, "device_feed"):
            if mode == "on":
                raise ValueError(f"config.data.device_resident='on' but the data source "
                                 f"{config.data.source!r} has no device-resident mode (featurised stores do)")
        else:
            limit = None if mode == "on" else int(float(config_option(config.data, "device_resident_max_mb", 1024)) * 2**20)
            feed = iterator.device_feed(limit)
            if feed is not None:
                source, store = feed
                log.info("device-resident batches: %s records on every device (%.1f MiB)", len(iterator.dataset),
                         store.nbytes / 2**20)
                return source, store.index_put_fn(mesh), store
            log.info("device-resident batches off: the store would exceed %s MiB per device", limit / 2**20)
    return iterator, batch_put_fn(mesh), None


def featurized_source(config: ml_collections.ConfigDict, split: str, input_path: str | None = None, *,
                      workdir: str | None = None, rows=None) -> HostBatches:
    """Builder for every ``config.data.source`` except "synthetic" (see the module docstring).

    split: "train" (shuffled, endless), "eval" (validation part, one pass), "test", "all", or
    "predict" (`input_path` when given, else ``config.data.predict_split``; one pass, in order).
    Batches hold ``config.data.batch_per_device`` slots per device, graph budgets from the
    manifest (``config.data.budget_percentile``), the modalities of ``config.data.modalities``
    (a missing one is named in the error) and the targets of `config_targets`. Regression targets
    are normalised with the manifest's mean / std when ``config.data.normalize_targets``; for a
    predict `input_path`, with the training data's (`training_target_stats`), and a target the
    input has no label for is batched as unlabelled.
    `rows` (optional): ``rows(n_materials) -> dataset indices`` used instead of the split's
    (e.g. a training subset for a learning curve); batching stays that of `split`.
    """

    if split not in SPLITS + ("predict",):
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + ('predict',)}")
    use_input = split == "predict" and input_path
    ds = prepare_dataset(config, workdir, input_path if use_input else None)
    modalities = config_modalities(config) or stored_modalities(ds)
    check_modalities(ds, modalities, f"system {config.system.name!r}")
    targets = list(config_targets(config))
    check_target_shapes(ds.manifest.schema, config, targets)
    fixed_stats = None
    if use_input:
        have = {k.split("/", 1)[1] for k in ds.manifest.schema if k.startswith(("target/", "label/"))}
        # an input's labels are batched in the trained model's units (its targets.json), not
        # normalised with the input's own mean / std; a target the input lacks is unlabelled
        fixed_stats = training_target_stats(config, workdir) if workdir else {}
        targets = [t for t in targets if t in have or t in fixed_stats]
    else:
        part = split if split != "predict" else config_option(config.data, "predict_split", "test")
        if part not in SPLITS:
            raise ValueError(f"config.data.predict_split={part!r}; expected one of {SPLITS}")
        idx = split_indices(config, len(ds))[part] if rows is None else np.asarray(rows(len(ds)))
        if len(idx) == 0:
            raise ValueError(f"the {part!r} split of {ds.root} is empty ({len(ds)} materials, split "
                             f"{tuple(config_option(config.data, 'split', ()))}); use more data or another split")
        ds = ds.subset(idx)
    n_dev = jax.device_count()
    n_local = n_dev // jax.process_count()
    bpd = int(config.data.batch_per_device)
    train = split == "train"
    it = make_batches(ds, bpd * n_dev, seed=int(config.seed), shuffle=train, num_epochs=None if train else 1,
                      devices=n_dev, modalities=modalities, targets=targets,
                      normalize_targets=bool(config_option(config.data, "normalize_targets", False)),
                      percentile=float(config_option(config.data, "budget_percentile", 95.0)), target_stats=fixed_stats)
    return HostBatches(it, np.asarray(ds.ids), jax.process_index() * n_local, n_local)
