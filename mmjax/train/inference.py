"""Inference modes of `mmjax.main` on a trained model folder: ``evaluate``, ``predict``, ``embed``
(registered in `mmjax.train.modes.MODES`), and the conversions to target units they share.

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
import os

import jax
import ml_collections
import numpy as np

from mmjax.data.cache import training_target_stats
from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.data.spec import config_option
from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.data import build_iterator, peek
from mmjax.train.loop import build_engine, evaluate, make_checkpointer, sharded_target
from mmjax.train.model_folder import training_config
from mmjax.train.outputs import collect_outputs
from mmjax.train.step import make_eval_step


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
            cls = np.argmax(v, axis=-1) + int(st["offset"])
            ok = np.isfinite(v).all(axis=-1)  # NaN logits: no input for the row (no class, not class 0)
            out[name] = cls if ok.all() else np.where(ok, cls.astype(np.float64), np.nan)
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
        raw = np.asarray(outputs[name])  # NaN where the model had no input for the row (`head_rows`)
        has_input = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
        mask = mask & has_input.reshape(has_input.shape + (1,) * (mask.ndim - 1))
        if (~has_input).any():
            metrics[f"{name}/no_input"] = int((~has_input).sum())
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


def heads_metrics(system, config, workdir, params, split) -> dict:
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
    system = build_system(config)
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
            scores = prediction_metrics(outputs, stats)
        except NotImplementedError:
            scores = None
        if scores is not None:
            unlabelled = sorted(name for name in stats if not scores.get(f"{name}/n"))
            where = input_path or f"the {split} split"
            if len(unlabelled) == len(stats):  # a score of nothing is not a score
                raise ValueError(f"{where}: no row has a label for {unlabelled}; nothing to evaluate "
                                 "(--mode=predict writes predictions for unlabelled rows)")
            if unlabelled and jax.process_index() == 0:
                print(f"warning: {where} has no label for {unlabelled}: not scored", flush=True)
            out.update({f"{split}/{k}": v for k, v in scores.items()})
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
    system = build_system(config)
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
                [CRYSTAL_SYSTEMS[int(i)] if np.isfinite(i) and 0 <= int(i) < len(CRYSTAL_SYSTEMS) else ""
                 for i in real[name]])
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
