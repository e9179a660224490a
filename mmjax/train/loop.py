"""The training loop: init or resume, train, log, evaluate, checkpoint, summarise.

`train(system, config, workdir, train_iter, eval_iter_fn)` is the one entry point. A run killed
at any moment and restarted with the same command resumes from its newest checkpoint (state,
data-iterator position) and ends with the same parameters as an uninterrupted run, because the
step key is ``fold_in(rng, step)`` and batches come from the restored iterator position.

Files in `workdir`: ``checkpoints/<step>/``, ``metrics.jsonl``, ``tb/`` (TensorBoard),
``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterable

import jax
import ml_collections
from jax.experimental import multihost_utils
import numpy as np

from mmjax.train import mesh as mesh_lib
from mmjax.train import compile_cache, health, memory
from mmjax.train.workdir_lock import WorkdirLock
from mmjax.train.checkpoint import Checkpointer, load_params
from mmjax.train.config import ADDED_KEYS, RESUME_IGNORED_KEYS
from mmjax.train.data import device_feed, peek
from mmjax.train.metrics import MetricWriter, Progress, Throughput
from mmjax.train.optim import build_optimizer
from mmjax.train.prefetch import Prefetcher
from mmjax.train.state import TrainState, abstract_state, init_state
from mmjax.train.step import make_eval_step, make_train_step, train_step_fn

PyTree = Any
log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step."""


class ConfigMismatch(RuntimeError):
    """The workdir's checkpoint was written under a different config."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict, ignore: Iterable[str] = RESUME_IGNORED_KEYS) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs (keys in `ignore` skipped; a
    key of `ADDED_KEYS` the old config lacks takes the value that reproduces the old behaviour)."""
    a, b = _flatten(old), _flatten(new)
    for key, was in ADDED_KEYS.items():
        if key not in a and key in b and was(a) is not None:
            a[key] = was(a)
    ignore = set(ignore)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]


def config_json(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON types (tuples become lists), as stored in checkpoints."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _is_count(key: str) -> bool:
    """Metrics that count samples in a batch (summed over batches, never averaged)."""
    return key.endswith("/n") or key == "n" or key.endswith("n_labelled") or key.startswith("present/")


def evaluate(eval_step: Callable, params: PyTree, batches: Iterable, mesh, rng: jax.Array,
             prefix: str = "eval/") -> dict[str, float]:
    """Sample-weighted mean of each eval metric over the split.

    A batch's metric (a mean over its real samples) counts ``n_b`` times: for a target's metrics
    (``"<target>/<metric>"`` beside a ``"<target>/n"`` count) ``n_b`` is that batch's labelled
    count of the target, otherwise its valid slots (``batch["slot_valid"]``); so short last
    batches and partly labelled batches weigh what their samples weigh, and the result equals the
    mean over the whole split. Counts (``.../n``, ``n_labelled``, ``present/...``) are summed."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for host_batch in batches:
        # every process runs every batch (the step is one collective program); the weight is the
        # batch's global count of real samples, summed over the processes' local rows
        w = float(np.asarray(host_batch["slot_valid"]).sum())
        if jax.process_count() > 1:
            w = float(np.sum(multihost_utils.process_allgather(np.asarray(w, np.float64))))
        m = jax.device_get(eval_step(params, mesh_lib.host_to_global(host_batch, mesh), rng))
        if w == 0:
            continue
        m = {k: float(v) for k, v in m.items()}
        for k, v in m.items():
            if _is_count(k):
                wk = 1.0  # counts are summed, not weighted
            else:
                count = m.get(k.rsplit("/", 1)[0] + "/n") if "/" in k else None
                wk = w if count is None else count
                if wk == 0:
                    continue  # no labelled sample of this target in the batch: its metric is no mean
                v = v * wk
            sums[k] = sums.get(k, 0.0) + v
            weights[k] = weights.get(k, 0.0) + wk
    out = {}
    for k, v in sums.items():
        out[f"{prefix}{k}"] = v if _is_count(k) else v / weights[k]
    return out


def merge_params(init: PyTree, loaded: dict) -> tuple[PyTree, int]:
    """Leaves of `init` replaced by same-path, same-shape leaves of `loaded`; returns (params, count)."""
    flat_loaded = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    n = 0

    def pick(path, leaf):
        nonlocal n
        v = flat_loaded.get(jax.tree_util.keystr(path))
        if v is not None and tuple(np.shape(v)) == tuple(leaf.shape):
            n += 1
            return np.asarray(v, leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(pick, init), n


def build_engine(system, config: ml_collections.ConfigDict, example_host_batch: PyTree, mesh=None):
    """Optimiser, abstract state, shardings and a global example batch for `system` on `mesh`.

    Returns a dict with keys mesh, tx, schedule, abstract, shardings, example, rng.
    """
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    example = mesh_lib.host_to_global(example_host_batch, mesh)
    rng = jax.random.PRNGKey(config.seed)
    labels = system.param_labels(jax.eval_shape(system.init, rng, example))
    tx, schedule = build_optimizer(config.optim, config.train.steps, labels)
    abstract = abstract_state(system, tx, rng, example)
    shardings = mesh_lib.tree_shardings(abstract, mesh, config.mesh.param_sharding, config.mesh.fsdp_min_size)
    return dict(mesh=mesh, tx=tx, schedule=schedule, abstract=abstract, shardings=shardings, example=example, rng=rng)


def sharded_target(abstract: PyTree, shardings: PyTree) -> PyTree:
    """`jax.ShapeDtypeStruct` leaves carrying shardings: the restore target."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def make_checkpointer(config: ml_collections.ConfigDict, workdir: str) -> Checkpointer:
    c = config.checkpoint
    return Checkpointer(os.path.join(workdir, "checkpoints"), keep=c.keep, best_metric=c.best_metric,
                        best_mode=c.best_mode, async_save=c.async_save)


def train(system, config: ml_collections.ConfigDict, workdir: str, train_iter,
          eval_iter_fn: Callable[[], Iterable] | None = None, *, mesh=None) -> tuple[TrainState, dict]:
    """Train `system` for ``config.train.steps`` updates; resume from `workdir` if it has checkpoints.

    Args:
      system: a `mmjax.systems.base.System`.
      config: full config (`mmjax.train.config.base_config` keys).
      workdir: output folder (created).
      train_iter: infinite iterator of host-local Batches with get_state/set_state. Batches are read
        and put on the devices ``config.data.prefetch`` (default 2; 0 = synchronously) steps ahead
        by a background thread (`mmjax.train.prefetch`); checkpoints hold the iterator state after
        the last batch trained on, so train_iter's own position may be ahead of it.
      eval_iter_fn: returns a fresh finite iterator of eval Batches, or None (no eval).
      mesh: defaults to all devices.
    Returns:
      ``(final_state, summary)``; summary is also written to ``<workdir>/summary.json``.
    Raises:
      TrainingDiverged: NaN/Inf loss or gradient (no checkpoint is written after it).
      ConfigMismatch: checkpoint from another config and ``config.resume_mismatch`` is False.
      WorkdirBusy: another live process is training in `workdir` (`mmjax.train.workdir_lock`).
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _train_locked(system, config, workdir, train_iter, eval_iter_fn, mesh)


def preflight_memory(system, eng: dict, config):
    """`mmjax.train.memory.check_step_memory` for this run's step (raises `StepTooLarge`)."""
    mem = memory.step_memory(train_step_fn(system, eng["tx"], eng["schedule"]), eng["abstract"], eng["example"])
    available, source = memory.available_bytes()
    cpu = jax.local_devices()[0].platform == "cpu"
    _info(f"step memory (traced estimate): {mem.peak_bytes / memory.GIB:.2f} GiB"
          f"{f' of {available / memory.GIB:.1f} GiB available' if available else ''}; largest array {mem.largest_what}")
    memory.check_step_memory(mem, available, source, state_copies=jax.local_device_count() if cpu else 1,
                             batch=int(config.data.get("batch_per_device", 0)) or None)
    return mem


def _last_checkpoint(ckpt) -> str:
    step = ckpt.latest_step()
    return f"last checkpoint: step {step} in {ckpt.directory}" if step is not None else "no checkpoint was written yet"


def loss_exploded(loss: float, first: float, max_ratio: float) -> str:
    """The reason when a finite training loss ran away (``|loss| > max_ratio * max(|first|, 1)``,
    ``first`` = the first logged loss), else ""; ``max_ratio <= 0`` disables the check."""
    if max_ratio <= 0 or not np.isfinite(loss):
        return ""
    limit = max_ratio * max(abs(first), 1.0)
    if abs(loss) > limit:
        return (f"the training loss exploded to {loss:.3g} (more than {max_ratio:g} x the first logged loss "
                f"{first:.3g}; config.train.max_loss_ratio)")
    return ""


def last_logged(path: str) -> tuple[dict, dict]:
    """The newest ``train/…`` and ``eval/…`` metrics in ``metrics.jsonl`` (``({}, {})`` without
    them): a resumed run's summary is rebuilt whole from them when it logs nothing itself."""
    train_row, eval_row = {}, {}
    if not os.path.exists(path):
        return train_row, eval_row
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            tr = {k: v for k, v in row.items() if k.startswith("train/")}
            ev = {k: v for k, v in row.items() if k.startswith("eval/")}
            train_row, eval_row = tr or train_row, ev or eval_row
    return train_row, eval_row


def drop_rows_after(path: str, step: int) -> int:
    """Remove the ``metrics.jsonl`` rows of steps after ``step`` (logged by a run that was killed
    after its last checkpoint; the resumed run logs those steps again, identically) and the
    ``summary`` event of an earlier finish (the run that finishes writes it again). Returns the
    number removed. The file is rewritten atomically; other rows are kept byte for byte."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
            row_step = int(row.get("step", -1))
            if row.get("event") == "summary":
                continue
        except (ValueError, AttributeError):
            if not line.endswith("\n"):
                continue  # the torn last line of a killed run
            row_step = -1
        if row_step <= step:
            keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) == len(lines):
        return 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(keep)
    os.replace(tmp, path)
    return len(lines) - len(keep)


def data_identity(it) -> str | None:
    """The featurised dataset a training iterator reads: its folder's name (``<source>-<hash of the
    source content and featuriser settings>``, `mmjax.data.cache.dataset_dir`), or None (synthetic)."""
    root = getattr(getattr(it, "dataset", None), "root", None)
    return os.path.basename(str(root).rstrip("/")) if root is not None else None


def _train_locked(system, config, workdir, train_iter, eval_iter_fn, mesh):
    t_start = time.time()
    tc, total = config.train, int(config.train.steps)
    if total < 1 or tc.log_every < 1 or tc.eval_every < 0 or config.checkpoint.every < 0:
        raise ValueError(f"need config.train.steps >= 1 (got {total}), train.log_every >= 1 (got {tc.log_every}), "
                         f"train.eval_every >= 0 and checkpoint.every >= 0")
    cache = compile_cache.enable(config.train.get("compilation_cache_dir", "auto"))
    eng = build_engine(system, config, peek(train_iter), mesh)
    mesh, shardings = eng["mesh"], eng["shardings"]
    cfg_json = config_json(config)
    ckpt = make_checkpointer(config, workdir)
    best: dict | None = None

    # ------------------------------------------------------------------ init or resume
    steps = ckpt.all_steps()
    data_id = data_identity(train_iter)
    if steps:
        try:
            old_meta = ckpt.restore_meta(steps[-1])
            old_cfg = old_meta.get("config", {})
        except Exception:  # unreadable: restore_latest below quarantines it
            old_meta, old_cfg = {}, None
        diffs = config_differences(old_cfg, cfg_json) if old_cfg is not None else []
        if old_meta.get("data") and data_id and old_meta["data"] != data_id:
            diffs.append(f"training data: featurised {old_meta['data']} -> {data_id} (the source's content or the "
                         "featuriser settings changed)")
        if diffs and not config.resume_mismatch:
            ckpt.close()
            raise ConfigMismatch(
                f"{workdir} holds checkpoints of a different config ({'; '.join(diffs)}). Use another --workdir, "
                "or pass --config.resume_mismatch=True to resume anyway.")
    restored = ckpt.restore_latest(sharded_target(eng["abstract"], shardings))
    if restored is not None:
        start_step, state, meta = restored
        train_iter.set_state(meta["data_state"])
        best = meta.get("best")
        _info(f"resumed from {ckpt.directory}/{start_step} (step {start_step} of {total})")
        if jax.process_index() == 0:
            drop_rows_after(os.path.join(workdir, "metrics.jsonl"), start_step)
    else:
        state = init_state(system, eng["tx"], eng["rng"], eng["example"], shardings)
        if tc.init_from:
            merged, n = merge_params(jax.device_get(state.params), load_params(tc.init_from))
            state = state.replace(params=jax.device_put(merged, shardings.params))
            _info(f"initialised {n} parameter arrays from {tc.init_from}")
        start_step = 0
    step = int(jax.device_get(state.step))
    if step != start_step:
        raise RuntimeError(f"checkpoint step {start_step} holds state.step={step}")

    # With ``data.device_resident`` the dataset's columns are on the devices, only record indices are
    # read here and the step gathers its Batch itself (`mmjax.train.data.device_feed`; same batches).
    if tc.get("memory_check", True):  # seconds of tracing, before the minutes of compiling
        preflight_memory(system, eng, config)
    source, put_fn, store = device_feed(train_iter, config, mesh)
    train_step = make_train_step(system, eng["tx"], eng["schedule"], shardings, mesh, store=store)
    eval_step = make_eval_step(system, shardings.params, mesh) if eval_iter_fn is not None else None
    eval_rng = jax.random.PRNGKey(config.seed + 1)
    writer = MetricWriter(workdir)
    progress = Progress(total, step, tc.progress)
    samples_per_step = int(np.prod(eng["example"]["slot_valid"].shape))
    thr = Throughput(samples_per_step)
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    loss_ref = None  # the first logged train loss of this process (the divergence check's scale)
    health_on = eval_step is not None and health.wanted(config)
    since_rate = 0

    # Batches are read and put on the devices `data.prefetch` steps ahead by a thread; the state
    # saved in checkpoints is that of the last batch trained on (feed.get_state()).
    # Store-fed steps need no thread: reading indices is ~50 us and dispatch is asynchronous.
    prefetch = 0 if store is not None else int(config.data.get("prefetch", 2))
    feed = Prefetcher(source, put_fn, prefetch, limit=total - step, wait=store is None)

    def meta_now(s: int) -> dict:
        return {"config": cfg_json, "data_state": feed.get_state(), "step": s, "best": best, "data": data_id}

    first_step_s = compile_s = None
    try:
        while step < total:
            t_step = time.time()
            state, metrics = train_step(state, next(feed))
            step += 1
            if step == start_step + 1:
                jax.block_until_ready(metrics)
                thr.mark_first_step_done()
                # the first step's wall time is its compilation (or cache load) plus one step
                first_step_s, compile_s = time.time() - t_start, time.time() - t_step
            else:
                since_rate += 1
            is_log = step % tc.log_every == 0 or step == total
            is_eval = eval_step is not None and ((tc.eval_every and step % tc.eval_every == 0) or step == total)
            is_save = (config.checkpoint.every and step % config.checkpoint.every == 0) or step == total
            progress.update(1)
            if not (is_log or is_eval or is_save):
                continue
            m = jax.device_get(metrics)
            if m["bad_step"] >= 0:
                raise TrainingDiverged(
                    f"loss or gradient became NaN/Inf at step {int(m['bad_step'])} (detected at step {step}); "
                    f"training stopped, nothing saved after it ({_last_checkpoint(ckpt)})")
            if is_log:
                rate = thr.rate(since_rate)
                since_rate = 0
                last_train = {f"train/{k}": float(v) for k, v in m.items() if k != "bad_step"}
                loss_ref = last_train["train/loss"] if loss_ref is None else loss_ref
                exploding = loss_exploded(last_train["train/loss"], loss_ref, float(tc.get("max_loss_ratio", 1e4)))
                if exploding:
                    writer.write(step, last_train, event="diverged", message=exploding)
                    raise TrainingDiverged(f"{exploding} at step {step}; training stopped, nothing saved after it "
                                           f"({_last_checkpoint(ckpt)}); lower the learning rate or check the data")
                writer.write(step, {**last_train, "perf/samples_per_s": rate})
                progress.update(0, loss=last_train["train/loss"], samples_s=rate)
            eval_metrics = None
            if is_eval:
                thr.pause()
                eval_metrics = last_eval = evaluate(eval_step, state.params, eval_iter_fn(), mesh, eval_rng)
                writer.write(step, last_eval)
                if health_on:
                    health_on = health.write(system, state.params, shardings.params, mesh, eval_iter_fn, writer, step,
                                             int(tc.get("health_batches", 4)), log=_info)
                bm = config.checkpoint.best_metric
                if bm and bm in last_eval:
                    better = (best is None or (last_eval[bm] < best["value"] if config.checkpoint.best_mode == "min"
                                               else last_eval[bm] > best["value"]))
                    if better:
                        best = {"metric": bm, "value": last_eval[bm], "step": step}
                thr.resume()
            if is_save:
                thr.pause()
                ckpt.save(step, state, meta_now(step), metrics=eval_metrics)
                thr.resume()
    except TrainingDiverged as err:
        progress.close()
        ckpt.close()
        writer.write(step, {}, event="diverged", message=str(err))
        writer.close()
        raise
    finally:
        feed.close()
    progress.close()
    ckpt.close()
    if start_step > 0 and jax.process_index() == 0:  # resumed: the rows logged before the restart count too
        logged_train, logged_eval = last_logged(os.path.join(workdir, "metrics.jsonl"))
        last_train = last_train or logged_train
        last_eval = last_eval or logged_eval

    summary = {
        "steps": total, "start_step": start_step, "final_train": last_train, "final_eval": last_eval,
        "best": best, "samples_per_s": thr.mean_rate(), "samples_per_step": samples_per_step,
        "wall_s": time.time() - t_start, "devices": jax.device_count(), "processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind, "workdir": workdir,
        "feed": "host" if store is None else "device",  # where batches were assembled (data.device_resident)
        "first_step_s": first_step_s, "compile_s": compile_s, "compilation_cache": cache,
    }
    writer.write(total, {}, event="summary")
    writer.close()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as fh:
            json.dump(_finite_or_none(summary), fh, indent=2)
        _info("summary: " + json.dumps(_finite_or_none(summary)))
    return state, summary


def _finite_or_none(x):
    """JSON-safe copy: non-finite floats become None."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def _info(msg: str) -> None:
    log.info(msg)
    if jax.process_index() == 0:
        print(msg, flush=True)
