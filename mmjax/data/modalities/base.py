"""What a modality declares to the data layer (`Modality`), and the helpers its featuriser uses.

A modality object is stateless; the hooks get the objects they work on.

Featurisation and the store:
* ``spec_switch(on, features)`` / ``enabled(spec)``: the `FeatureSpec` fields that ask for it.
* ``add_features(material, spec, rec)``: add this modality's record keys (`mmjax.data.schema`) to the
  record dict ``rec`` when the material has it; raise `RecordError` naming the material for a bad
  value. ``record_dtypes``: the stored dtype of each of those keys.
* ``grids(spec, schema)``: grids every record shares, for the manifest (the DOS energies).
* ``scale_keys`` / ``scale_masks``: float keys whose value moments the store records (and the mask
  of the values counted); ``padding(dataset, ids)``: per-material size statistics.
Batches:
* ``setup(assembler, manifest)``: per-dataset batch settings on the `BatchAssembler` (the DOS grid,
  composition slots, optional edge columns); ``columns(assembler)``: the record columns it reads.
* ``assemble(assembler, slots)``: the modality's Batch leaf from column reads (`Slots`);
  ``graph_budget``: its graphs are packed into the node / edge budget; ``shared_leaves``: leaves
  equal for every slot; ``row_nbytes``: bytes per slot (device-store estimate).
* ``encoder_inputs``: the dict leaf's keys in the order an encoder takes them.

Presence: ``presence_key`` is the record key whose presence marks the modality (read from a
ragged column when ``ragged``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import numpy as np

from mmjax.data.material import RecordError

WARNINGS_KEY = "_warnings"  # a record's warnings: popped before writing, listed in manifest.warnings
_FEATURE_MODULES = ("graph", "xrd", "composition", "symmetry", "dos", "density", "charge_density", "text")


def featurizer(name: str) -> Callable:
    """The featuriser function ``name`` from ``mmjax.data.features`` (imported when first asked for:
    the package pulls in pymatgen)."""
    pkg = importlib.import_module("mmjax.data.features")
    if hasattr(pkg, name):
        return getattr(pkg, name)
    for mod in _FEATURE_MODULES:
        try:
            module = importlib.import_module(f"mmjax.data.features.{mod}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"featuriser {name!r} not found in mmjax.data.features")


def run_featurizer(record_id: str, what: str, fn: Callable, /, *args, **kwargs):
    """Call one featuriser; any failure becomes a RecordError naming the record and the step."""
    try:
        return fn(*args, **kwargs)
    except RecordError as err:
        if err.record_id == record_id:
            raise
        raise RecordError(record_id, f"{what}: {err.reason}") from err
    except Exception as exc:  # noqa: BLE001 - every featuriser failure is a per-record error
        raise RecordError(record_id, f"{what} failed: {type(exc).__name__}: {exc}") from exc


def finite(record_id: str, value, dtype, what: str) -> np.ndarray:
    """``value`` as ``dtype``; RecordError naming the record when any value is not finite."""
    arr = np.asarray(value, dtype)
    if not np.isfinite(arr).all():
        raise RecordError(record_id, f"{what} has non-finite values")
    return arr


PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0)


def size_summary(sizes: np.ndarray, ids: np.ndarray) -> dict:
    """The manifest's ``padding`` entry of per-material sizes: count, mean, max (and its id), percentiles."""
    if sizes.size == 0:
        return {"count": 0, "mean": 0.0, "max": 0, "max_id": None, "percentiles": {}}
    j = int(np.argmax(sizes))
    return {"count": int(sizes.size), "mean": float(sizes.mean()), "max": int(sizes[j]), "max_id": str(ids[j]),
            "percentiles": {str(p): float(np.percentile(sizes, p)) for p in PERCENTILES}}


class Slots(NamedTuple):
    """One batch's records, for `Modality.assemble`: ``n_dev`` devices of ``n_slots`` slots;
    record r sits on device ``dev[r]``, slot ``slot[r]`` (records in device-major order, ``lens[d]``
    on device d). ``fixed(key)`` -> (present bool [R], values [R, *shape]) and ``ragged(key)`` ->
    (present bool [R], lengths int [R], concatenated values) read the columns (cached per batch)."""

    n_dev: int
    n_slots: int
    dev: np.ndarray
    slot: np.ndarray
    lens: np.ndarray
    fixed: Callable
    ragged: Callable


class Modality:
    """A modality's data-layer behaviour (module docstring). Subclasses set ``name`` and
    ``presence_key`` and override the hooks they need."""

    name: str                 # set by each subclass
    presence_key: str
    ragged: bool = False      # presence read from a ragged column
    dense_key: str = ""       # one fixed-shape array per material under this record key ("" = not dense)
    dtype: Any = np.float32   # batched dtype of a dense modality
    scale_keys: tuple = ()    # float record keys whose value moments the store records
    record_dtypes: dict = {}  # the stored dtype of each record key it writes
    scale_masks: dict = {}    # scale key -> the bool record key of the values its moments count
    graph_budget: bool = False  # batches pack its graphs into a node / edge budget
    shared_leaves: tuple = ()   # Batch leaves equal for every slot (the device store keeps them once)
    encoder_inputs: tuple = ()  # a dict leaf's keys, in the order an encoder takes them ((): the array)
    from_structure: bool = False  # computed from the structure alone (featurised before the symmetry labels)

    def enabled(self, spec) -> bool:
        """Whether the `FeatureSpec` asks for this modality (its switch ``spec.<name>``)."""
        return bool(getattr(spec, self.name))

    def spec_switch(self, on: bool, features: dict) -> dict:
        """The `FeatureSpec` fields that turn this modality on or off (``config.data.features``:
        ``features``)."""
        return {self.name: on}

    def add_features(self, material, spec, rec: dict) -> None:
        """Add this modality's record keys for ``material`` to ``rec`` (module docstring)."""
        raise NotImplementedError

    def grids(self, spec, schema: dict) -> dict:
        """Fixed grids shared by every record, for the manifest (``{"dos/energies": [...]}``), once
        the dataset's records are written with record keys ``schema``."""
        return {}

    def padding(self, dataset, ids) -> dict:
        """Per-material size statistics (`size_summary`) for the manifest's ``padding``, of a
        dataset that stores this modality; ``ids`` are its material ids."""
        return {}

    def setup(self, assembler, manifest) -> None:
        """Nothing to set by default."""

    def columns(self, assembler) -> list[str]:
        return [self.presence_key]

    def row_nbytes(self, assembler) -> int:
        """Bytes of one slot of this modality's Batch leaf (the device store's size estimate)."""
        shape = assembler.schema[self.dense_key]["shape"]
        return np.dtype(self.dtype).itemsize * int(np.prod(shape))

    def assemble(self, assembler, slots: Slots):
        """Dense default: ``[n_dev, n_slots, *shape]`` of ``dtype``, zeros in empty slots."""
        shape = tuple(assembler.schema[self.dense_key]["shape"])
        out = np.zeros((slots.n_dev, slots.n_slots, *shape), self.dtype)
        out[slots.dev, slots.slot] = slots.fixed(self.dense_key)[1]
        return out


@dataclasses.dataclass(frozen=True)
class DenseModality(Modality):
    """A modality stored as one fixed-shape array per material (registered by a user module).

    name: its Batch / ``present`` key and its name in ``config.data.modalities``.
    record_key: the record / store key (``[a-z0-9_/]``, not a built-in key).
    featurize: ``material -> array | None`` (`mmjax.data.material.Material`); None = the
        material lacks it. An exception, or a non-finite value, makes the material a bad record
        naming this modality; the array's shape must be the same for every material.
    dtype: the stored and batched dtype (float32).
    scale: record its value moments (``store_statistics``).
    module: the module that registers it (imported by spawned workers); default: featurize's.
    """

    name: str
    record_key: str
    featurize: Callable
    dtype: type = np.float32
    scale: bool = True
    module: str = ""

    def __post_init__(self):
        if not self.module:
            object.__setattr__(self, "module", getattr(self.featurize, "__module__", "") or "")

    @property
    def presence_key(self) -> str:
        return self.record_key

    @property
    def dense_key(self) -> str:
        return self.record_key

    @property
    def scale_keys(self) -> tuple:
        return (self.record_key,) if self.scale else ()

    def enabled(self, spec) -> bool:
        return self.name in spec.extra

    def add_features(self, material, spec, rec: dict) -> None:
        """Run ``featurize`` on ``material`` into ``rec`` (nothing when it returns None)."""
        value = run_featurizer(material.id, self.name, self.featurize, material)
        if value is not None:
            rec[self.record_key] = finite(material.id, value, self.dtype, self.name)
