"""XxaCT-NN per-class accuracy (Table 4): a trained model on the test split, accuracy within each true class."""

from __future__ import annotations

import csv
import os

import ml_collections
import numpy as np

from mmjax.eval.analyses import per_class_accuracy
from mmjax.eval.experiments.common import class_names, config_target_names, shared_data_config, show, split_outputs
from mmjax.eval.report import format_table, new_figure, save_figure, write_json
from mmjax.train.inference import real_unit_outputs, target_stats


def per_class_accuracy_analysis(config: ml_collections.ConfigDict, workdir: str, *, target: str = "crystal_system",
                                init_from: str | None = None, split: str = "test") -> tuple[dict, str]:
    """XxaCT-NN Table 4: predictions of the model in `init_from` (default `workdir`) on `split` ->
    ``<workdir>/predictions.csv`` (id, predicted and true class label) and
    ``per_class_accuracy.{json,png}`` (accuracy within each true class, "mean" = overall)."""
    workdir = os.path.abspath(workdir)
    model_dir = os.path.abspath(init_from or workdir)
    cfg = shared_data_config(config, workdir, model_dir)
    if target not in config_target_names(cfg):
        raise ValueError(f"--target={target!r} is not a target of this config (targets: {list(config_target_names(cfg))})")
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
    show(f"per-class {target} accuracy (XxaCT-NN Table 4), {split} split:\n{table}")
    return res, table
