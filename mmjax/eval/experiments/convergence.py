"""XxaCT-NN convergence (Table 2 / Fig. 6): one run per pretraining variant, steps to a validation threshold, speed-ups."""

from __future__ import annotations

import os
import time
from typing import Sequence

import ml_collections

from mmjax.eval.analyses import convergence_speedup
from mmjax.eval.experiments.common import (CLASS_LABELS, config_target_names, copy_config, shared_data_config, show,
                                           stage_steps, with_values)
from mmjax.train.modes import run_train


VARIANTS = ("none", "clip", "mxm", "both")


# Pretraining terms switched on per variant (every other pretraining term is set to 0).
VARIANT_TERMS = {"none": (), "clip": ("clip",), "mxm": ("mxm",), "both": ("mxm", "clip")}


def variant_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """`config` for one pretraining variant of XxaCT-NN Table 2: ``none`` has no pretraining stage
    (``pretrain.steps = 0``); ``clip`` / ``mxm`` / ``both`` keep ``pretrain.steps`` and set
    ``pretrain.terms`` to weight 1 on their terms and 0 on every other term."""
    if variant not in VARIANT_TERMS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    c = copy_config(config)
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
    targets = config_target_names(config)
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
    workdir = os.path.abspath(workdir)
    variants = list(dict.fromkeys(["none", *variants]))
    base = shared_data_config(config, workdir)
    steps = stage_steps(base)
    base = with_values(base, train__eval_every=max(1, steps // max(1, int(eval_points))))
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
    show(f"convergence (XxaCT-NN Table 2), {key} ({mode}), threshold {res['threshold']:.4g}:\n{table}")
    return res, table
