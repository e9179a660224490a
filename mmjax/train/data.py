"""Data iterators as the engine sees them, a registry of sources, and a synthetic source.

A data iterator is any Python iterator of *host-local* Batches (`mmjax.data.schema`, every
leaf ``[n_local_devices, B_dev, ...]``) with ``get_state() -> JSON-able dict`` and
``set_state(dict)``; the engine stores the state in checkpoints so a resumed run sees exactly
the batches it would have seen. Train iterators are infinite; eval/predict iterators finite.

``DATA_SOURCES`` maps ``config.data.source`` to ``builder(config, split, input_path=None, *,
workdir=None)`` with split in {"train", "eval", "predict"}. Every name that is not registered
(``"prototypes"``, a path, a source name of `mmjax.data.sources`) goes to `featurized_source`:
config.data -> source reader -> featurise into ``<workdir>/data/<name>-<hash>`` (cached: the next
run re-uses it) -> `mmjax.data.store.Dataset` -> train / eval / test split
(``config.data.split``) -> `mmjax.data.pipeline.make_batches` with graph budgets from the
manifest -> this process's device rows (`HostBatches`).

Batch conventions added here: classification targets are 0-based class indices (space group
1..230 is stored and batched as 0..229); regression targets are normalised with the manifest's
statistics when ``config.data.normalize_targets`` (`target_statistics` undoes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np

from mmjax.data.spec import check_target_shapes, config_targets  # noqa: F401 (config_targets re-exported: data/spec.py is its home)
from mmjax.data.normalise import table_from_manifest

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


# ----------------------------------------------------------------------------------------------
# Featurised-store source: config.data -> source -> featurise into <workdir>/data (cached) ->
# Dataset -> train / eval / test split -> host-local Batches.

# Class labels as stored ("label/<name>") -> offset subtracted in Batches, so classification
# targets in a Batch are 0-based class indices (space group 1..230 -> 0..229).
CLASS_LABEL_OFFSETS = {"space_group": 1, "crystal_system": 0}
SPLITS = ("train", "eval", "test", "all")
_DATASET_CACHE: dict[str, Any] = {}


def _data(config) -> ml_collections.ConfigDict:
    return config.data


def _opt(section, key, default):
    """``section.key`` when the config has it, else `default` (configs built on older bases)."""
    try:
        return section[key] if key in section else default
    except (KeyError, AttributeError):
        return default


def config_modalities(config) -> tuple[str, ...]:
    """``config.data.modalities`` (empty = every modality the stored dataset has)."""
    return tuple(_opt(_data(config), "modalities", ()) or ())


def _element_table_of(config) -> str:
    """The fixed element table a baseline encoder reads (``config.system.encoder.element_table``), or ""."""
    system = config.get("system", None)
    enc = system.get("encoder", None) if system is not None else None
    return str(enc.get("element_table", "") or "") if hasattr(enc, "get") else ""


def feature_spec(config) -> "FeatureSpec":
    """The `FeatureSpec` implied by ``config.data``: which modalities to compute and how.

    A modality is featurised when ``config.data.modalities`` names it (all structural ones when it
    is empty); symmetry labels and every source target are always stored (so one cached dataset
    serves pretraining, training and transfer). ``config.data.features`` holds the featuriser
    settings (graph kind, cutoff, max_neighbors, xrd range / step / sigma, max_elements, text).
    """
    from mmjax.data.featurize import FeatureSpec

    mods = config_modalities(config) or ("crystal", "composition", "xrd")
    f = _opt(_data(config), "features", None)
    f = f.to_dict() if f is not None else {}
    kw = dict(
        graph=(f.get("graph") or "cgcnn") if "crystal" in mods else None,
        xrd="xrd" in mods, composition="composition" in mods, symmetry=True,
        dos="dos" in mods, charge_density="charge_density" in mods, text="text" in mods,
        targets=None,
    )
    for key in ("cutoff", "max_neighbors", "xrd_sigma", "xrd_step", "max_elements", "symprec", "dos_length"):
        if f.get(key) not in (None, 0, 0.0):  # 0 = the featuriser's default
            kw[key] = f[key]
    if f.get("text_robocrys") is not None:  # a bool: False must reach the spec too
        kw["text_robocrys"] = bool(f["text_robocrys"])
    table = _element_table_of(config)
    if table:
        from mmjax.data.features.elements import element_features

        kw["max_atomic_number"] = int(element_features(table).shape[0] - 1)
    if f.get("xrd_two_theta_range"):
        kw["xrd_two_theta_range"] = tuple(f["xrd_two_theta_range"])
    if f.get("dos_range"):
        kw["dos_range"] = tuple(f["dos_range"])
    return FeatureSpec(**kw)


def content_fingerprint(path: str) -> str:
    """Fingerprint of a file or a folder's content: (relative path, size, mtime_ns) of every file,
    recursively, hashed. Overwriting a file in place, adding or removing one changes it (a folder's
    own mtime/size does not see an in-place rewrite)."""
    h = hashlib.sha1()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                f = os.path.join(root, name)
                st = os.stat(f)
                h.update(f"{os.path.relpath(f, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = os.stat(path)
        h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _text_request(config) -> dict:
    """The text-embedding settings that change the stored features (model, its files, pooling)."""
    d = _data(config)
    model = str(_opt(d, "text_model", "") or "")
    out = {"text_model": model, "text_pooling": str(_opt(d, "text_pooling", "cls"))}
    if model and os.path.exists(model):
        out["text_model"] = os.path.abspath(model)
        out["text_model_files"] = content_fingerprint(model)
    return out


def _source_request(config, input_path: str | None) -> dict:
    """What is read: JSON-able description that (with the spec) keys the featurised cache:
    the source, its content fingerprint (files and folders), and the text-embedding settings when
    the features include text."""
    d = _data(config)
    text = _text_request(config) if feature_spec(config).text else {}
    if input_path:
        p = os.path.abspath(input_path)
        if not os.path.exists(p):
            raise FileNotFoundError(f"--input {input_path!r}: no such file or folder")
        return {"source": "input", "path": p, "content": content_fingerprint(p), **text}
    source = str(d.source)
    kwargs = _opt(d, "source_kwargs", None)
    req = {"source": source, "kwargs": kwargs.to_dict() if kwargs is not None else {}}
    if source == "prototypes":
        req["kwargs"] = {"n": int(_opt(d, "num_materials", 3000)), "seed": int(_opt(d, "source_seed", 0)),
                         **req["kwargs"]}
    elif os.path.exists(source):
        req["source"] = os.path.abspath(source)
        req["content"] = content_fingerprint(req["source"])
    req.update(text)
    return req


def data_root(config, workdir: str | None) -> str:
    """Folder of cached featurised datasets: ``config.data.data_dir`` or ``<workdir>/data``."""
    root = _opt(_data(config), "data_dir", "") or (os.path.join(workdir, "data") if workdir else "")
    if not root:
        raise ValueError("the featurised data needs a place: pass --workdir or set config.data.data_dir")
    return os.path.abspath(root)


def dataset_dir(config, workdir: str | None, input_path: str | None = None) -> str:
    """``<data_root>/<name>-<hash>``: one folder per (source, featuriser settings)."""
    req = _source_request(config, input_path)
    spec = feature_spec(config).to_dict()
    digest = hashlib.sha1(json.dumps({"request": req, "spec": spec}, sort_keys=True, default=str).encode())
    base = os.path.basename(str(req.get("path", req["source"])).rstrip("/")) or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:40]
    return os.path.join(data_root(config, workdir), f"{'input-' if input_path else ''}{name}-{digest.hexdigest()[:10]}")


def prototype_material(item: tuple):
    """Worker-side generator for the embedded default: ``(id, index, seed)`` -> Material.

    The stored labels ``space_group`` / ``crystal_system`` come from the featuriser's symmetry
    step (``label/*``, class labels); the duplicate float targets are dropped here.
    """
    from mmjax.data.sources.prototypes import generate_one

    m = generate_one(int(item[1]), seed=int(item[2]))
    for name in CLASS_LABEL_OFFSETS:
        m.targets.pop(name, None)
    return m


def _read_materials(req: dict, config) -> tuple[list, Callable | None, list]:
    """(items, parse, read errors) for `featurize_dataset`: prototypes are generated inside the
    workers; the read errors are ``{"id", "reason"}`` of the records the reader could not read."""
    from mmjax.data.sources import read_source

    if req["source"] == "prototypes":
        n, seed = req["kwargs"]["n"], req["kwargs"]["seed"]
        return [(f"proto-{i:06d}", i, seed) for i in range(n)], prototype_material, []
    path = req.get("path") or (req["source"] if os.path.exists(req["source"]) else None)
    kwargs = dict(req.get("kwargs", {}))
    result = read_source(path) if req["source"] == "input" else read_source(req["source"], **kwargs)
    errors = [{"id": str(e.record_id), "position": -1, "reason": str(e.reason)} for e in result.errors]
    if not result.materials and not errors:
        raise ValueError(f"data source {req.get('path', req['source'])!r} holds no material")
    for err in result.errors[:20]:
        log.warning("skipped while reading: %s", err)
    for m in result.materials:
        for name in CLASS_LABEL_OFFSETS:  # symmetry labels are recomputed as class labels
            m.targets.pop(name, None)
    return list(result.materials), None, errors


def _finish_dataset(config, tmp: str, folder: str) -> None:
    """Add the frozen text embeddings (when the spec has text) and move `tmp` into place atomically."""
    if feature_spec(config).text:
        from mmjax.data.text_embed import embed_dataset

        model = _opt(_data(config), "text_model", "")
        if not model:
            raise ValueError("the text modality needs config.data.text_model (a BERT checkpoint folder or hub id)")
        embed_dataset(tmp, model, pooling=_opt(_data(config), "text_pooling", "cls"))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def _featurize_into(config, out_dir: str, input_path: str | None, progress: bool | None,
                    shard_index: int = 0, num_shards: int = 1):
    """Run `featurize_dataset` over the configured source (one shard of it) into `out_dir`."""
    from mmjax.data.featurize import featurize_dataset

    req = _source_request(config, input_path)
    items, parse, read_errors = _read_materials(req, config)
    show = bool(config.train.progress) if progress is None else progress
    return featurize_dataset(items, feature_spec(config), out_dir, read_errors=read_errors if shard_index == 0 else (),
                             num_workers=int(_opt(_data(config), "num_workers", 2)), parse=parse,
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
    from mmjax.data.store import Dataset

    folder = dataset_dir(config, workdir, input_path)
    if folder in _DATASET_CACHE:
        return _DATASET_CACHE[folder]
    if not os.path.exists(os.path.join(folder, "manifest.json")):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = f"{folder}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        manifest = _featurize_into(config, tmp, input_path, progress)
        if not manifest.counts.get("written"):
            shutil.rmtree(tmp, ignore_errors=True)  # our own empty folder; the inputs are untouched
            raise ValueError(refused_message(manifest, input_path or _opt(_data(config), "source", "")))
        _finish_dataset(config, tmp, folder)
        if jax.process_index() == 0:
            print(f"featurised {manifest.counts.get('written')} of {manifest.counts.get('input')} materials "
                  f"({manifest.counts.get('skipped')} skipped) into {folder} in {time.time() - t0:.1f} s", flush=True)
            for line in record_notes(manifest):
                print(line, flush=True)
    ds = Dataset.open(folder)
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
    manifests (`mmjax.data.store.merge_manifests`), adds text embeddings if configured, and moves
    the result to `dataset_dir`, where every later run finds it. Returns the manifest counts.
    """
    from mmjax.data.store import merge_manifests

    folder = dataset_dir(config, workdir, input_path)
    shards = f"{folder}.shards"
    if shard_index >= 0:
        os.makedirs(shards, exist_ok=True)
        manifest = _featurize_into(config, shards, input_path, progress, shard_index, num_shards)
        return {"path": shards, **manifest.counts}
    manifest = merge_manifests(shards)
    _finish_dataset(config, shards, folder)
    return {"path": folder, **manifest.counts}


def stored_modalities(dataset) -> tuple[str, ...]:
    """Batch modalities the stored dataset has."""
    from mmjax.data.pipeline import PRESENCE_KEYS
    from mmjax.data.schema import MODALITIES

    return tuple(m for m in MODALITIES if PRESENCE_KEYS[m] in dataset.manifest.schema)


def check_modalities(dataset, wanted: Sequence[str], what: str) -> None:
    """Raise ValueError naming each modality of `wanted` that `dataset` lacks."""
    have = stored_modalities(dataset)
    missing = [m for m in wanted if m not in have]
    if missing:
        raise ValueError(f"{what}: the config needs modality {', '.join(repr(m) for m in missing)}, which the "
                         f"dataset at {dataset.root} does not have (it has {list(have)}); give data with "
                         f"{' and '.join(missing)} (e.g. structures rather than compositions) or another config")


def split_indices(config, n: int) -> dict[str, np.ndarray]:
    """``{"train", "eval", "test", "all"}`` index arrays: ``random_split(n, config.data.split, seed)``."""
    from mmjax.data.splits import random_split

    fractions = tuple(_opt(_data(config), "split", (0.8, 0.1, 0.1)))
    train, val, test = random_split(n, fractions, seed=int(_opt(_data(config), "split_seed", 0)))
    return {"train": train, "eval": val, "test": test, "all": np.arange(n, dtype=np.int64)}


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
    from mmjax.train.prefetch import batch_put_fn

    mode = str(_opt(_data(config), "device_resident", "off"))
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"config.data.device_resident={mode!r}; expected 'auto', 'on' or 'off'")
    if mode != "off":
        if not hasattr(iterator, "device_feed"):
            if mode == "on":
                raise ValueError(f"config.data.device_resident='on' but the data source "
                                 f"{config.data.source!r} has no device-resident mode (featurised stores do)")
        else:
            limit = None if mode == "on" else int(float(_opt(_data(config), "device_resident_max_mb", 1024)) * 2**20)
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
    from mmjax.data.pipeline import make_batches

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
        part = split if split != "predict" else _opt(_data(config), "predict_split", "test")
        if part not in SPLITS:
            raise ValueError(f"config.data.predict_split={part!r}; expected one of {SPLITS}")
        idx = split_indices(config, len(ds))[part] if rows is None else np.asarray(rows(len(ds)))
        if len(idx) == 0:
            raise ValueError(f"the {part!r} split of {ds.root} is empty ({len(ds)} materials, split "
                             f"{tuple(_opt(_data(config), 'split', ()))}); use more data or another split")
        ds = ds.subset(idx)
    n_dev = jax.device_count()
    n_local = n_dev // jax.process_count()
    bpd = int(config.data.batch_per_device)
    train = split == "train"
    it = make_batches(ds, bpd * n_dev, seed=int(config.seed), shuffle=train, num_epochs=None if train else 1,
                      devices=n_dev, modalities=modalities, targets=targets,
                      normalize_targets=bool(_opt(_data(config), "normalize_targets", False)),
                      percentile=float(_opt(_data(config), "budget_percentile", 95.0)), target_stats=fixed_stats)
    return HostBatches(it, np.asarray(ds.ids), jax.process_index() * n_local, n_local)


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
    out = table_from_manifest(ds.manifest, names, bool(_opt(_data(config), "normalize_targets", False)))
    for name, entry in out.items():
        if entry["kind"] == "class":
            entry["offset"] = CLASS_LABEL_OFFSETS.get(name, 0)
    return out
