"""MatBind linear probes of the embeddings, and MultiMat fine-tuning on every regression target."""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections
import numpy as np

from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.data.spec import split_indices
from mmjax.eval.experiments.common import (SPACE_GROUP_CLASSES, bar_chart, copy_config, dataset_labels, make_dir,
                                           open_dataset, shared_data_config, show, split_outputs)
from mmjax.eval.probe import evaluate_classification_probe, evaluate_regression_probe
from mmjax.eval.report import format_table, write_json
from mmjax.train.modes import run_finetune


def linear_probe_analysis(config: ml_collections.ConfigDict, workdir: str, *, init_from: str | None = None,
                          regression_targets: Sequence[str] | None = None, max_epochs: int = 200) -> tuple[dict, str]:
    """MatBind linear probe on frozen embeddings of the model in `init_from` (default `workdir`).

    Embeddings: `System.embed` over the whole dataset (one pass), rows assigned to the config's
    train / eval / test splits. Per embedding (modality): logistic probes (`evaluate_classification_probe`)
    for space group (231 classes) and crystal system (7), ridge probes (`evaluate_regression_probe`)
    for `regression_targets` (default every regression target of the dataset). Hyperparameters
    are chosen on the validation rows; the test rows are only predicted."""
    workdir = os.path.abspath(workdir)
    model_dir = os.path.abspath(init_from or workdir)
    cfg = shared_data_config(config, workdir, model_dir)
    out = split_outputs(cfg, model_dir, "embed", "all")
    ds = open_dataset(cfg, model_dir)
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
    np.savez(os.path.join(make_dir(probe_dir), "embeddings.npz"), ids=out["ids"],
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
    bar_chart({(row["embedding"], row["task"]): row["test"] for row in table_rows if row["metric"] == "accuracy"},
               "test accuracy", os.path.join(workdir, "linear_probe.png"))
    table = format_table(table_rows, digits=4)
    show(f"linear probe (MatBind), frozen embeddings of {model_dir}:\n{table}")
    return res, table


def finetune_target_config(config: ml_collections.ConfigDict, target: str, init_from: str,
                           components: int = 0) -> ml_collections.ConfigDict:
    """`config` for fine-tuning on one regression `target`: ``data.targets = (target,)``, a
    one-output head (``system.targets = {target: 1}`` where the system reads its heads there;
    ``(components,)`` and ``data.target_dims`` for a vector target), ``train.init_from`` = `init_from`."""
    c = copy_config(config)
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
    if not init_from:
        raise ValueError("finetune-tasks needs --init_from=<pretrained workdir or checkpoint>")
    workdir = os.path.abspath(workdir)
    cfg = shared_data_config(config, workdir, init_from)
    ds = open_dataset(cfg, workdir)
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
    bar_chart(vals, "test MAE / training-mean baseline MAE", os.path.join(workdir, "finetune_tasks.png"),
               baseline={t: 1.0 for t in res["tasks"]})
    table = format_table(rows)
    show(f"fine-tuning tasks (MultiMat), from {init_from}:\n{table}")
    return res, table
