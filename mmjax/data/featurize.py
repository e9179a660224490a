"""Featurisation driver: ``Material`` -> record dict (schema.py layout) -> dataset on disk.

``featurize_material`` runs the featurisers a `FeatureSpec` (`mmjax.data.spec`) asks for on one material;
``featurize_dataset`` runs it over many materials in worker processes and writes a store
(:mod:`mmjax.data.store`) with a manifest.

Splitting a large set across a cluster job array: job ``k`` of ``K`` calls
``featurize_dataset(materials, spec, out_dir, shard_index=k, num_shards=K)`` on the *same*
ordered ``materials`` sequence and the same ``out_dir``; shard ``k`` takes the contiguous range
``materials[k*n//K : (k+1)*n//K]`` and writes its own chunk folders and
``manifest-0000k-of-0000K.json``. When all jobs are done, ``merge_manifests(out_dir)`` writes
``manifest.json``; the merged dataset has the records in the original order, identical to an
unsharded run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import os
import pathlib
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mmjax.data import modalities as registry
from mmjax.data import store, store_writer
from mmjax.data.material import Material, RecordError
from mmjax.data.modalities.base import WARNINGS_KEY, featurizer, run_featurizer
from mmjax.data.spec import FeatureSpec

log = logging.getLogger(__name__)

def check_structure(material: Material) -> None:
    st = material.structure
    if len(st) == 0:
        raise RecordError(material.id, "empty structure (no sites)")
    if not st.is_ordered:
        raise RecordError(material.id, "disordered structure (partial occupancy) is not supported")
    frac = np.asarray(st.frac_coords, np.float64)
    if not np.isfinite(frac).all() or not np.isfinite(st.lattice.matrix).all():
        raise RecordError(material.id, "structure has non-finite coordinates or lattice")
    if st.volume <= 1e-6:
        raise RecordError(material.id, f"structure has a degenerate lattice (volume {st.volume:.3g} Å^3)")


def featurize_material(material: Material, spec: FeatureSpec) -> dict:
    """One material -> flat record dict (keys and dtypes of :mod:`mmjax.data.schema`).

    A modality the material lacks (no structure, no DOS ...) is simply absent from the record.
    Raises :class:`RecordError` naming the material for a bad record: empty or disordered
    structure, more than ``spec.max_elements`` elements, a DOS with no finite value, or any
    featuriser failure (the reason says which step failed).
    """
    if not isinstance(material, Material):
        raise TypeError(f"featurize_material expects a Material, got {type(material).__name__}")
    rid = material.id
    rec: dict = {}
    st = material.structure
    if spec.max_atomic_number is not None and material.composition is not None:
        beyond = sorted((el.Z, el.symbol) for el in material.composition.elements if el.Z > spec.max_atomic_number)
        if beyond:
            z, sym = beyond[-1]
            raise RecordError(rid, f"element {sym} (Z={z}) is outside the model's element table "
                                   f"(Z <= {spec.max_atomic_number})")
    if st is not None:
        check_structure(material)
    modalities = registry.featurised(spec)
    for modality in modalities:  # the structure's own features, then its symmetry labels, then the rest
        if modality.from_structure:
            modality.add_features(material, spec, rec)
    if st is not None and spec.symmetry:
        lab = run_featurizer(rid, "symmetry", featurizer("symmetry_labels"), st, symprec=spec.symprec)
        rec["label/space_group"] = np.int32(lab["space_group"])
        rec["label/crystal_system"] = np.int32(lab["crystal_system_index"])
    for modality in modalities:
        if not modality.from_structure:
            modality.add_features(material, spec, rec)
    names = spec.targets if spec.targets is not None else tuple(sorted(material.targets))
    for name in names:
        value = target_value(rid, name, material.targets.get(name))
        if value is not None:
            rec[f"target/{name}"] = value
    if not rec:
        raise RecordError(rid, "no modality could be computed (no structure and nothing else requested)")
    return rec


def target_value(record_id: str, name: str, value: Any) -> np.ndarray | None:
    """A material's target as stored: float32 ``[]``, or ``[d]`` for a vector target (NaN
    components stay, as unlabelled components); None when unlabelled (None, absent, a scalar NaN
    or an all-NaN vector: the record then has no ``"target/<name>"`` key, whatever the target's
    shape elsewhere).
    Raises `RecordError` for a non-number, an empty or a multi-dimensional value."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise RecordError(record_id, f"target {name!r} is not a number: {value!r}"[:200]) from None
    if arr.ndim == 0:
        return None if math.isnan(float(arr)) else np.float32(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise RecordError(record_id, f"target {name!r} has shape {list(arr.shape)}: a target is a number or a "
                                     "1-D vector of numbers")
    if not np.isfinite(arr).any():
        return None  # no labelled component: unlabelled, like a scalar NaN
    return arr.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Dataset driver


def material_from_text(item: tuple) -> Material:
    """Worker-side parser for raw items ``(id, structure_text)`` or ``(id, structure_text, targets)``:
    POSCAR or CIF text -> ``Material`` (pass as ``featurize_dataset(..., parse=material_from_text)``)."""
    from mmjax.data.sources.structure_text import parse_structure  # lazy: mmjax.data.sources costs ~2.4 s

    rid, text = str(item[0]), item[1]
    targets = dict(item[2]) if len(item) > 2 and item[2] else {}
    try:
        structure = parse_structure(text)
    except Exception as exc:  # noqa: BLE001
        raise RecordError(rid, f"could not parse structure: {exc}") from exc
    return Material(id=rid, structure=structure, targets=targets)


def _item_id(item: Any, position: int) -> str:
    if isinstance(item, Material):
        return item.id
    if isinstance(item, dict) and "id" in item:
        return str(item["id"])
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (str, int)):
        return str(item[0])
    return f"#{position}"




def featurize_item(item: Any, spec: FeatureSpec, parse: Callable[[Any], Material] | None,
                   position: int = -1) -> tuple:
    """(id, record or None, reason or None) for one input item; never raises for a bad record."""
    rid = _item_id(item, position)
    try:
        if parse is not None:
            try:
                material = parse(item)
            except RecordError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise RecordError(rid, f"could not parse: {type(exc).__name__}: {exc}") from exc
        else:
            material = item
        rid = material.id
        return rid, featurize_material(material, spec), None
    except RecordError as err:
        return err.record_id, None, err.reason
    except Exception as exc:  # noqa: BLE001 - an unexpected failure still loses only this record
        return rid, None, f"unexpected {type(exc).__name__}: {exc}"


def _featurize_chunk(spec: FeatureSpec, parse, chunk: list) -> list:
    """Worker entry point (top level so that spawn/forkserver workers can import it)."""
    out = []
    for position, item in chunk:
        rid, rec, reason = featurize_item(item, spec, parse, position)
        out.append((position, rid, rec, reason))
    return out


def _worker_init(modules: tuple[str, ...] = ()) -> None:
    """Quiet warnings, one thread, and import ``modules`` (those that register the dense
    modalities of this run: a spawned worker starts without them)."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    registry.import_modules(modules)


def shard_range(n: int, shard_index: int, num_shards: int) -> tuple[int, int]:
    """Contiguous [start, stop) of shard ``shard_index`` out of ``num_shards`` over ``n`` items."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index} of {num_shards}")
    return shard_index * n // num_shards, (shard_index + 1) * n // num_shards


def _results(items: list, spec, parse, num_workers: int, chunk_size: int, mp_context: str) -> Iterable[list]:
    """Featurised chunks in input order; ``num_workers`` = 0 runs in this process."""
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    modules, unimportable = registry.worker_modules(spec.extra)
    if num_workers and unimportable:
        log.warning("featurising in this process: modalities %s are registered by a module that worker "
                    "processes cannot import by name (register them in an importable module to use workers)",
                    unimportable)
        num_workers = 0
    if num_workers == 0:
        for chunk in chunks:
            yield _featurize_chunk(spec, parse, chunk)
        return
    ctx = multiprocessing.get_context(mp_context)
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init,
                                                initargs=(modules,)) as pool:
        window = 4 * num_workers
        pending: list = []
        it = iter(chunks)
        for chunk in it:
            pending.append(pool.submit(_featurize_chunk, spec, parse, chunk))
            if len(pending) >= window:
                break
        while pending:
            done = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_featurize_chunk, spec, parse, nxt))
            yield done


def featurize_dataset(
    materials: Sequence[Any],
    spec: FeatureSpec,
    out_dir: str | os.PathLike,
    num_workers: int = 2,
    shard_index: int = 0,
    num_shards: int = 1,
    records_per_file: int = 4096,
    *,
    parse: Callable[[Any], Material] | None = None,
    chunk_size: int = 64,
    sources: Sequence[str] | None = None,
    command: str | None = None,
    progress: bool = True,
    mp_context: str = "spawn",
    read_errors: Sequence[dict] = (),
) -> store.Manifest:
    """Featurise ``materials`` (this shard's contiguous range of them) into a store at ``out_dir``.

    materials: a sequence of ``Material``, or of raw items that ``parse`` turns into a
        ``Material`` inside the workers (so parsing is parallel too); ``parse`` must be a
        picklable top-level function. Its failures are bad records like any other.
    num_workers: worker processes (``mp_context``, "spawn" by default); 0 = in this process.
        Work goes to workers in chunks of ``chunk_size`` items; results are written in order.
    shard_index / num_shards: see the module docstring; with ``num_shards > 1`` the manifest
        is ``manifest-SSSSS-of-NNNNN.json`` and :func:`mmjax.data.store_writer.merge_manifests` joins them.
    records_per_file: records per chunk folder.
    read_errors: ``{"id", "reason"}`` of records the source reader already refused; listed first
        in ``manifest.skipped`` and counted as input (so the manifest accounts for every record).
    Bad records are logged, listed in ``manifest.skipped`` with id and reason and counted in
    ``manifest.counts``; the rest is written. Records written with a caveat (e.g. an atom with no
    neighbour inside the cutoff) are logged and listed in ``manifest.warnings``. Returns the
    (shard) manifest.
    """
    if num_workers < 0 or chunk_size < 1:
        raise ValueError("num_workers must be >= 0 and chunk_size >= 1")
    out = pathlib.Path(out_dir)
    if (out / store_writer.manifest_name(shard_index, num_shards)).exists():
        raise FileExistsError(f"{out / store_writer.manifest_name(shard_index, num_shards)} exists; "
                              "featurise into a fresh folder")
    start, stop = shard_range(len(materials), shard_index, num_shards)
    items = [(start + i, materials[start + i]) for i in range(stop - start)]
    writer = store_writer.StoreWriter(out, shard_index=shard_index, records_per_file=records_per_file)
    skipped: list = [dict(r) for r in read_errors]
    warned: list = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), desc=f"featurise shard {shard_index}/{num_shards}", unit="mat", disable=not progress)
    for chunk in _results(items, spec, parse, num_workers, chunk_size, mp_context):
        for position, rid, rec, reason in chunk:
            if rec is not None:
                for w in rec.pop(WARNINGS_KEY, ()):
                    log.warning("material %s (input position %d): %s", rid, position, w)
                    warned.append({"id": rid, "position": position, "warning": w})
                try:
                    writer.add(rid, rec)
                except RecordError as err:
                    reason = err.reason
            if reason is not None:
                log.warning("skipped material %s (input position %d): %s", rid, position, reason)
                skipped.append({"id": rid, "position": position, "reason": reason})
        bar.update(len(chunk))
    bar.close()
    grids = {}
    for modality in registry.featurised(spec):
        grids.update(modality.grids(spec, writer.schema))
    info = store.provenance(spec.to_dict(), sources, command)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["num_workers"] = num_workers
    return store_writer.finish_manifest(out, writer, skipped=skipped, warnings=warned, num_input=len(items) + len(read_errors),
                                 shard_index=shard_index, num_shards=num_shards, grids=grids, provenance_info=info)
