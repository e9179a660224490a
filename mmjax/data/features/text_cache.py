"""Descriptions of many structures at once: worker processes and a JSON cache keyed by record id +
structure hash + settings, so every text is generated once (``describe_structures``; one
structure: `mmjax.data.features.text.describe_structure`)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmjax.data.features.text import check_structure, describe_with_reason

logger = logging.getLogger(__name__)


def structure_hash(structure) -> str:
    """sha256 hex digest of lattice, species/occupancies and fractional coordinates (6 decimals)."""
    rows = ["lattice " + " ".join(f"{x:.6f}" for x in np.asarray(structure.lattice.matrix).ravel() + 0.0)]
    for site in structure:
        species = ",".join(f"{sp}:{occ:.6f}" for sp, occ in sorted(site.species.items(), key=lambda kv: str(kv[0])))
        coords = " ".join(f"{x:.6f}" for x in np.asarray(site.frac_coords, dtype=float) + 0.0)
        rows.append(f"{species} {coords}")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _settings_tag(use_robocrys: bool, mineral_matcher: bool, symprec: float) -> str:
    return f"robocrys={int(bool(use_robocrys))},minerals={int(bool(mineral_matcher))},symprec={symprec:g}"


def description_cache_key(record_id: str, structure, use_robocrys=True, mineral_matcher=False, symprec=0.1) -> str:
    """Cache key ``"<id>|<sha256 of structure and settings>"`` used by ``describe_structures``."""
    digest = hashlib.sha256(
        (structure_hash(structure) + "|" + _settings_tag(use_robocrys, mineral_matcher, symprec)).encode()
    ).hexdigest()
    return f"{record_id}|{digest}"


def _describe_chunk(items, use_robocrys, mineral_matcher, timeout, symprec):
    """Worker: [(key, structure)] -> [(key, text, source, reason)]."""
    return [
        (key, *describe_with_reason(structure, use_robocrys, mineral_matcher, timeout, symprec))
        for key, structure in items
    ]


def _load_cache(path) -> dict[str, dict]:
    if path is None or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        entries = data["entries"]
        if not isinstance(entries, dict):
            raise TypeError("'entries' is not an object")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"description cache {path} is not readable ({err}); delete it to rebuild") from err


def _save_cache(path, entries: dict[str, dict]) -> None:
    if path is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "entries": entries}, f, ensure_ascii=False, sort_keys=True, indent=0)
    os.replace(tmp, path)


def describe_structures(
    structures: Sequence,
    ids: Sequence[str],
    num_workers: int = 1,
    cache_path: str | os.PathLike | None = None,
    use_robocrys: bool = True,
    mineral_matcher: bool = False,
    *,
    timeout: float | None = 60.0,
    symprec: float = 0.1,
    chunk_size: int = 8,
) -> list[tuple[str, str]]:
    """Describe many structures once: ``[(text, source)]`` in input order.

    ``cache_path``: JSON file ``{"version": 1, "entries": {key: {"text", "source", "reason"}}}``
    with keys from ``description_cache_key`` (record id + hash of the structure and settings);
    cached entries are reused, new ones are written after every finished chunk (atomic
    replace), so an interrupted run keeps its progress. ``num_workers > 1`` describes chunks of
    ``chunk_size`` structures in that many spawned processes (each imports robocrys once).
    Raises ``RecordError`` naming the first record whose structure is not a pymatgen Structure.
    """
    structures = list(structures)
    ids = [str(i) for i in ids]
    if len(structures) != len(ids):
        raise ValueError(f"describe_structures: {len(structures)} structures but {len(ids)} ids")
    for rid, s in zip(ids, structures):
        check_structure(s, rid)
    cache_path = None if cache_path is None else os.fspath(cache_path)
    entries = _load_cache(cache_path)
    keys = [description_cache_key(rid, s, use_robocrys, mineral_matcher, symprec) for rid, s in zip(ids, structures)]
    todo: dict[str, Any] = {}
    for key, s in zip(keys, structures):
        if key not in entries and key not in todo:
            todo[key] = s
    items = list(todo.items())
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), max(1, chunk_size))]
    args = (use_robocrys, mineral_matcher, timeout, symprec)

    def _store(results):
        for key, text, source, reason in results:
            entries[key] = {"text": text, "source": source, "reason": reason}
            if reason and use_robocrys:
                logger.info("record %r: template description used (%s)", key.split("|")[0], reason)
        _save_cache(cache_path, entries)

    if chunks and num_workers > 1:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold JAX threads
        with concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
            futures = [pool.submit(_describe_chunk, chunk, *args) for chunk in chunks]
            for fut in concurrent.futures.as_completed(futures):
                _store(fut.result())
    else:
        for chunk in chunks:
            _store(_describe_chunk(chunk, *args))
    return [(entries[k]["text"], entries[k]["source"]) for k in keys]
