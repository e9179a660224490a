"""The featurised dataset of a config, made once and cached: config.data -> source reader ->
featurise into ``<workdir>/data/<name>-<hash>`` (the hash covers every input: source, its file
contents, the FeatureSpec, the text request; a changed input is a new folder, never a reused one)
-> `mmjax.data.store.Dataset`; job-array featurisation (`featurize_shard`, then a merge); the
training data's target normalisation (`training_target_stats`, a model folder's targets.json).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable

import jax

from mmjax.data import modalities as registry
from mmjax.data.featurize import featurize_dataset
from mmjax.data.normalise import table_from_manifest
from mmjax.data.spec import CLASS_LABEL_OFFSETS, config_option, config_targets, feature_spec
from mmjax.data.store import Dataset
from mmjax.data.store_writer import merge_manifests
from mmjax.data.text_embed import embed_dataset

log = logging.getLogger(__name__)
_DATASET_CACHE: dict[str, Any] = {}


def content_fingerprint(path: str) -> str:
    """Fingerprint of a file or a folder's content: the relative path, size and bytes (sha1) of every
    file, recursively, hashed. Any change of a file's bytes changes it, also one that keeps its size
    and modification time (``cp -p``, ``rsync -a``, ``tar`` restore times), as does adding or removing
    a file; a copy elsewhere, or a new modification time alone, does not. Reads every byte once per
    call (about 1 GB/s)."""
    h = hashlib.sha1()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                f = os.path.join(root, name)
                h.update(f"{os.path.relpath(f, path)}\0{os.path.getsize(f)}\0{_file_sha1(f)}\n".encode())
    else:
        h.update(f"{os.path.getsize(path)}\0{_file_sha1(path)}".encode())
    return h.hexdigest()


def _text_request(config) -> dict:
    """The text-embedding settings that change the stored features (model, its files, pooling)."""
    d = config.data
    model = str(config_option(d, "text_model", "") or "")
    out = {"text_model": model, "text_pooling": str(config_option(d, "text_pooling", "cls"))}
    if model and os.path.exists(model):
        out["text_model"] = os.path.abspath(model)
        out["text_model_files"] = content_fingerprint(model)
    return out


def _file_sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_request(config, input_path: str | None) -> dict:
    """What is read: JSON-able description that (with the spec) keys the featurised cache:
    the source, its content fingerprint (files and folders), and the text-embedding settings when
    the features include text."""
    d = config.data
    text = _text_request(config) if feature_spec(config).text else {}
    if input_path:
        p = os.path.abspath(input_path)
        if not os.path.exists(p):
            raise FileNotFoundError(f"--input {input_path!r}: no such file or folder")
        names = [n for n in config_targets(config) if n not in CLASS_LABEL_OFFSETS]
        return {"source": "input", "path": p, "content": content_fingerprint(p), "targets": names, **text}
    source = str(d.source)
    kwargs = config_option(d, "source_kwargs", None)
    req = {"source": source, "kwargs": kwargs.to_dict() if kwargs is not None else {}}
    if source == "prototypes":
        req["kwargs"] = {"n": int(config_option(d, "num_materials", 3000)), "seed": int(config_option(d, "source_seed", 0)),
                         **req["kwargs"]}
    elif os.path.exists(source):
        req["source"] = os.path.abspath(source)
        req["content"] = content_fingerprint(req["source"])
    req.update(text)
    return req


def data_root(config, workdir: str | None) -> str:
    """Folder of cached featurised datasets: ``config.data.data_dir`` or ``<workdir>/data``."""
    root = config_option(config.data, "data_dir", "") or (os.path.join(workdir, "data") if workdir else "")
    if not root:
        raise ValueError("the featurised data needs a place: pass --workdir or set config.data.data_dir")
    return os.path.abspath(root)


def dataset_dir(config, workdir: str | None, input_path: str | None = None) -> str:
    """``<data_root>/<name>-<hash>``: one folder per (source, featuriser settings)."""
    req = _source_request(config, input_path)
    spec = feature_spec(config).to_dict()
    key = {"request": req, "spec": spec}
    if spec.get("extra"):  # a registered modality's featuriser code is part of what made the cache
        key["featurisers"] = registry.fingerprint(spec["extra"])
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode())
    base = os.path.basename(str(req.get("path", req["source"])).rstrip("/")) or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:40]
    return os.path.join(data_root(config, workdir), f"{'input-' if input_path else ''}{name}-{digest.hexdigest()[:10]}")


def prototype_material(item: tuple):
    """Worker-side generator for the embedded default: ``(id, index, seed)`` -> Material.

    The stored labels ``space_group`` / ``crystal_system`` come from the featuriser's symmetry
    step (``label/*``, class labels); the duplicate float targets are dropped here.
    """
    from mmjax.data.sources.prototypes import generate_one  # lazy, as read_source (`_read_materials`)

    m = generate_one(int(item[1]), seed=int(item[2]))
    for name in CLASS_LABEL_OFFSETS:
        m.targets.pop(name, None)
    return m


def _read_materials(req: dict, config) -> tuple[list, Callable | None, list]:
    """(items, parse, read errors) for `featurize_dataset`: prototypes are generated inside the
    workers; the read errors are ``{"id", "reason"}`` of the records the reader could not read."""
    # lazy: the source readers pull pandas (the optional [text] extra) and pymatgen's file parsers,
    # ~1.2 s, which the main command does not need for a cached dataset or the synthetic source
    from mmjax.data.sources import read_source

    if req["source"] == "prototypes":
        n, seed = req["kwargs"]["n"], req["kwargs"]["seed"]
        return [(f"proto-{i:06d}", i, seed) for i in range(n)], prototype_material, []
    path = req.get("path") or (req["source"] if os.path.exists(req["source"]) else None)
    kwargs = dict(req.get("kwargs", {}))
    if req["source"] == "input":
        result = read_source(path, **input_reader_kwargs(path, req.get("targets", [])))
    else:
        result = read_source(req["source"], **kwargs)
    errors = [{"id": str(e.record_id), "position": -1, "reason": str(e.reason)} for e in result.errors]
    if not result.materials and not errors:
        raise ValueError(f"data source {req.get('path', req['source'])!r} holds no material")
    for err in result.errors[:20]:
        log.warning("skipped while reading: %s", err)
    for m in result.materials:
        for name in CLASS_LABEL_OFFSETS:  # symmetry labels are recomputed as class labels
            m.targets.pop(name, None)
    return list(result.materials), None, errors


def input_reader_kwargs(path: str, names) -> dict:
    """Reader keywords for an ``--input`` file: ``targets`` = the model's target names the file holds
    (CSV header columns; JSON fields), so their labels are read whatever the column's type (a CSV
    read without ``targets`` takes the float-typed columns only: an all-integer column, or one with a
    non-numeric cell, would lose every label there, and evaluate would score nothing). A bad label
    cell then names its row. Empty for a reader without ``targets`` (a CIF folder, ``id_prop.csv``)."""
    from mmjax.data.sources import SOURCES, detect_source  # lazy, as in _read_materials
    from mmjax.data.sources.compressed import open_text

    kind = detect_source(path)
    if not names or "targets" not in inspect.signature(SOURCES[kind]).parameters:
        return {}
    with open_text(path) as fh:
        if kind == "csv":
            header = next(csv.reader([fh.readline()]), [])
            present = [n for n in names if n in {c.strip() for c in header}]
        else:
            text = fh.read()
            present = [n for n in names if f'"{n}"' in text]
    return {"targets": present} if present else {}


def _finish_dataset(config, tmp: str, folder: str) -> None:
    """Add the frozen text embeddings (when the spec has text) and move `tmp` into place atomically."""
    if feature_spec(config).text:

        model = config_option(config.data, "text_model", "")
        if not model:
            raise ValueError("the text modality needs config.data.text_model (a BERT checkpoint folder or hub id)")
        embed_dataset(tmp, model, pooling=config_option(config.data, "text_pooling", "cls"))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def _featurize_into(config, out_dir: str, input_path: str | None, progress: bool | None,
                    shard_index: int = 0, num_shards: int = 1):
    """Run `featurize_dataset` over the configured source (one shard of it) into `out_dir`."""

    req = _source_request(config, input_path)
    items, parse, read_errors = _read_materials(req, config)
    show = bool(config.train.progress) if progress is None else progress
    return featurize_dataset(items, feature_spec(config), out_dir, read_errors=read_errors if shard_index == 0 else (),
                             num_workers=int(config_option(config.data, "num_workers", 2)), parse=parse,
                             shard_index=shard_index, num_shards=num_shards,
                             sources=[json.dumps(req, default=str)], progress=show and jax.process_index() == 0)


def prepare_dataset(config, workdir: str | None = None, input_path: str | None = None, *,
                    progress: bool | None = None):
    """Featurise the configured source (or `input_path`) once and open it (`mmjax.data.store.Dataset`).

    The dataset lives in `dataset_dir`; an existing folder with a manifest is re-used, so the
    second run of a command skips featurisation. Written into a temporary folder and renamed, so
    a killed featurisation never leaves a half dataset behind. With the ``text`` modality the
    frozen text embeddings (``config.data.text_model``, ``config.data.text_pooling``) are added.
    """

    folder = dataset_dir(config, workdir, input_path)
    if folder in _DATASET_CACHE:
        return _DATASET_CACHE[folder]
    reused = os.path.exists(os.path.join(folder, "manifest.json"))
    if not reused:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = f"{folder}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        manifest = _featurize_into(config, tmp, input_path, progress)
        if not manifest.counts.get("written"):
            shutil.rmtree(tmp, ignore_errors=True)  # our own empty folder; the inputs are untouched
            raise ValueError(refused_message(manifest, input_path or config_option(config.data, "source", "")))
        _finish_dataset(config, tmp, folder)
        if jax.process_index() == 0:
            print(f"featurised {manifest.counts.get('written')} of {manifest.counts.get('input')} materials "
                  f"({manifest.counts.get('skipped')} skipped) into {folder} in {time.time() - t0:.1f} s", flush=True)
            for line in record_notes(manifest):
                print(line, flush=True)
    ds = Dataset.open(folder)
    if reused and input_path and jax.process_index() == 0 and ds.manifest.skipped:  # said on every reuse too
        counts = ds.manifest.counts
        print(f"featurised input {folder} (reused): {counts.get('written')} of {counts.get('input')} materials, "
              f"{counts.get('skipped')} skipped when it was featurised", flush=True)
        for line in record_notes(ds.manifest):
            print(line, flush=True)
    _DATASET_CACHE[folder] = ds
    return ds


def record_notes(manifest, limit: int = 3) -> list[str]:
    """Screen lines for the records a featurisation skipped or kept with a warning (the first
    `limit` of each, with the reason; every one is in the manifest)."""
    lines = []
    for kind, rows, key in (("skipped", manifest.skipped, "reason"), ("warning", manifest.warnings, "warning")):
        for r in rows[:limit]:
            lines.append(f"  {kind}: {r['id']}: {r[key]}")
        if len(rows) > limit:
            lines.append(f"  ... {len(rows) - limit} more {kind} records, each listed in the manifest")
    return lines


def refused_message(manifest, source) -> str:
    """One message for a featurisation that wrote no record: why each input was refused."""
    reasons = [f"{r['id']}: {r['reason']}" for r in manifest.skipped[:5]]
    more = f"; ... and {len(manifest.skipped) - 5} more" if len(manifest.skipped) > 5 else ""
    if not manifest.skipped:
        return f"{source}: no material to featurise (the source is empty)"
    return (f"{source}: none of the {manifest.counts.get('input')} materials could be used: " + "; ".join(reasons)
            + more)


def featurize_shard(config, workdir: str | None, shard_index: int, num_shards: int,
                    input_path: str | None = None, *, progress: bool | None = None) -> dict:
    """Cluster job arrays: featurise shard ``shard_index`` of ``num_shards``, or merge them.

    Each array task runs ``--mode=featurize --config.data.num_shards=K --config.data.shard_index=k``
    (k = 0..K-1; shard k is the k-th contiguous range of the source) and writes into
    ``<dataset_dir>.shards/``; a final ``--config.data.shard_index=-1`` joins the shard
    manifests (`mmjax.data.store_writer.merge_manifests`), adds text embeddings if configured, and moves
    the result to `dataset_dir`, where every later run finds it. Returns the manifest counts.
    """

    folder = dataset_dir(config, workdir, input_path)
    shards = f"{folder}.shards"
    if shard_index >= 0:
        os.makedirs(shards, exist_ok=True)
        manifest = _featurize_into(config, shards, input_path, progress, shard_index, num_shards)
        return {"path": shards, **manifest.counts}
    manifest = merge_manifests(shards)
    _finish_dataset(config, shards, folder)
    return {"path": folder, **manifest.counts}


def training_target_stats(config, workdir: str) -> dict:
    """`target_statistics` of the training data, cached in ``<workdir>/targets.json`` (written once,
    by process 0; a model folder carries it). {} for the synthetic source."""
    path = os.path.join(workdir, "targets.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    if config.data.source == "synthetic":
        return {}
    stats = target_statistics(config, workdir)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(stats, fh, indent=2)
        os.replace(tmp, path)
    return stats


def target_statistics(config, workdir: str | None = None) -> dict[str, dict]:
    """``{name: {"kind": "regression", "mean", "std"} | {"kind": "class", "offset"}}`` of the
    configured targets, as the Batches of the configured (training) data carry them (for a
    vector target ``mean`` / ``std`` are lists, one per component, and ``"shape": [d]``)."""
    ds = prepare_dataset(config, workdir)
    schema = ds.manifest.schema
    names = [n for n in config_targets(config) if f"target/{n}" in schema or f"label/{n}" in schema]
    out = table_from_manifest(ds.manifest, names, bool(config_option(config.data, "normalize_targets", False)))
    for name, entry in out.items():
        if entry["kind"] == "class":
            entry["offset"] = CLASS_LABEL_OFFSETS.get(name, 0)
    return out
