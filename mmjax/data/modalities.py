"""Modality registry: what the data layer knows about each modality, in one place.

Built-in modalities (`mmjax.data.schema`): ``crystal`` (graph), ``composition`` (element slots),
``dos`` (grid + mask) have their own assembly; ``xrd``, ``text`` and ``charge_density`` are
*dense*: one fixed-shape float32 array per material (record key below), batched as
``[n_dev, B, *shape]`` with zeros in empty slots.

A new dense modality is one module that calls `register` with a `DenseModality`::

    register(DenseModality("toy", record_key="toy", featurize=toy_features))

after which it can be named in ``config.data.modalities``: the featuriser computes it
(``FeatureSpec.extra``), the store writes it, its value statistics are recorded, the
batch assembler, the device store and `mmjax.systems.common.modality_inputs` carry it, and the
``dense_mlp`` baseline (or any system whose encoder takes a ``[N, ...]`` array) trains on it.
Spawned featurisation workers import the module of each registered modality before they start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import re
from typing import Callable

import numpy as np

from mmjax.data import schema as S

# Batch modality -> the record key whose presence marks it (built-in modalities).
BUILTIN_PRESENCE = {
    "crystal": "crystal/atomic_numbers",
    "composition": "composition/atomic_numbers",
    "xrd": "xrd",
    "text": "text_embedding",
    "dos": "dos/densities",
    "charge_density": "charge_density",
}
# Built-in dense modalities -> their record key.
BUILTIN_DENSE = {"xrd": "xrd", "text": "text_embedding", "charge_density": "charge_density"}


@dataclasses.dataclass(frozen=True)
class DenseModality:
    """A modality stored as one fixed-shape array per material.

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


_REGISTRY: dict[str, DenseModality] = {}


_BATCH_KEYS = ("slot_valid", "present", "targets", "target_mask", "ids")
_KEY_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)*$")  # the store's record-key rule


def register(modality: DenseModality) -> DenseModality:
    """Add ``modality`` (re-registering the same name with the same record key replaces it)."""
    if modality.name in BUILTIN_PRESENCE:
        raise ValueError(f"modality {modality.name!r} is built in; register another name")
    if modality.name in _BATCH_KEYS or not re.fullmatch(r"[a-z0-9_]+", modality.name):
        raise ValueError(f"modality name {modality.name!r}: use lower-case letters, digits and _ , not a Batch key "
                         f"{_BATCH_KEYS}")
    if not _KEY_RE.match(modality.record_key):
        raise ValueError(f"modality {modality.name!r}: record key {modality.record_key!r} must match "
                         f"{_KEY_RE.pattern} (the store's key rule)")
    if modality.record_key in set(BUILTIN_PRESENCE.values()) | set(BUILTIN_DENSE.values()) or \
            modality.record_key.split("/")[0] in ("target", "label", "text", "crystal", "composition", "dos"):
        raise ValueError(f"modality {modality.name!r}: record key {modality.record_key!r} is taken by the schema")
    old = _REGISTRY.get(modality.name)
    if old is not None and old.record_key != modality.record_key:
        raise ValueError(f"modality {modality.name!r} is registered with record key {old.record_key!r}")
    taken = {m.record_key: n for n, m in _REGISTRY.items() if n != modality.name}
    if modality.record_key in taken:
        raise ValueError(f"record key {modality.record_key!r} is taken by modality {taken[modality.record_key]!r}")
    _REGISTRY[modality.name] = modality
    return modality


def unregister(name: str) -> None:
    """Remove a registered modality (tests)."""
    _REGISTRY.pop(name, None)


def registered(name: str) -> DenseModality | None:
    return _REGISTRY.get(name)


def known() -> tuple[str, ...]:
    """Every modality name: the built-in ones (schema order), then the registered ones."""
    return tuple(S.MODALITIES) + tuple(n for n in _REGISTRY if n not in S.MODALITIES)


def presence_key(name: str) -> str:
    """The record key whose presence marks modality ``name``; KeyError naming the known ones."""
    if name in BUILTIN_PRESENCE:
        return BUILTIN_PRESENCE[name]
    if name in _REGISTRY:
        return _REGISTRY[name].record_key
    raise KeyError(f"unknown modality {name!r}; known: {list(known())} (register a new one with "
                   "mmjax.data.modalities.register)")


def dense_keys() -> dict[str, str]:
    """``{modality: record key}`` of every dense modality (built-in and registered)."""
    return {**BUILTIN_DENSE, **{n: m.record_key for n, m in _REGISTRY.items()}}


def scale_keys() -> tuple[str, ...]:
    """Record keys of the registered modalities whose statistics the store records."""
    return tuple(m.record_key for m in _REGISTRY.values() if m.scale)


def fingerprint(names) -> dict[str, str]:
    """``{name: sha256}`` of what makes each registered modality's features: its record key,
    dtype, and the featuriser's module, name and source code (so a cache made before the
    featuriser changed is not reused)."""
    out = {}
    for name in names:
        m = _REGISTRY[name]
        fn = m.featurize
        try:
            code = inspect.getsource(fn)
        except (OSError, TypeError):
            code = repr(getattr(fn, "__code__", fn))
        text = "\n".join([m.record_key, np.dtype(m.dtype).str, m.module, getattr(fn, "__qualname__", ""), code])
        out[name] = hashlib.sha256(text.encode()).hexdigest()
    return out


def worker_modules(names) -> tuple[tuple[str, ...], list[str]]:
    """``(modules, unimportable)`` for the registered modalities ``names``: the modules a spawned
    featurisation worker imports so that they exist there, and the names of those whose module a
    fresh interpreter cannot import by name (registered in ``__main__``, a config file or an
    interactive session: featurise those in this process)."""
    modules, bad = set(), []
    for name in names:
        module = _REGISTRY[name].module
        try:
            found = module not in ("", "__main__") and importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            modules.add(module)
        else:
            bad.append(name)
    return tuple(sorted(modules)), bad


def import_modules(modules) -> None:
    for name in modules:
        importlib.import_module(name)
