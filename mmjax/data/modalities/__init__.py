"""Modality registry: what the data layer knows about each modality, one module per modality.

Built-in modalities, each declared by its own module here (`mmjax.data.modalities.base.Modality`:
featuriser, record keys, batch assembly): `crystal` (graph), `composition` (element slots),
`xrd`, `text`, `dos` (grid + mask), `charge_density`. The featurisation driver, the store's
statistics and the batch assembler iterate this registry instead of naming modalities.

A new dense modality is one module that calls `register` with a `DenseModality`::

    register(DenseModality("toy", record_key="toy", featurize=toy_features))

after which it can be named in ``config.data.modalities``: the featuriser computes it
(``FeatureSpec.extra``), the store writes it, its value statistics are recorded, the
batch assembler, the device store and `mmjax.systems.common.modality_inputs` carry it, and the
``dense_mlp`` baseline (or any system whose encoder takes a ``[N, ...]`` array) trains on it.
Spawned featurisation workers import the module of each registered modality before they start.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re

import numpy as np

from mmjax.data import schema as S
from mmjax.data.modalities import charge_density, composition, crystal, dos, text, xrd
from mmjax.data.modalities.base import DenseModality, Modality

# Built-in modalities in schema order (`mmjax.data.schema.MODALITIES`).
BUILTIN: dict[str, Modality] = {
    m.MODALITY.name: m.MODALITY for m in (crystal, composition, xrd, text, dos, charge_density)}
assert tuple(BUILTIN) == tuple(S.MODALITIES), (tuple(BUILTIN), S.MODALITIES)
# Batch modality -> the record key whose presence marks it (built-in modalities).
BUILTIN_PRESENCE = {name: m.presence_key for name, m in BUILTIN.items()}
# Built-in dense modalities -> their record key.
BUILTIN_DENSE = {name: m.dense_key for name, m in BUILTIN.items() if m.dense_key}
# The modality whose graphs batches pack into a node / edge budget.
GRAPH = next(m for m in BUILTIN.values() if m.graph_budget)
# What a config that names no modality featurises (``config.data.modalities`` empty).
DEFAULT_MODALITIES = ("crystal", "composition", "xrd")
# Featurisation order of the built-in modalities (text last: it may describe the structure).
FEATURIZE_ORDER = ("crystal", "xrd", "composition", "dos", "charge_density")

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
    """The user-registered modality ``name`` (None for a built-in or unknown name)."""
    return _REGISTRY.get(name)


def get(name: str) -> Modality:
    """The modality ``name`` (built-in or registered); KeyError naming the known ones."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise KeyError(f"unknown modality {name!r}; known: {list(known())} (register a new one with "
                   "mmjax.data.modalities.register)")


def featurised(spec) -> list[Modality]:
    """The modalities `spec` (a `FeatureSpec`) asks for, in featurisation order: the built-in ones,
    the registered ones of ``spec.extra``, then text."""
    names = [n for n in FEATURIZE_ORDER if BUILTIN[n].enabled(spec)] + list(spec.extra)
    if BUILTIN["text"].enabled(spec):
        names.append("text")
    return [get(n) for n in names]


def known() -> tuple[str, ...]:
    """Every modality name: the built-in ones (schema order), then the registered ones."""
    return tuple(S.MODALITIES) + tuple(n for n in _REGISTRY if n not in S.MODALITIES)


def presence_key(name: str) -> str:
    """The record key whose presence marks modality ``name``; KeyError naming the known ones."""
    return get(name).presence_key


def dense_keys() -> dict[str, str]:
    """``{modality: record key}`` of every dense modality (built-in and registered)."""
    return {**BUILTIN_DENSE, **{n: m.record_key for n, m in _REGISTRY.items()}}


def scale_keys() -> tuple[str, ...]:
    """Record keys (built-in and registered modalities) whose value moments the store records."""
    return tuple(k for m in (*BUILTIN.values(), *_REGISTRY.values()) for k in m.scale_keys)


def scale_mask(key: str) -> str | None:
    """The bool record key selecting the values whose moments scale key ``key`` records, or None."""
    return next((m.scale_masks[key] for m in BUILTIN.values() if key in m.scale_masks), None)


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
