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
* ``evaluate``: the newest checkpoint on ``config.data.evaluate_split`` (default "test"): per
  target MAE (target units) or accuracy, and the objective's terms (normalised units, under
  ``<split>/normalised/``), all sample-weighted means -> ``<workdir>/evaluate.json``.
* ``predict``: `System.predict` over ``--input`` (CIF folder / CSV / JSON, featurised like the
  training data) or ``config.data.predict_split`` -> ``<workdir>/predictions.csv``: ``id`` then
  one column per target (regression in target units; classification as the class label, e.g.
  space group 1..230), plus ``<target>_sigma`` (exp(log sigma) x std, target units) for a
  ``robust_l1`` target, ``crystal_system_name`` beside the crystal-system index, and
  ``<target>_true`` where the input has labels; a vector target (``config.data.target_dims``)
  gives each of these per component, ``<target>_<i>[_sigma|_true]``. ``predictions.npz`` holds ``ids``, the raw head
  outputs (normalised units, logits) and ``<target>_probabilities`` (softmax) of classification
  targets, rows as in the CSV.
* ``embed``: `System.embed` over the same inputs -> ``<workdir>/embeddings.npz`` with ``ids``
  (unicode) and one float32 [n, d] array per modality (plain arrays, no pickle).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from mmjax.data.schema import CRYSTAL_SYSTEMS

from mmjax.train import mesh as mesh_lib
from mmjax.data.cache import training_target_stats
from mmjax.data.spec import config_option
from mmjax.train.data import build_iterator, peek
from mmjax.train.loop import build_engine, evaluate, make_checkpointer, sharded_target, train
from mmjax.train.model_folder import training_config
from mmjax.train.outputs import collect_outputs
from mmjax.train.step import make_eval_step

PRETRAIN_DIR = "pretrain"


def _system(config):
    from mmjax.systems import build_system

    return build_system(config)


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


def _train_stage(config, workdir, input_path=None, data_workdir=None):
    """Train in `workdir`; the featurised cache lives under `data_workdir` (default `workdir`)."""
    data_workdir = data_workdir or workdir
    train_iter = build_iterator(config, "train", input_path, workdir=data_workdir)
    config = epochs_to_steps(config, train_iter)
    system = _system(config)

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
    test = _heads_metrics(system, cfg, workdir, state.params, "test")
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
        from mmjax.train.loop import ConfigMismatch

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
    if "head" in param_groups(_system(c), c, data_workdir, input_path) and "head" not in c.optim.groups:
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
    groups = probe_groups(_system(cfg), cfg, os.path.abspath(workdir), input_path)
    return _supervised(stage_config(cfg, "supervised", frozen_groups=groups), workdir, input_path)


def _supervised(cfg, workdir, input_path):
    workdir = os.path.abspath(workdir)
    system, state, summary = _train_stage(cfg, workdir, input_path)
    test = _heads_metrics(system, cfg, workdir, state.params, "test")
    if test:
        summary["test"] = test
    _write_summary(workdir, summary)
    _print_summary(summary)
    return summary


def run_featurize(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Featurise ``config.data`` (or `input_path`) into the cache; returns the manifest counts."""
    from mmjax.data.cache import featurize_shard, prepare_dataset

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


# ------------------------------------------------------------------------------ restore / apply


def _restore_params(system, config, workdir, example_host_batch):
    eng = build_engine(system, config, example_host_batch)
    ckpt = make_checkpointer(config, workdir)
    try:
        restored = ckpt.restore_latest_params(sharded_target(eng["abstract"], eng["shardings"]).params)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first")
    step, params = restored
    return eng, params, step


def target_stats(config, workdir: str) -> dict:
    """Target kinds and normalisation of the training data; cached in ``<workdir>/targets.json``
    (`mmjax.data.cache.training_target_stats`)."""
    return training_target_stats(config, workdir)


def to_target_units(values: np.ndarray, st: dict) -> np.ndarray:
    """Batched (normalised) regression values ``[n]`` / ``[n, d]`` -> target units (float64):
    ``y * std + mean``, per component for a vector target."""
    return (np.asarray(values, np.float64) * np.asarray(st["std"], np.float64)
            + np.asarray(st["mean"], np.float64))


def real_unit_outputs(outputs: dict[str, np.ndarray], stats: dict) -> dict[str, np.ndarray]:
    """Predictions in target units: regression ``y * std + mean``; classification the argmax
    class plus its label offset (e.g. space group 1..230). Keys: target names."""
    out = {}
    for name, st in stats.items():
        if name not in outputs:
            continue
        v = np.asarray(outputs[name])
        if st["kind"] == "regression":
            out[name] = to_target_units(v, st)
        else:
            out[name] = np.argmax(v, axis=-1) + int(st["offset"])
    return out


def prediction_metrics(outputs: dict[str, np.ndarray], stats: dict) -> dict[str, float]:
    """``<target>/mae`` (target units) or ``<target>/accuracy`` over labelled rows, with ``<target>/n``.
    A vector target's MAE runs over its labelled components (``/n`` counts them), and
    ``<target>/mae_<i>`` gives each component's."""
    pred = real_unit_outputs(outputs, stats)
    metrics = {}
    for name, st in stats.items():
        if name not in pred or f"target/{name}" not in outputs:
            continue
        mask = outputs[f"target_mask/{name}"].astype(bool)
        if not mask.any():
            continue
        if st["kind"] == "regression":
            err = np.abs(pred[name] - to_target_units(outputs[f"target/{name}"], st))
            metrics[f"{name}/mae"] = float(np.mean(err[mask]))
            if err.ndim == 2:
                for i in range(err.shape[1]):
                    if mask[:, i].any():
                        metrics[f"{name}/mae_{i}"] = float(np.mean(err[mask[:, i], i]))
        else:
            y = outputs[f"target/{name}"][mask]
            metrics[f"{name}/accuracy"] = float(np.mean(pred[name][mask] == y + int(st["offset"])))
        metrics[f"{name}/n"] = int(mask.sum())
    return metrics


def _heads_metrics(system, config, workdir, params, split) -> dict:
    """Real-unit metrics of trained heads on `split` ({} when the system has no heads / no data)."""
    stats = target_stats(config, workdir)
    if not stats or config.data.source == "synthetic":
        return {}
    try:
        it = build_iterator(config, split, workdir=workdir)
    except ValueError:  # e.g. an empty test split of a tiny dataset
        return {}
    mesh = mesh_lib.make_mesh()
    shardings = jax.tree.map(lambda x: x.sharding, params)
    try:
        outputs = collect_outputs(system.predict, params, shardings, mesh, it, with_targets=True)
    except NotImplementedError:
        return {}
    return prediction_metrics(outputs, stats)


def run_evaluate(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None,
                 output: str | None = None, overrides: dict | None = None) -> dict:
    """Newest checkpoint on ``config.data.evaluate_split`` (or ``--input``) -> ``evaluate.json``.

    Every metric named ``<split>/<target>/<metric>`` is in the target's own units (MAE de-normalised
    with the training statistics; accuracy over the labelled rows) and is a mean over samples. The
    objective's own terms, computed on normalised targets, are kept apart under
    ``<split>/normalised/<name>`` whenever targets are normalised (so no key mixes units); without
    target statistics (synthetic data) they are ``<split>/<name>`` as the training run logs them.
    """
    workdir = os.path.abspath(workdir)
    config = training_config(config, workdir, overrides)
    if input_path:
        config = _with_input_cache_beside(config, output)
    system = _system(config)
    split = "predict" if input_path else config.data.get("evaluate_split", "eval")
    it = build_iterator(config, split, input_path, workdir=workdir)
    eng, params, step = _restore_params(system, config, workdir, peek(it))
    stats = target_stats(config, workdir)
    metrics = evaluate(make_eval_step(system, eng["shardings"].params, eng["mesh"]), params, it, eng["mesh"],
                       jax.random.PRNGKey(config.seed + 1), prefix=f"{split}/normalised/" if stats else f"{split}/")
    out = {"step": step, "split": split, **metrics}
    if stats:
        try:
            outputs = collect_outputs(system.predict, params, eng["shardings"].params, eng["mesh"],
                                      build_iterator(config, split, input_path, workdir=workdir), with_targets=True)
            out.update({f"{split}/{k}": v for k, v in prediction_metrics(outputs, stats).items()})
        except NotImplementedError:
            pass
    if jax.process_index() == 0:
        with open(_output_path(workdir, output, "evaluate.json"), "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
        print(json.dumps(out), flush=True)
    return out


def _output_path(workdir: str, output: str | None, default_name: str) -> str:
    """Where a read-only mode writes: ``output`` (its folder created) or ``<workdir>/<default_name>``."""
    if not output:
        return os.path.join(os.path.abspath(workdir), default_name)
    path = os.path.abspath(output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _with_input_cache_beside(config, output: str | None):
    """With ``--output`` and no ``data.data_dir``: featurised inputs are cached beside the output
    (so a read-only model folder is only read)."""
    if not output or config_option(config.data, "data_dir", ""):
        return config
    c = copy.deepcopy(config)
    with c.unlocked():
        c.data.data_dir = os.path.join(os.path.dirname(os.path.abspath(output)), "mmjax_input_cache")
    return c


def _apply_mode(method: str, config, workdir, input_path, output: str | None = None,
                overrides: dict | None = None) -> tuple[dict, dict]:
    workdir = os.path.abspath(workdir)
    config = training_config(config, workdir, overrides)
    system = _system(config)
    it = build_iterator(_with_input_cache_beside(config, output) if input_path else config, "predict", input_path,
                        workdir=workdir)
    eng, params, _ = _restore_params(system, config, workdir, peek(it))
    outputs = collect_outputs(getattr(system, method), params, eng["shardings"].params, eng["mesh"], it,
                              with_targets=method == "predict")
    return outputs, target_stats(config, workdir) if method == "predict" else {}


def run_predict(config, workdir, input_path=None, output: str | None = None, overrides: dict | None = None) -> dict:
    """`System.predict` -> ``<workdir>/predictions.csv`` or ``output`` (see module docstring);
    returns the columns."""
    outputs, stats = _apply_mode("predict", config, workdir, input_path, output, overrides)
    names = [k for k in outputs if "/" not in k and k != "ids"]
    real = real_unit_outputs(outputs, stats)
    columns = {"id": outputs["ids"]}
    for name in names:
        vector = stats.get(name, {}).get("shape")
        _put(columns, name, real.get(name, outputs[name]), vector)
        if f"{name}/log_sigma" in outputs and stats.get(name, {}).get("kind") == "regression":
            # RobustL1 heads: the predicted scale in target units (CrabNet's uncertainty)
            sigma = np.exp(outputs[f"{name}/log_sigma"].astype(np.float64)) * np.asarray(stats[name]["std"])
            _put(columns, name, sigma, vector, "_sigma")
        if name == "crystal_system" and name in real:
            columns["crystal_system_name"] = np.asarray(
                [CRYSTAL_SYSTEMS[int(i)] if 0 <= int(i) < len(CRYSTAL_SYSTEMS) else "" for i in real[name]])
    for name in names:
        if f"target/{name}" in outputs and name in stats:
            st, mask = stats[name], outputs[f"target_mask/{name}"].astype(bool)
            y = outputs[f"target/{name}"].astype(np.float64)
            y = to_target_units(y, st) if st["kind"] == "regression" else y + st["offset"]
            _put(columns, name, np.where(mask, y, np.nan), st.get("shape"), "_true")
    if jax.process_index() == 0:
        path = _output_path(workdir, output, "predictions.csv")
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(list(columns))
            for row in zip(*[_csv_column(v) for v in columns.values()]):
                w.writerow(row)
        # ids, the raw head outputs (normalised units / logits) and class probabilities, rows as in the CSV
        raw = {k: np.asarray(outputs[k]) for k in names}
        probs = {f"{k}_probabilities": _softmax(v) for k, v in raw.items() if stats.get(k, {}).get("kind") != "regression"
                 and v.ndim == 2}
        np.savez(os.path.splitext(path)[0] + ".npz", ids=np.asarray(outputs["ids"]).astype(str), **raw, **probs)
        print(f"wrote {path}: {len(outputs['ids'])} rows, columns {list(columns)}", flush=True)
    return columns


def _put(columns: dict, name: str, values: np.ndarray, vector, suffix: str = "") -> None:
    """CSV column ``name + suffix``; a vector target's ``[n, d]`` values one column per component,
    ``<name>_<i><suffix>``."""
    if vector:
        for i in range(np.asarray(values).shape[1]):
            columns[f"{name}_{i}{suffix}"] = np.asarray(values)[:, i]
    else:
        columns[f"{name}{suffix}"] = values


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _csv_column(v: np.ndarray) -> list:
    v = np.asarray(v)
    if v.ndim > 1:  # a head without target statistics: keep its raw outputs
        return [" ".join(f"{x:.6g}" for x in row) for row in v]
    if v.dtype.kind == "f":
        return ["" if not np.isfinite(x) else f"{x:.8g}" for x in v]
    return [str(x) for x in v]


def run_embed(config, workdir, input_path=None, output: str | None = None, overrides: dict | None = None) -> dict:
    """`System.embed` -> ``<workdir>/embeddings.npz`` or ``output`` (``ids`` + one [n, d] array
    per modality)."""
    outputs, _ = _apply_mode("embed", config, workdir, input_path, output, overrides)
    arrays = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in outputs.items()}
    if jax.process_index() == 0:
        path = _output_path(workdir, output, "embeddings.npz")
        np.savez(path, **arrays)
        print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()), flush=True)
    return arrays


# ------------------------------------------------------------------------------ summaries


def _write_summary(workdir: str, summary: dict) -> None:
    from mmjax.train.loop import _finite_or_none

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
