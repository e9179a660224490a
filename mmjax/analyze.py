"""The papers' analyses as commands: ``python -m mmjax.analyze <command> --config=... --workdir=W``.

Commands (each writes JSON metrics + PNG plots under ``W`` and prints a short text table):

* ``xxact-convergence`` (XxaCT-NN Table 2 / Fig. 6): the full recipe of the config (`run_train`)
  once per pretraining variant — ``none`` (supervised only), ``clip``, ``mxm``, ``both`` — in
  ``W/<variant>/``, same seed and same supervised steps; the validation curve of each run
  (``metrics.jsonl``, evaluated ``--eval_points`` times) gives the steps to reach a threshold
  (``--threshold``, default the no-pretraining run's best value), the speed-up over ``none`` and
  the best value so far at 5 / 15 / 25 % of training -> ``W/convergence.{json,png}``.
* ``per-class-accuracy`` (XxaCT-NN Table 4): a trained model (``--init_from``, default ``W``)
  predicts the test split; accuracy within each true class of ``--target`` (default
  crystal_system) -> ``W/predictions.csv``, ``W/per_class_accuracy.{json,png}``.
* ``learning-curve`` (XxaCT-NN Fig. 3): the supervised stage on nested random subsets of the
  training split of sizes ``--sizes`` (default ``--fractions`` of it), each in ``W/n<size>/``,
  evaluated on the same test split; power-law fit err = a·n^b per target (MAE for regression,
  error rate for classification) -> ``W/learning_curve.{json,png}``.
* ``linear-probe`` (MatBind): embeddings (`System.embed`) of a trained model's encoders on the
  train / validation / test splits, logistic probes for space group (231-way: labels 1..230,
  0 = unknown) and crystal system (7-way), ridge probes for every regression target the dataset
  has -> ``W/linear_probe.{json,png}``, ``W/linear_probe/probe_<modality>_<label>.json``,
  ``W/linear_probe/embeddings.npz``.
* ``finetune-tasks`` (MultiMat): for each ``--targets`` (default every regression target of the
  dataset) fine-tune the encoder + a new linear head from ``--init_from`` (`run_finetune`, in
  ``W/<target>/``) and report test MAE beside the predict-the-training-mean baseline
  -> ``W/finetune_tasks.{json,png}``.
* ``elastic-tensor`` (MultiMat's 15-output elastic tensor): the data layer stores scalar targets
  only, so this task is a probe on its own data: DOS of ``--data``/dos_mp408.npz on the fixed
  Fermi-shifted grid -> ridge and linear-head probes for the 15 columns ``elastic_C..`` of
  ``--data``/moduli_mp100.csv.gz (`elastic_tensor_probe`) -> ``W/elastic_tensor.{json,png}``.

Every command also takes the config overrides of `mmjax.main` (``--config.train.steps=...``).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np

from mmjax.eval.analyses import (convergence_speedup, learning_curve, per_class_accuracy, power_law_fit,
                                 read_metrics_jsonl)
from mmjax.eval.report import format_table, new_figure, save_figure, write_json

VARIANTS = ("none", "clip", "mxm", "both")
# Pretraining terms switched on per variant (every other pretraining term is set to 0).
VARIANT_TERMS = {"none": (), "clip": ("clip",), "mxm": ("mxm",), "both": ("mxm", "clip")}
DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
SPACE_GROUP_CLASSES = 231  # MatBind linear probe: labels 1..230 and 0 = unknown
CLASS_LABELS = ("crystal_system", "space_group")


# ------------------------------------------------------------------------------ helpers


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return copy.deepcopy(config)


def _set(config: ml_collections.ConfigDict, **values) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys (``"train.steps"``, written with ``__``) set."""
    c = _copy(config)
    with c.unlocked():
        for dotted, value in values.items():
            *path, last = dotted.split("__")
            node = c
            for p in path:
                node = node[p]
            node[last] = value
    return c


def shared_data_config(config: ml_collections.ConfigDict, workdir: str,
                       model_dir: str | None = None) -> ml_collections.ConfigDict:
    """`config` with ``data.data_dir`` set so that every run of an analysis reads one featurised
    cache: the config's own ``data_dir`` if set, else ``<model_dir>/data`` when that exists (the
    trained model's cache), else ``<workdir>/data``."""
    if config.data.get("data_dir", ""):
        return _copy(config)
    home = os.path.join(os.path.abspath(model_dir), "data") if model_dir else ""
    if not (home and os.path.isdir(home)):
        home = os.path.join(os.path.abspath(workdir), "data")
    return _set(config, data__data_dir=home)


def _targets(config) -> tuple[str, ...]:
    from mmjax.data.spec import config_targets

    return tuple(config_targets(config))


def _dataset(config, workdir):
    from mmjax.data.cache import prepare_dataset

    return prepare_dataset(config, workdir)


def _print(text: str) -> None:
    if jax.process_index() == 0:
        print(text, flush=True)


def load_model_params(model_dir: str):
    """Parameters of the newest checkpoint under `model_dir` (a workdir, its ``checkpoints/`` or a
    step folder), replicated over this process's mesh. Returns (params, shardings, mesh)."""
    from mmjax.train import mesh as mesh_lib
    from mmjax.train.checkpoint import load_params

    mesh = mesh_lib.make_mesh()
    rep = mesh_lib.replicated(mesh)
    params = jax.device_put(load_params(model_dir), rep)
    return params, jax.tree.map(lambda _: rep, params), mesh


def split_outputs(config, model_dir: str, method: str, split: str, *, with_targets: bool = False) -> dict:
    """``System.<method>`` (``"predict"`` / ``"embed"``) of the model in `model_dir` over one pass of
    `split` of the configured data: ``{output: [n, ...], "ids": [n]}`` (`collect_outputs`)."""
    from mmjax.systems import build_system
    from mmjax.train.data import build_iterator
    from mmjax.train.modes import collect_outputs

    system = build_system(config)
    params, shardings, mesh = load_model_params(model_dir)
    it = build_iterator(config, split, workdir=model_dir)
    return collect_outputs(getattr(system, method), params, shardings, mesh, it, with_targets=with_targets)


def _stage_steps(config) -> int:
    return int(config.train.steps)


# ------------------------------------------------------------------------------ 1. convergence


def variant_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """`config` for one pretraining variant of XxaCT-NN Table 2: ``none`` has no pretraining stage
    (``pretrain.steps = 0``); ``clip`` / ``mxm`` / ``both`` keep ``pretrain.steps`` and set
    ``pretrain.terms`` to weight 1 on their terms and 0 on every other term."""
    if variant not in VARIANT_TERMS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    c = _copy(config)
    with c.unlocked():
        if variant == "none":
            c.pretrain.steps = 0
            return c
        if int(c.pretrain.get("steps", 0)) <= 0:
            raise ValueError(f"variant {variant!r} needs a pretraining stage: set --config.pretrain.steps > 0")
        terms = c.pretrain.terms
        missing = [t for t in VARIANT_TERMS[variant] if t not in terms]
        if missing:
            raise ValueError(f"variant {variant!r}: config.pretrain.terms has no {missing} (it has {list(terms)}); "
                             "use an XxaCT-NN config (configs/xxact.py)")
        for k in terms:
            terms[k] = 1.0 if k in VARIANT_TERMS[variant] else 0.0
    return c


def default_metric(config) -> tuple[str, str]:
    """(validation key, "min" | "max"): ``eval/<first regression target>/mae``, else the first
    classification target's ``eval/<name>/accuracy``, else ``eval/loss``."""
    targets = _targets(config)
    for t in targets:
        if t not in CLASS_LABELS:
            return f"eval/{t}/mae", "min"
    if targets:
        return f"eval/{targets[0]}/accuracy", "max"
    return "eval/loss", "min"


def xxact_convergence(config: ml_collections.ConfigDict, workdir: str, *, variants: Sequence[str] = VARIANTS,
                      threshold: float | None = None, metric: str | None = None, eval_points: int = 20,
                      fractions: Sequence[float] = (0.05, 0.15, 0.25)) -> tuple[dict, str]:
    """XxaCT-NN Table 2: train every variant (`variant_config`) with `run_train` in
    ``<workdir>/<variant>`` (one featurised cache in ``<workdir>/data`` unless the config has
    ``data.data_dir``), validation every ``train.steps // eval_points`` steps, then
    `convergence_speedup` with baseline ``none`` (included automatically). Returns (results, table);
    results add per-variant wall time (s) and pretraining steps."""
    from mmjax.train.modes import run_train

    workdir = os.path.abspath(workdir)
    variants = list(dict.fromkeys(["none", *variants]))
    base = shared_data_config(config, workdir)
    steps = _stage_steps(base)
    base = _set(base, train__eval_every=max(1, steps // max(1, int(eval_points))))
    key, mode = (metric, "max" if metric.endswith("accuracy") else "min") if metric else default_metric(base)
    runs, extra = {}, {}
    for v in variants:
        c = variant_config(base, v)
        t0 = time.time()
        summary = run_train(c, os.path.join(workdir, v))
        extra[v] = {"wall_s": time.time() - t0, "pretrain_steps": int(c.pretrain.get("steps", 0)),
                    "supervised_steps": int(summary["steps"]), "test": summary.get("test", {})}
        runs[v] = os.path.join(workdir, v, "metrics.jsonl")
    res, table = convergence_speedup(runs, "none", key=key, mode=mode, threshold=threshold, fractions=fractions,
                                     out_dir=workdir, extra={"variants": extra, "eval_every": base.train.eval_every})
    _print(f"convergence (XxaCT-NN Table 2), {key} ({mode}), threshold {res['threshold']:.4g}:\n{table}")
    return res, table


# ------------------------------------------------------------------------------ 2. per-class accuracy


def class_names(target: str) -> list[str] | None:
    """Display names of the class labels of `target` as predictions carry them (real labels:
    crystal system index -> name; space group 1..230 -> its number)."""
    from mmjax.data.schema import CRYSTAL_SYSTEMS

    return list(CRYSTAL_SYSTEMS) if target == "crystal_system" else None


def per_class_accuracy_analysis(config: ml_collections.ConfigDict, workdir: str, *, target: str = "crystal_system",
                                init_from: str | None = None, split: str = "test") -> tuple[dict, str]:
    """XxaCT-NN Table 4: predictions of the model in `init_from` (default `workdir`) on `split` ->
    ``<workdir>/predictions.csv`` (id, predicted and true class label) and
    ``per_class_accuracy.{json,png}`` (accuracy within each true class, "mean" = overall)."""
    from mmjax.train.modes import real_unit_outputs, target_stats

    workdir = os.path.abspath(workdir)
    model_dir = os.path.abspath(init_from or workdir)
    cfg = shared_data_config(config, workdir, model_dir)
    if target not in _targets(cfg):
        raise ValueError(f"--target={target!r} is not a target of this config (targets: {list(_targets(cfg))})")
    stats = target_stats(cfg, model_dir)
    if stats.get(target, {}).get("kind") != "class":
        raise ValueError(f"--target={target!r} is not a classification target of the model in {model_dir} "
                         f"(targets: {stats})")
    out = split_outputs(cfg, model_dir, "predict", split, with_targets=True)
    mask = out[f"target_mask/{target}"].astype(bool)
    if not mask.any():
        raise ValueError(f"the {split!r} split has no {target!r} labels")
    offset = int(stats[target]["offset"])
    pred = real_unit_outputs(out, stats)[target][mask]
    true = out[f"target/{target}"][mask].astype(np.int64) + offset
    ids = out["ids"][mask]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "predictions.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", f"{target}_pred", f"{target}_true"])
        w.writerows(zip(ids, pred.tolist(), true.tolist()))
    names = class_names(target)
    acc = per_class_accuracy(true, pred, names)
    counts = {(names[int(c)] if names else str(c)): int(np.sum(true == c)) for c in np.unique(true)}
    res = {"target": target, "split": split, "model": model_dir, "n": int(mask.sum()), "accuracy": acc,
           "counts": counts}
    write_json(os.path.join(workdir, "per_class_accuracy.json"), res)
    fig, ax = new_figure()
    classes = [k for k in acc if k != "mean"]
    ax.bar(range(len(classes)), [acc[k] for k in classes], color="tab:blue")
    ax.axhline(acc["mean"], color="k", ls="--", lw=0.8, label=f"overall {acc['mean']:.3f}")
    ax.set_xticks(range(len(classes)), [f"{k}\n(n={counts[k]})" for k in classes], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"{split} accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(workdir, "per_class_accuracy.png"))
    table = format_table([{"class": k, "n": counts.get(k, int(mask.sum())), "accuracy": v} for k, v in acc.items()],
                         digits=3)
    _print(f"per-class {target} accuracy (XxaCT-NN Table 4), {split} split:\n{table}")
    return res, table


# ------------------------------------------------------------------------------ 3. learning curve


def train_subset_indices(config, n_total: int, size: int) -> np.ndarray:
    """Dataset indices of a random subset of `size` materials of the training split (sorted).

    Subsets are nested: the first `size` of one permutation (``config.data.split_seed``) of the
    training indices, so a larger subset contains every smaller one."""
    from mmjax.data.spec import split_indices

    train = split_indices(config, n_total)["train"]
    if not 1 <= size <= len(train):
        raise ValueError(f"training-subset size {size} is outside [1, {len(train)}] (the training split)")
    perm = np.random.default_rng([int(config.data.get("split_seed", 0)), 1]).permutation(train)
    return np.sort(perm[:size])


def subset_train_iterator(config, data_workdir: str, size: int):
    """Endless shuffled training Batches over `train_subset_indices`: the ``"train"`` split of
    `mmjax.train.data.featurized_source` restricted to `size` materials (same batching, budgets,
    modalities, targets and normalisation). ``.dataset`` is the subset (len == size)."""
    from mmjax.train.data import featurized_source

    return featurized_source(config, "train", workdir=data_workdir,
                             rows=lambda n: train_subset_indices(config, n, size))


def _test_metrics(system, config, workdir, params, data_workdir) -> dict:
    from mmjax.train import mesh as mesh_lib
    from mmjax.train.data import build_iterator
    from mmjax.train.modes import collect_outputs, prediction_metrics, target_stats

    stats = target_stats(config, workdir)
    mesh = mesh_lib.make_mesh()
    shardings = jax.tree.map(lambda x: x.sharding, params)
    out = collect_outputs(system.predict, params, shardings, mesh, build_iterator(config, "test", workdir=data_workdir),
                          with_targets=True)
    return prediction_metrics(out, stats)


def learning_curve_analysis(config: ml_collections.ConfigDict, workdir: str, *, sizes: Sequence[int] | None = None,
                            fractions: Sequence[float] = DEFAULT_FRACTIONS,
                            init_from: str | None = None) -> tuple[dict, str]:
    """XxaCT-NN Fig. 3: the supervised stage (``config.objective``, ``config.train.steps`` steps,
    from `init_from` if given) on nested training subsets; test metrics of each; power-law fits.

    sizes: training-set sizes (default ``round(f * n_train)`` for `fractions`). Each run lives
    in ``<workdir>/n<size>``. Errors fitted: ``<target>/mae`` (target units) for regression
    targets, ``1 - accuracy`` for classification targets (left out of the fit where 0)."""
    from mmjax.systems import build_system
    from mmjax.data.spec import split_indices
    from mmjax.train.data import build_iterator
    from mmjax.train.loop import train
    from mmjax.train.modes import stage_config

    workdir = os.path.abspath(workdir)
    cfg = stage_config(shared_data_config(config, workdir, init_from), "supervised",
                       init_from=os.path.abspath(init_from) if init_from else None)
    ds = _dataset(cfg, workdir)
    n_train = len(split_indices(cfg, len(ds))["train"])
    if sizes is None:
        sizes = sorted({max(1, int(round(f * n_train))) for f in fractions})
    sizes = [int(s) for s in sizes]
    if sorted(set(sizes)) != sizes or len(sizes) < 2:
        raise ValueError(f"learning-curve sizes must be >= 2 distinct increasing values, got {sizes}")
    runs = {}
    for n in sizes:
        run_dir = os.path.join(workdir, f"n{n}")
        system = build_system(cfg)
        train_iter = subset_train_iterator(cfg, workdir, n)
        t0 = time.time()
        state, summary = train(system, cfg, run_dir, train_iter,
                               lambda: build_iterator(cfg, "eval", workdir=workdir))
        test = _test_metrics(system, cfg, run_dir, state.params, workdir)
        runs[n] = {"n_train": len(train_iter.dataset), "steps": int(summary["steps"]), "wall_s": time.time() - t0,
                   "test": test}
    errors = {}
    for key in sorted({k for r in runs.values() for k in r["test"] if not k.endswith("/n")}):
        vals = np.array([runs[n]["test"].get(key, np.nan) for n in sizes], dtype=np.float64)
        name = key.replace("/accuracy", "/error_rate")
        errors[name] = 1.0 - vals if key.endswith("/accuracy") else vals
    fittable = {k: v for k, v in errors.items() if np.all(np.isfinite(v)) and np.all(v > 0)}
    if not fittable:
        raise ValueError(f"no positive test error to fit for sizes {sizes}: {errors}")
    fits, table = learning_curve(np.asarray(sizes), fittable, workdir, ylabel="test error (MAE / error rate)")
    res = {"sizes": sizes, "n_train_split": n_train, "runs": {str(n): r for n, r in runs.items()},
           "errors": errors, "fits": fits}
    write_json(os.path.join(workdir, "learning_curve.json"), res)
    rows = [{"n": n, **{k: errors[k][i] for k in fittable}} for i, n in enumerate(sizes)]
    table = format_table(rows) + "\n\npower law err = a * n^b:\n" + table
    _print(f"learning curve (XxaCT-NN Fig. 3):\n{table}")
    return res, table


# ------------------------------------------------------------------------------ 4. linear probe


def dataset_labels(dataset, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Labels of the materials `ids` from the stored dataset: ``space_group`` int [n] (1..230, 0 =
    unknown), ``crystal_system`` int [n] (index into CRYSTAL_SYSTEMS, -1 = unknown) and every
    regression target ``<name>`` float [n] ([n, d] for a vector target; NaN = missing)."""
    pos = {str(i): k for k, i in enumerate(np.asarray(dataset.ids))}
    missing = [i for i in ids if str(i) not in pos]
    if missing:
        raise KeyError(f"ids not in the dataset at {dataset.root}: {missing[:5]}")
    rows = np.array([pos[str(i)] for i in ids], dtype=np.int64)
    out = {}
    for name, unknown in (("space_group", 0), ("crystal_system", -1)):
        key = f"label/{name}"
        if key in dataset.manifest.schema:
            present, values = dataset.column(key)
            out[name] = np.where(present, values, unknown).astype(np.int64)[rows]
    for name in dataset.manifest.target_names:
        present, values = dataset.column(f"target/{name}")
        present = present.reshape(present.shape + (1,) * (values.ndim - 1))  # a vector target: per row
        out[name] = np.where(present, values.astype(np.float64), np.nan)[rows]
    return out


def linear_probe_analysis(config: ml_collections.ConfigDict, workdir: str, *, init_from: str | None = None,
                          regression_targets: Sequence[str] | None = None, max_epochs: int = 200) -> tuple[dict, str]:
    """MatBind linear probe on frozen embeddings of the model in `init_from` (default `workdir`).

    Embeddings: `System.embed` over the whole dataset (one pass), rows assigned to the config's
    train / eval / test splits. Per embedding (modality): logistic probes (`evaluate_classification_probe`)
    for space group (231 classes) and crystal system (7), ridge probes (`evaluate_regression_probe`)
    for `regression_targets` (default every regression target of the dataset). Hyperparameters
    are chosen on the validation rows; the test rows are only predicted."""
    from mmjax.data.schema import CRYSTAL_SYSTEMS
    from mmjax.eval.probe import evaluate_classification_probe, evaluate_regression_probe
    from mmjax.data.spec import split_indices

    workdir = os.path.abspath(workdir)
    model_dir = os.path.abspath(init_from or workdir)
    cfg = shared_data_config(config, workdir, model_dir)
    out = split_outputs(cfg, model_dir, "embed", "all")
    ds = _dataset(cfg, model_dir)
    parts = split_indices(cfg, len(ds))
    all_ids = np.asarray(ds.ids).astype(str)
    row_of = {i: k for k, i in enumerate(out["ids"])}
    rows = {s: np.array([row_of[i] for i in all_ids[parts[s]]], dtype=np.int64) for s in ("train", "eval", "test")}
    for s, r in rows.items():
        if len(r) < (2 if s == "train" else 1):
            raise ValueError(f"linear-probe: the {s!r} split has {len(r)} materials; set --config.data.split "
                             "so that train, eval and test are non-empty")
    labels = dataset_labels(ds, out["ids"])
    names = [n for n in ds.manifest.target_names if regression_targets is None or n in regression_targets]
    vectors = [n for n in names if labels[n].ndim > 1]
    if vectors and regression_targets is not None:
        raise ValueError(f"linear-probe: {vectors} are vector targets; the probe fits scalar regression targets")
    names = [n for n in names if n not in vectors]  # the probe fits scalar targets only
    embeds = {k: np.asarray(v, np.float64) for k, v in out.items() if k != "ids" and np.ndim(v) == 2}
    probe_dir = os.path.join(workdir, "linear_probe")
    np.savez(os.path.join(_mkdir(probe_dir), "embeddings.npz"), ids=out["ids"],
             **{f"split_{s}": r for s, r in rows.items()}, **{k: v.astype(np.float32) for k, v in embeds.items()})
    res, table_rows = {"model": model_dir, "splits": {s: len(r) for s, r in rows.items()}, "probes": {}}, []
    for mod, x in embeds.items():
        res["probes"][mod] = {}
        for label, n_classes, cnames in (("space_group", SPACE_GROUP_CLASSES, None),
                                         ("crystal_system", len(CRYSTAL_SYSTEMS), list(CRYSTAL_SYSTEMS))):
            if label not in labels:
                continue
            y = labels[label]
            keep = {s: r[y[r] >= 0] for s, r in rows.items()}
            splits = {"train": (x[keep["train"]], y[keep["train"]]), "val": (x[keep["eval"]], y[keep["eval"]]),
                      "test": (x[keep["test"]], y[keep["test"]])}
            r, _ = evaluate_classification_probe(splits, probe_dir, f"{mod}_{label}", n_classes, cnames,
                                                 max_epochs=max_epochs)
            res["probes"][mod][label] = {"test_accuracy": r["test"]["accuracy"],
                                         "test_balanced_accuracy": r["test"]["balanced_accuracy"],
                                         "val_accuracy": r["val"]["accuracy"], "n_test": r["test"]["n"]}
            table_rows.append({"embedding": mod, "task": label, "metric": "accuracy", "test": r["test"]["accuracy"]})
        for name in names:
            y = labels[name]
            keep = {s: r[np.isfinite(y[r])] for s, r in rows.items()}
            if len(keep["train"]) < 2 or not len(keep["eval"]) or not len(keep["test"]):
                continue
            splits = {"train": (x[keep["train"]], y[keep["train"]]), "val": (x[keep["eval"]], y[keep["eval"]]),
                      "test": (x[keep["test"]], y[keep["test"]])}
            r, _ = evaluate_regression_probe(splits, probe_dir, f"{mod}_{name}", train_head=False)
            res["probes"][mod][name] = {"test_mae": r["ridge"]["test"]["mae"], "test_r2": r["ridge"]["test"]["r2"],
                                        "alpha": r["ridge"]["alpha"], "n_test": r["ridge"]["test"]["n"]}
            table_rows.append({"embedding": mod, "task": name, "metric": "mae", "test": r["ridge"]["test"]["mae"]})
    write_json(os.path.join(workdir, "linear_probe.json"), res)
    _bar_chart({(row["embedding"], row["task"]): row["test"] for row in table_rows if row["metric"] == "accuracy"},
               "test accuracy", os.path.join(workdir, "linear_probe.png"))
    table = format_table(table_rows, digits=4)
    _print(f"linear probe (MatBind), frozen embeddings of {model_dir}:\n{table}")
    return res, table


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def _bar_chart(values: dict[tuple[str, str], float], ylabel: str, path: str, baseline: dict | None = None) -> None:
    """Grouped bars: groups = first key part, bars = second."""
    groups = list(dict.fromkeys(g for g, _ in values))
    bars = list(dict.fromkeys(b for _, b in values))
    fig, ax = new_figure()
    width = 0.8 / max(1, len(bars))
    for j, b in enumerate(bars):
        xs = [i + j * width for i, g in enumerate(groups) if (g, b) in values]
        ax.bar(xs, [values[(g, b)] for g in groups if (g, b) in values], width, label=b)
    if baseline:
        for i, g in enumerate(groups):
            if g in baseline:
                ax.hlines(baseline[g], i - 0.5 * width, i + (len(bars) - 0.5) * width, colors="k", linestyles="--")
    ax.set_xticks([i + 0.5 * width * (len(bars) - 1) for i in range(len(groups))], groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ------------------------------------------------------------------------------ 5. fine-tuning tasks


def finetune_target_config(config: ml_collections.ConfigDict, target: str, init_from: str,
                           components: int = 0) -> ml_collections.ConfigDict:
    """`config` for fine-tuning on one regression `target`: ``data.targets = (target,)``, a
    one-output head (``system.targets = {target: 1}`` where the system reads its heads there;
    ``(components,)`` and ``data.target_dims`` for a vector target), ``train.init_from`` = `init_from`."""
    c = _copy(config)
    with c.unlocked():
        c.data.targets = (target,)
        if components:
            c.data.target_dims = ml_collections.ConfigDict({target: int(components)}, type_safe=False)
        if "targets" in c.system:
            c.system.targets = ml_collections.ConfigDict({target: (int(components),) if components else 1},
                                                         type_safe=False)
        c.train.init_from = os.path.abspath(init_from)
    return c


def finetune_tasks(config: ml_collections.ConfigDict, workdir: str, *, init_from: str,
                   targets: Sequence[str] | None = None) -> tuple[dict, str]:
    """MultiMat downstream protocol: for each regression target, `run_finetune` (encoder + new
    linear head, everything trainable, from `init_from`) in ``<workdir>/<target>``; test MAE in
    target units beside the baseline that predicts the training-split mean."""
    from mmjax.data.spec import split_indices
    from mmjax.train.modes import run_finetune

    if not init_from:
        raise ValueError("finetune-tasks needs --init_from=<pretrained workdir or checkpoint>")
    workdir = os.path.abspath(workdir)
    cfg = shared_data_config(config, workdir, init_from)
    ds = _dataset(cfg, workdir)
    have = ds.manifest.target_names
    targets = list(targets) if targets else have
    unknown = [t for t in targets if t not in have]
    if unknown or not targets:
        raise ValueError(f"finetune-tasks: targets {unknown or targets} are not regression targets of the dataset "
                         f"at {ds.root} (it has {have})")
    parts = split_indices(cfg, len(ds))
    res, rows = {"init_from": os.path.abspath(init_from), "tasks": {}}, []
    for t in targets:
        shape = ds.manifest.schema[f"target/{t}"]["shape"]
        summary = run_finetune(finetune_target_config(cfg, t, init_from, shape[0] if shape else 0),
                               os.path.join(workdir, t))
        present, y = ds.column(f"target/{t}")
        tr, te = [p[present[p]] for p in (parts["train"], parts["test"])]
        # train-mean baseline (per component for a vector target; NaN components unlabelled)
        dummy = (float(np.nanmean(np.abs(y[te] - np.nanmean(y[tr], axis=0)))) if len(tr) and len(te)
                 else float("nan"))
        test = summary.get("test", {})
        res["tasks"][t] = {"test_mae": test.get(f"{t}/mae"), "n_test": test.get(f"{t}/n"),
                           "dummy_mae": dummy, "steps": int(summary["steps"]), "wall_s": summary.get("wall_s")}
        rows.append({"target": t, "test_mae": test.get(f"{t}/mae"), "dummy_mae": dummy, "n_test": test.get(f"{t}/n")})
    write_json(os.path.join(workdir, "finetune_tasks.json"), res)
    vals = {(t, "fine-tuned"): r["test_mae"] / r["dummy_mae"] for t, r in res["tasks"].items()
            if r["test_mae"] is not None and r["dummy_mae"] > 0}
    _bar_chart(vals, "test MAE / training-mean baseline MAE", os.path.join(workdir, "finetune_tasks.png"),
               baseline={t: 1.0 for t in res["tasks"]})
    table = format_table(rows)
    _print(f"fine-tuning tasks (MultiMat), from {init_from}:\n{table}")
    return res, table


# ------------------------------------------------------------------------------ 6. elastic tensor


ELASTIC_COLUMNS = tuple(f"elastic_C{i}{j}" for i in range(1, 6) for j in range(1, i + 1))


def load_dos_moduli(data_dir: str, dos_file: str = "dos/dos_mp408.npz",
                    moduli_file: str = "dos/moduli_mp100.csv.gz") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids [n], DOS densities float32 [n, 601] on the fixed -10..10 eV Fermi-shifted grid (0 where
    the source does not cover an energy), coverage mask bool [n, 601], elastic tensor float64
    [n, 15] in GPa (`ELASTIC_COLUMNS`)) for the moduli materials that have a DOS."""
    import pandas as pd

    from mmjax.data.features.dos import dos_energy_grid, dos_features

    dos = np.load(os.path.join(data_dir, dos_file), allow_pickle=False)
    moduli = pd.read_csv(os.path.join(data_dir, moduli_file))
    missing = [c for c in ELASTIC_COLUMNS if c not in moduli.columns]
    if missing:
        raise ValueError(f"{moduli_file}: no columns {missing}")
    row = {str(i): k for k, i in enumerate(dos["material_ids"])}
    grid = dos_energy_grid()
    ids, feats, masks, ys = [], [], [], []
    for _, r in moduli.iterrows():
        k = row.get(str(r["material_id"]))
        if k is None or not dos["exists"][k]:
            continue
        f = dos_features(dos["energies"][k], dos["densities"][k], grid=grid, record_id=str(r["material_id"]))
        ids.append(str(r["material_id"]))
        feats.append(f["densities"])
        masks.append(f["mask"])
        ys.append([float(r[c]) for c in ELASTIC_COLUMNS])
    if len(ids) < 10:
        raise ValueError(f"only {len(ids)} moduli materials have a DOS in {dos_file}")
    return np.asarray(ids), np.stack(feats), np.stack(masks), np.asarray(ys, np.float64)


def elastic_tensor_probe(data_dir: str, workdir: str, *, split: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                         train_head: bool = True, max_epochs: int = 300) -> tuple[dict, str]:
    """15-output elastic tensor from the DOS (MultiMat's multi-output fine-tuning target).

    Features: the Fermi-shifted DOS on the fixed 601-point grid (`load_dos_moduli`), standardised
    on the training rows. Probes: closed-form ridge (alpha chosen on validation MAE) and, with
    `train_head`, a trained 15-output linear head (`linear_head_probe`, early-stopped on
    validation MAE). Baseline: the training mean of each component. Reports test MAE (GPa) per
    component and averaged -> ``<workdir>/elastic_tensor.{json,png}``, ``probe_elastic_tensor.*``."""
    from mmjax.data.splits import random_split
    from mmjax.eval.probe import evaluate_regression_probe

    workdir = os.path.abspath(workdir)
    ids, x, _, y = load_dos_moduli(data_dir)
    tr, va, te = random_split(len(ids), tuple(split), seed=seed)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    r, _ = evaluate_regression_probe(splits, workdir, "elastic_tensor", train_head=train_head, max_epochs=max_epochs,
                                     seed=seed)
    from mmjax.eval.probe import ridge_probe

    ridge = ridge_probe(x[tr], y[tr], x[va], y[va])
    per_comp = {"ridge": np.mean(np.abs(ridge.predict(x[te]) - y[te]), axis=0),
                "train_mean": np.mean(np.abs(y[tr].mean(axis=0) - y[te]), axis=0)}
    res = {"n": {"train": len(tr), "val": len(va), "test": len(te)}, "columns": list(ELASTIC_COLUMNS),
           "test_ids": ids[te], "ridge_alpha": ridge.alpha,
           "test_mae": {"ridge": r["ridge"]["test"]["mae"], "train_mean": float(per_comp["train_mean"].mean())},
           "test_mae_per_component": {k: dict(zip(ELASTIC_COLUMNS, v)) for k, v in per_comp.items()}}
    if "linear_head" in r:
        res["test_mae"]["linear_head"] = r["linear_head"]["test"]["mae"]
    write_json(os.path.join(workdir, "elastic_tensor.json"), res)
    _bar_chart({(c, k): float(per_comp[k][i]) for i, c in enumerate(ELASTIC_COLUMNS) for k in per_comp},
               "test MAE (GPa)", os.path.join(workdir, "elastic_tensor.png"))
    table = format_table([{"probe": k, "test_mae_GPa": v} for k, v in res["test_mae"].items()])
    _print(f"elastic tensor (15 outputs) from the DOS, {len(te)} test materials:\n{table}")
    return res, table


# ------------------------------------------------------------------------------ command line

COMMANDS = ("xxact-convergence", "per-class-accuracy", "learning-curve", "linear-probe", "finetune-tasks",
            "elastic-tensor")


def _flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Python config file (get_config()).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Output folder of the analysis.")
    flags.DEFINE_string("init_from", None, "Trained (or pretrained) workdir / checkpoint the analysis starts from.")
    flags.DEFINE_string("target", "crystal_system", "per-class-accuracy: classification target.")
    flags.DEFINE_list("targets", [], "finetune-tasks / linear-probe: regression targets (default: all).")
    flags.DEFINE_list("variants", list(VARIANTS), "xxact-convergence: pretraining variants.")
    flags.DEFINE_float("threshold", None, "xxact-convergence: validation threshold (default: best of 'none').")
    flags.DEFINE_string("metric", None, "xxact-convergence: validation key (default eval/<first regression target>/mae).")
    flags.DEFINE_integer("eval_points", 20, "xxact-convergence: validations per run.")
    flags.DEFINE_list("sizes", [], "learning-curve: training-set sizes (default: --fractions of the training split).")
    flags.DEFINE_list("fractions", [str(f) for f in DEFAULT_FRACTIONS], "learning-curve: fractions of the training split.")
    flags.DEFINE_string("data", None, "elastic-tensor: folder holding dos/dos_mp408.npz and dos/moduli_mp100.csv.gz.")
    flags.mark_flags_as_required(["workdir"])
    return flags.FLAGS


def main(argv):
    from absl import app, flags, logging

    FLAGS = flags.FLAGS
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m mmjax.analyze <command> --config=... --workdir=...; "
                             f"command one of {COMMANDS}, got {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    command, workdir = argv[1], FLAGS.workdir
    if command == "elastic-tensor":
        if not FLAGS.data:
            raise app.UsageError("elastic-tensor needs --data=<folder with dos/dos_mp408.npz, dos/moduli_mp100.csv.gz>")
        elastic_tensor_probe(FLAGS.data, workdir)
        return
    config = FLAGS.config
    if config is None:
        raise app.UsageError(f"{command} needs --config=configs/<system>.py[:small]")
    from mmjax.train.mesh import initialize_distributed

    initialize_distributed()
    if command == "xxact-convergence":
        xxact_convergence(config, workdir, variants=FLAGS.variants, threshold=FLAGS.threshold, metric=FLAGS.metric,
                          eval_points=FLAGS.eval_points)
    elif command == "per-class-accuracy":
        per_class_accuracy_analysis(config, workdir, target=FLAGS.target, init_from=FLAGS.init_from)
    elif command == "learning-curve":
        learning_curve_analysis(config, workdir, sizes=[int(s) for s in FLAGS.sizes] or None,
                                fractions=[float(f) for f in FLAGS.fractions], init_from=FLAGS.init_from)
    elif command == "linear-probe":
        linear_probe_analysis(config, workdir, init_from=FLAGS.init_from, regression_targets=FLAGS.targets or None)
    elif command == "finetune-tasks":
        finetune_tasks(config, workdir, init_from=FLAGS.init_from, targets=FLAGS.targets or None)


def run():
    from absl import app

    _flags()
    app.run(main)


if __name__ == "__main__":
    run()
