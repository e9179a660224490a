"""What each ``--mode`` of `mmjax.main` does: ``MODES[mode](config, workdir, input_path=None)``.

Generic over systems; data come from `mmjax.train.data.build_iterator` (the featurised cache
lives in ``<workdir>/data`` unless ``config.data.data_dir``).

* ``featurize``: featurise ``config.data`` (or ``--input``) into the cache and print the counts.
* ``train``: the full recipe. When ``config.pretrain.steps > 0`` it first runs the pretraining
  stage in ``<workdir>/pretrain`` (objective ``config.pretrain.terms``; systems with a
  ``config.system.stage`` get ``"pretrain"``; the ``head`` group is frozen, see `pretrain_config`),
  then the supervised stage in ``<workdir>`` initialised from it (``config.objective.terms``; stage ``"finetune"``). Without a pretraining
  stage it trains ``config.objective`` directly. Ends with metrics in real units on the test
  split (``summary.json["test"]``) when the system has prediction heads, and prints a summary.
* ``pretrain``: only the pretraining stage, in ``<workdir>``.
* ``finetune``: the supervised stage starting from ``config.train.init_from`` (a workdir or
  checkpoint folder); every same-path, same-shape parameter is loaded, the rest (e.g. heads of
  new targets) starts fresh.
* ``probe``: like finetune with every parameter group except ``head`` frozen (optimiser
  multiplier 0: frozen trunk, heads only — the XxaCT-NN transfer protocol).
* ``evaluate``, ``predict``, ``embed``: `mmjax.train.inference`.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Callable

import jax
import ml_collections

from mmjax.data.cache import featurize_shard, prepare_dataset
from mmjax.systems import build_system
from mmjax.systems.baselines import resolve_packed_tokens
from mmjax.train.data import build_iterator, peek
from mmjax.train.inference import heads_metrics, run_embed, run_evaluate, run_predict
from mmjax.train.loop import ConfigMismatch, _finite_or_none, train


PRETRAIN_DIR = "pretrain"


def _has(section, key: str) -> bool:
    try:
        return key in section
    except TypeError:
        return False


def stage_config(config: ml_collections.ConfigDict, stage: str, *, init_from: str | None = None,
                 frozen_groups: dict | None = None) -> ml_collections.ConfigDict:
    """A copy of `config` for one stage: "pretrain" (``pretrain.steps`` steps of ``pretrain.terms``),
    "supervised" (``objective.terms``), with ``train.init_from`` / frozen optimiser groups set."""
    c = copy.deepcopy(config)
    with c.unlocked():
        if stage == "pretrain":
            pre = c.get("pretrain", None)
            if pre is not None and pre.get("steps", 0) > 0:
                c.train.steps = int(pre.steps)
                if "epochs" in c.train:
                    c.train.epochs = 0.0  # pretraining runs its own step count
            if pre is not None and _has(pre, "terms") and _has(c, "objective") and _has(c.objective, "terms"):
                for k in c.objective.terms:
                    c.objective.terms[k] = float(pre.terms.get(k, 0.0))
            if _has(c.system, "stage"):
                c.system.stage = "pretrain"
            c.checkpoint.best_metric = ""
            if c.train.get("health", "auto") == "auto":
                c.train.health = "on"
        elif stage == "supervised":
            if _has(c.system, "stage"):
                c.system.stage = "finetune"
        else:
            raise ValueError(f"unknown stage {stage!r}")
        if init_from is not None:
            c.train.init_from = init_from
        if frozen_groups:
            c.optim.groups = ml_collections.ConfigDict(dict(frozen_groups), type_safe=False)
    return c


def epochs_to_steps(config: ml_collections.ConfigDict, train_iter) -> ml_collections.ConfigDict:
    """With ``config.train.epochs > 0``: a copy whose ``train.steps`` (and ``optim.steps_per_epoch``)
    come from the actual training set, ``ceil(epochs * ceil(N_train / global batch))``, so a config's
    epoch count holds on any data (not only the embedded default it was written for)."""
    epochs = float(config.train.get("epochs", 0.0) or 0.0)
    dataset = getattr(train_iter, "dataset", None)
    if epochs <= 0 or dataset is None:
        return config
    global_batch = int(config.data.batch_per_device) * jax.device_count()
    per_epoch = max(1, math.ceil(len(dataset) / global_batch))
    c = copy.deepcopy(config)
    with c.unlocked():
        c.train.steps = max(1, math.ceil(epochs * per_epoch))
        c.optim.steps_per_epoch = per_epoch
    if jax.process_index() == 0:
        print(f"train.epochs={epochs:g} over {len(dataset)} training materials at batch {global_batch}: "
              f"{c.train.steps} steps ({per_epoch} per epoch)", flush=True)
    return c


def packed_tokens_from_data(config: ml_collections.ConfigDict, train_iter) -> ml_collections.ConfigDict:
    """`mmjax.systems.baselines.resolve_packed_tokens` on the training iterator's rows and the
    global batch (``system.packed_tokens = -1``: CrabNet's packed-token fraction from the data)."""
    dataset = getattr(train_iter, "dataset", None)
    if dataset is None:
        return config
    global_batch = int(config.data.batch_per_device) * jax.device_count()
    log = (lambda msg: print(msg, flush=True)) if jax.process_index() == 0 else None
    return resolve_packed_tokens(config, dataset, global_batch, log, devices=jax.device_count())


def _train_stage(config, workdir, input_path=None, data_workdir=None):
    """Train in `workdir`; the featurised cache lives under `data_workdir` (default `workdir`)."""
    data_workdir = data_workdir or workdir
    train_iter = build_iterator(config, "train", input_path, workdir=data_workdir)
    config = packed_tokens_from_data(epochs_to_steps(config, train_iter), train_iter)
    system = build_system(config)

    def eval_iter_fn():
        return build_iterator(config, "eval", input_path, workdir=data_workdir)

    state, summary = train(system, config, workdir, train_iter, eval_iter_fn)
    return system, state, summary


def _pretrain_steps(config) -> int:
    pre = config.get("pretrain", None)
    return int(pre.get("steps", 0)) if pre is not None else 0


def run_train(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Pretraining stage (if configured) then supervised training; returns the run summary."""
    workdir = os.path.abspath(workdir)
    pre_summary = None
    init_from = None
    if _pretrain_steps(config) > 0:
        pre_dir = os.path.join(workdir, PRETRAIN_DIR)
        _refuse_pretraining_after_the_fact(config, workdir, pre_dir)
        # the featurised cache (<workdir>/data) is shared by both stages
        _, _, pre_summary = _train_stage(pretrain_config(config, workdir, input_path), pre_dir, input_path, workdir)
        init_from = config.train.init_from or pre_dir
    cfg = stage_config(config, "supervised", init_from=init_from) if pre_summary is not None else config
    system, state, summary = _train_stage(cfg, workdir, input_path)
    if pre_summary is not None:
        summary["pretrain"] = {k: pre_summary[k] for k in ("steps", "final_train", "final_eval", "wall_s")}
    test = heads_metrics(system, cfg, workdir, state.params, "test")
    if test:
        summary["test"] = test
    _write_summary(workdir, summary)
    _print_summary(summary)
    return summary


def _refuse_pretraining_after_the_fact(config, workdir: str, pre_dir: str) -> None:
    """Before any work: supervised checkpoints in `workdir` with no pretraining stage beside them
    were trained without this config's pretraining, so the supervised stage would refuse to resume
    (`ConfigMismatch`) only after pretraining had run. Say so now, naming the key."""
    if config.resume_mismatch:
        return
    has = lambda d: os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))  # noqa: E731
    if has(os.path.join(workdir, "checkpoints")) and not has(os.path.join(pre_dir, "checkpoints")):
        raise ConfigMismatch(
            f"{workdir} holds checkpoints of a run without a pretraining stage, and this config pretrains "
            f"(pretrain.steps={_pretrain_steps(config)}). Use another --workdir, pass --config.pretrain.steps=0 "
            "to resume it, or --config.resume_mismatch=True to resume anyway.")


def run_pretrain(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Only the pretraining stage (``config.pretrain``), written to `workdir`."""
    workdir = os.path.abspath(workdir)
    _, _, summary = _train_stage(pretrain_config(config, workdir, input_path), workdir, input_path)
    _print_summary(summary)
    return summary


def run_finetune(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Supervised training initialised from ``config.train.init_from``."""
    if not config.train.init_from:
        raise ValueError("--mode=finetune needs --config.train.init_from=<pretraining workdir or checkpoint>")
    return _supervised(stage_config(config, "supervised"), workdir, input_path)


def param_groups(system, config, workdir, input_path=None) -> list[str]:
    """Sorted parameter-group labels of `system` (shapes only, from one batch of the train split)."""
    it = build_iterator(config, "train", input_path, workdir=workdir)
    params = jax.eval_shape(system.init, jax.random.PRNGKey(0), peek(it))
    return sorted(set(jax.tree.leaves(system.param_labels(params))))


def pretrain_config(config, data_workdir, input_path=None) -> ml_collections.ConfigDict:
    """`stage_config` "pretrain", with the ``head`` group frozen (multiplier 0) when the system has
    one: pretraining leaves the prediction heads exactly at their initial values, so the supervised
    stage starts from pretrained encoders and fresh heads."""
    c = stage_config(config, "pretrain")
    if "head" in param_groups(build_system(c), c, data_workdir, input_path) and "head" not in c.optim.groups:
        c = stage_config(c, "pretrain", frozen_groups={**c.optim.groups.to_dict(), "head": 0.0})
    return c


def probe_groups(system, config, workdir, input_path=None) -> dict[str, float]:
    """Optimiser multipliers freezing every parameter group except ``head``."""
    labels = param_groups(system, config, workdir, input_path)
    if "head" not in labels:
        raise ValueError(f"system {system.name!r} has no 'head' parameter group to probe (groups: {labels}); "
                         "configure prediction targets")
    return {g: 0.0 for g in labels if g != "head"}


def run_probe(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Heads only on a frozen trunk loaded from ``config.train.init_from``."""
    if not config.train.init_from:
        raise ValueError("--mode=probe needs --config.train.init_from=<trained workdir or checkpoint>")
    cfg = stage_config(config, "supervised")
    groups = probe_groups(build_system(cfg), cfg, os.path.abspath(workdir), input_path)
    return _supervised(stage_config(cfg, "supervised", frozen_groups=groups), workdir, input_path)


def _supervised(cfg, workdir, input_path):
    workdir = os.path.abspath(workdir)
    system, state, summary = _train_stage(cfg, workdir, input_path)
    test = heads_metrics(system, cfg, workdir, state.params, "test")
    if test:
        summary["test"] = test
    _write_summary(workdir, summary)
    _print_summary(summary)
    return summary


def run_featurize(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Featurise ``config.data`` (or `input_path`) into the cache; returns the manifest counts."""
    num_shards = int(config.data.get("num_shards", 1))
    if num_shards > 1:  # one task of a cluster job array (or the final merge with shard_index=-1)
        out = featurize_shard(config, os.path.abspath(workdir), int(config.data.get("shard_index", 0)), num_shards,
                              input_path)
    else:
        ds = prepare_dataset(config, os.path.abspath(workdir), input_path)
        out = {"path": str(ds.root), "records": len(ds), **ds.manifest.counts,
               "availability": ds.manifest.availability}
    if jax.process_index() == 0:
        print(json.dumps(out, indent=2, default=str), flush=True)
    return out


def _write_summary(workdir: str, summary: dict) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as fh:
            json.dump(_finite_or_none(summary), fh, indent=2)


def _print_summary(summary: dict) -> None:
    if jax.process_index() != 0:
        return
    lines = [f"run summary ({summary.get('workdir', '')}):"]
    if "pretrain" in summary:
        p = summary["pretrain"]
        lines.append(f"  pretrain: {p['steps']} steps, {p['wall_s']:.1f} s, final " + _fmt(p["final_train"]))
    lines.append(f"  train: {summary['steps']} steps, {summary['wall_s']:.1f} s, "
                 f"{summary.get('samples_per_s') or 0:.0f} samples/s, final " + _fmt(summary["final_train"]))
    if summary.get("final_eval"):
        lines.append("  eval: " + _fmt(summary["final_eval"]))
    if summary.get("test"):
        lines.append("  test (target units): " + _fmt(summary["test"]))
    print("\n".join(lines), flush=True)


def _fmt(metrics: dict) -> str:
    keep = {k: v for k, v in metrics.items() if not k.endswith("/n") and "present/" not in k}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(keep.items()))


MODES: dict[str, Callable] = {
    "featurize": run_featurize,
    "pretrain": run_pretrain,
    "train": run_train,
    "finetune": run_finetune,
    "probe": run_probe,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "embed": run_embed,
}


def register_mode(name: str, fn: Callable) -> None:
    """Install or replace ``MODES[name]`` (``fn(config, workdir, input_path=None)``)."""
    MODES[name] = fn
