"""Resumable iteration over a stored dataset into fixed-shape ``Batch`` pytrees.

Order: a fresh deterministic permutation per epoch (numpy, or grain's
``MapDataset.range(n).shuffle(seed).repeat()`` with ``order="grain"``), read as one stream of
dataset indices across epochs. The store's ``Dataset`` is itself a valid
``grain.MapDataset.source``. Packing walks the stream: each device micro-batch takes the next
materials while it has a free slot and the material's graph fits the node/edge budget; a
material that does not fit starts the next micro-batch (it is carried, never dropped). The iterator state is just the stream position, so
``get_state()`` / ``set_state()`` reproduce the following batches exactly.

Reading: each batch is assembled column-wise (`ColumnGather`: one fancy index per memory-mapped
column and chunk, `BatchAssembler.assemble_indices`), equal leaf for leaf to a plain per-record
assembly (the tests' reference, ``tests/reference_assembly.py``).

Every leaf has a leading device axis ``[n_devices, B / n_devices, ...]`` (see
:mod:`mmjax.data.schema`); each device's graphs are packed into the same budget, so all
batches of a run have identical shapes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data import modalities as registry
from mmjax.data.budgets import GraphBudget, budgets_from_manifest
from mmjax.data.device_store import DeviceStore, estimate_nbytes
from mmjax.data.material import RecordError
from mmjax.data.modalities.base import Slots
from mmjax.data.normalise import normalise, table_from_manifest, target_moments
from mmjax.data.gather import ColumnGather
from mmjax.data.order import IndexStream
from mmjax.data.store import Dataset

STATE_VERSION = 1



class BatchAssembler:
    """Turns per-device groups of records into one Batch (numpy, schema.py layout, device axis).

    modalities: Batch modalities to emit (subset of those the dataset has).
    targets: names; "target/<name>" -> float32 regression ([D, B], or [D, B, d] for a vector
        target), "label/<name>" -> int32 class.
    normalize_targets: regression targets become (y - mean) / std (manifest statistics; per
        component for a vector target; `mmjax.data.normalise`).
    target_stats: a normalisation table (`mmjax.data.normalise`, the form of a trained model's
        ``targets.json``): these targets use it instead of this dataset's statistics (labels of
        new inputs in the units the model was trained in; a benchmark fit's training rows), and
        one this dataset lacks is batched as unlabelled everywhere.
    Missing targets are 0 with ``target_mask`` False (never NaN in a batch).
    """

    def __init__(self, manifest, batch_size: int, n_devices: int, budget: GraphBudget | None,
                 modalities: Sequence[str], targets: Sequence[str], normalize_targets: bool = False,
                 max_elements: int | None = None, target_stats: dict | None = None):
        if batch_size % n_devices:
            raise ValueError(f"batch_size {batch_size} is not divisible by {n_devices} devices")
        self.schema = manifest.schema
        self.n_dev = n_devices
        self.slots = batch_size // n_devices
        self.budget = budget
        self.modalities = tuple(modalities)
        self.edge_extra: list[str] = []  # per-dataset settings the modalities' setup hooks fill
        self.max_elements = max_elements
        self.dos_grid = None
        for m in self.modalities:
            registry.get(m).setup(self, manifest)
        fixed = dict(target_stats or {})
        table = table_from_manifest(manifest, [n for n in targets if n not in fixed], normalize_targets)
        self.targets = []
        for name in targets:
            st = fixed.get(name) or table[name]
            regression = st["kind"] == "regression"
            shape = tuple(st.get("shape", ())) if regression else ()
            key = f"target/{name}" if regression else f"label/{name}"
            if name in fixed:  # another dataset's normalisation (a model's training data, its targets.json)
                if key in self.schema and tuple(self.schema[key]["shape"]) != shape:
                    raise ValueError(f"{key} is {list(self.schema[key]['shape'])} per record here, "
                                     f"{list(shape)} in the training data")
                key = key if key in self.schema else None  # not in this dataset: every slot unlabelled
            mean, std = target_moments(st, shape) if regression else (0.0, 1.0)
            self.targets.append((name, key, regression, mean, std, shape))
        self.keys = self._needed_keys()

    def _needed_keys(self) -> list[str]:
        keys = [k for m in self.modalities for k in registry.get(m).columns(self)]
        keys += [t[1] for t in self.targets if t[1] is not None]
        return keys

    @staticmethod
    def dense_dtype(modality: str):
        """Batch dtype of a dense modality (float32 unless a registered one declares another)."""
        return registry.get(modality).dtype

    def assemble_indices(self, gather: ColumnGather, groups: list[list[int]]) -> dict:
        """The Batch of the records ``groups[d]`` (dataset indices) on each device d, read
        column-wise with `gather` (vectorised over all slots of all devices); equal leaf for leaf to
        the plain per-record assembly (``tests/reference_assembly.py``)."""
        D, B = self.n_dev, self.slots
        lens = np.fromiter((len(g) for g in groups), np.int64, len(groups))
        if len(groups) != D or (lens > B).any():
            raise ValueError(f"expected {D} device groups of at most {B} records, got sizes {lens.tolist()}")
        idx = np.fromiter((i for g in groups for i in g), np.int64, int(lens.sum()))
        dev = np.repeat(np.arange(D), lens)
        slot = np.arange(len(idx)) - np.repeat(np.cumsum(lens) - lens, lens)
        batch: dict[str, Any] = {"slot_valid": np.zeros((D, B), bool), "present": {}}
        batch["slot_valid"][dev, slot] = True
        cache: dict[str, tuple] = {}
        plan = gather.plan(idx)

        def fixed(key):
            if key not in cache:
                cache[key] = gather.fixed(key, plan)
            return cache[key]

        def ragged(key):
            if key not in cache:
                cache[key] = gather.ragged(key, plan)
            return cache[key]

        slots = Slots(D, B, dev, slot, lens, fixed, ragged)
        for m in self.modalities:
            modality = registry.get(m)
            pres = batch["present"][m] = np.zeros((D, B), bool)
            pres[dev, slot] = (ragged if modality.ragged else fixed)(modality.presence_key)[0]
        for m in self.modalities:
            batch[m] = registry.get(m).assemble(self, slots)
        if self.targets:
            batch["targets"], batch["target_mask"] = {}, {}
            for name, key, regression, mean, std, shape in self.targets:
                vals = np.zeros((D, B, *shape), np.float32 if regression else np.int32)
                ok = np.zeros((D, B, *shape), bool)
                if key is not None:
                    present, values = fixed(key)
                    vals[dev, slot] = values.reshape(len(idx), *shape)
                    ok[dev, slot] = present.reshape(len(idx), *[1] * len(shape))
                if regression:
                    vals, ok = normalise(vals, ok, mean, std)
                batch["targets"][name], batch["target_mask"][name] = vals, ok
        return batch


class BatchIterator:
    """Iterator of Batch dicts with ``get_state()`` / ``set_state()`` (small JSON-able dicts).

    ``last_indices``: int64 [n_devices, B / n_devices] dataset indices of the last batch's
    slots (-1 for padding slots), to map outputs back to ``dataset.ids``.
    """

    def __init__(self, dataset: Dataset, assembler: BatchAssembler, *, seed: int, shuffle: bool,
                 num_epochs: int | None, drop_remainder: bool, order: str = "numpy"):
        self.dataset = dataset
        self.assembler = assembler
        self.seed, self.shuffle, self.num_epochs = int(seed), bool(shuffle), num_epochs
        self.drop_remainder = drop_remainder
        self.order = IndexStream(len(dataset), seed=seed, shuffle=shuffle, num_epochs=num_epochs, order=order)
        self.stream_length = len(self.order)
        nodes, edges = dataset.graph_sizes()
        self._nodes, self._edges = nodes, edges
        self.position = 0
        self.batches = 0
        self.last_indices = None
        self._gather = ColumnGather(dataset)

    def __iter__(self):
        return self

    def get_state(self) -> dict:
        return {"version": STATE_VERSION, "position": int(self.position), "batches": int(self.batches),
                "seed": self.seed, "shuffle": self.shuffle, "order": self.order.order,
                "num_records": len(self.dataset)}

    def set_state(self, state: dict) -> None:
        mine = self.get_state()
        for key in ("version", "seed", "shuffle", "order", "num_records"):
            if state.get(key) != mine[key]:
                raise ValueError(f"iterator state {key}={state.get(key)!r} does not match this pipeline ({mine[key]!r})")
        position = int(state["position"])
        if not 0 <= position <= self.stream_length:
            raise ValueError(f"iterator state position {position} is outside the stream of {self.stream_length}")
        self.position, self.batches = position, int(state.get("batches", 0))

    def _take_micro_batch(self, crystal: bool) -> tuple[list[int], bool]:
        """Indices for one device micro-batch; the flag says the stream ran out while filling it.

        Takes the next stream positions while a slot is free and the running node / edge totals fit
        the budget (vectorised: one cumulative sum over the candidates); the first material that does
        not fit is carried to the next micro-batch, one that alone exceeds the budget is an error.
        """
        budget, slots = self.assembler.budget, self.assembler.slots
        idx = self.order.take(self.position, self.position + slots)
        k = len(idx)
        carried = False
        if crystal and k:
            nn, ne = self._nodes[idx], self._edges[idx]
            fit = (np.cumsum(nn) <= budget.n_node - 1) & (np.cumsum(ne) <= budget.n_edge)
            if not fit.all():
                k, carried = int(np.argmin(fit)), True
                if not budget.fits(int(nn[k]), int(ne[k])):
                    self.position += k
                    raise RecordError(str(self.dataset.ids[idx[k]]),
                                      f"has {int(nn[k])} nodes / {int(ne[k])} edges, more than the budget {budget} "
                                      "holds; raise the budget")
        self.position += k
        return idx[:k].tolist(), (not carried and k < slots)

    def _next_groups(self) -> list[list[int]]:
        """The next batch's dataset indices per device (advances the stream, sets ``last_indices``)."""
        crystal = any(registry.get(m).graph_budget for m in self.assembler.modalities)
        start = self.position
        groups, ran_out = [], False
        for _ in range(self.assembler.n_dev):
            idx, end = self._take_micro_batch(crystal)
            groups.append(idx)
            ran_out |= end
        if not any(groups) or (ran_out and self.drop_remainder):
            self.position = start if not any(groups) else self.position
            raise StopIteration
        last = np.full((self.assembler.n_dev, self.assembler.slots), -1, np.int64)
        for d, g in enumerate(groups):
            last[d, :len(g)] = g
        self.last_indices = last
        self.batches += 1
        return groups

    def __next__(self) -> dict:
        return self.assembler.assemble_indices(self._gather, self._next_groups())

    def next_indices(self) -> dict:
        """The next batch as record indices only: ``{"record_index": int32 [n_dev, B_dev]}`` (-1 =
        empty slot), for `mmjax.data.device_store.DeviceStore` (same stream and state as ``__next__``)."""
        self._next_groups()
        return {"record_index": self.last_indices.astype(np.int32)}

    def device_store(self, finalize=None):
        """A `mmjax.data.device_store.DeviceStore` of every record of this iterator's dataset,
        making the Batches this iterator makes (``finalize``: host post-processing of a Batch)."""

        return DeviceStore.build(self.assembler, self._gather, len(self.dataset),
                                 finalize=finalize)

    def device_store_nbytes(self) -> int:
        """Size estimate (bytes) of `device_store` without building it."""

        return estimate_nbytes(self.assembler, self.dataset)


def check_dataset_budget(dataset: Dataset, budget: GraphBudget) -> None:
    """Raise ``RecordError`` naming the first material of ``dataset`` that alone exceeds ``budget``."""
    nodes, edges = dataset.graph_sizes()
    too_big = np.nonzero((nodes > budget.n_node - 1) | (edges > budget.n_edge))[0]
    if too_big.size:
        i = int(too_big[np.argmax(edges[too_big])])
        raise RecordError(str(dataset.ids[i]), f"has {nodes[i]} graph nodes / {edges[i]} edges, more than the "
                                               f"budget {budget} holds ({too_big.size} such materials); "
                                               "raise the budget")


def make_batches(
    dataset: Dataset,
    batch_size: int,
    budgets: GraphBudget | None = None,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    drop_remainder: bool = False,
    devices: int | Sequence[Any] = 1,
    modalities: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    normalize_targets: bool = False,
    max_elements: int | None = None,
    percentile: float | None = 95.0,
    order: str = "numpy",
    target_stats: dict | None = None,
) -> BatchIterator:
    """Batches of ``batch_size`` material slots (global, split over ``devices``) from ``dataset``.

    budgets: per-device graph budget; default ``budgets_from_manifest(manifest, batch_size /
        n_devices, percentile)``. Raises ``RecordError`` naming the largest material if it alone
        does not fit.
    num_epochs: None = repeat forever; the stream runs across epoch boundaries.
    drop_remainder: drop the final batch if the stream ran out while filling it (otherwise
        its empty slots are padding with ``slot_valid`` False).
    devices: a number or a list of devices (only its length is used).
    modalities: Batch modalities (default: every modality the dataset stores).
    targets: target / label names (default: all "target/*" and "label/*" columns).
    target_stats: a trained model's target normalisation (`BatchAssembler`).
    order: "numpy" (per-epoch permutation array) or "grain" (grain's index shuffle); see IndexStream.
    """
    n_dev = devices if isinstance(devices, int) else len(devices)
    if n_dev < 1 or batch_size < 1 or batch_size % n_dev:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the {n_dev} devices")
    m = dataset.manifest
    available = [mod for mod in registry.known() if registry.presence_key(mod) in m.schema]
    if modalities is None:
        modalities = available
    missing = [mod for mod in modalities if mod not in available]
    if missing:
        raise ValueError(f"modalities {missing} are not stored in this dataset (it has {available})")
    if targets is None:
        targets = sorted({k.split("/", 1)[1] for k in m.schema if k.startswith(("target/", "label/"))})
    if any(registry.get(mod).graph_budget for mod in modalities):
        if budgets is None:
            budgets = budgets_from_manifest(m, batch_size // n_dev, percentile=percentile)
        check_dataset_budget(dataset, budgets)
    assembler = BatchAssembler(m, batch_size, n_dev, budgets, modalities, targets, normalize_targets, max_elements,
                               target_stats)
    return BatchIterator(dataset, assembler, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                         drop_remainder=drop_remainder, order=order)
