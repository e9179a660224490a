"""XxaCT-NN learning curve (Fig. 3): the supervised stage on nested training subsets, power-law fits."""

from __future__ import annotations

import os
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np

from mmjax.data.spec import split_indices
from mmjax.eval.analyses import learning_curve
from mmjax.eval.experiments.common import open_dataset, shared_data_config, show
from mmjax.eval.report import format_table, write_json
from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.data import build_iterator
from mmjax.train.data import featurized_source
from mmjax.train.loop import train
from mmjax.train.inference import prediction_metrics, target_stats
from mmjax.train.modes import stage_config
from mmjax.train.outputs import collect_outputs


DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def train_subset_indices(config, n_total: int, size: int) -> np.ndarray:
    """Dataset indices of a random subset of `size` materials of the training split (sorted).

    Subsets are nested: the first `size` of one permutation (``config.data.split_seed``) of the
    training indices, so a larger subset contains every smaller one."""
    train = split_indices(config, n_total)["train"]
    if not 1 <= size <= len(train):
        raise ValueError(f"training-subset size {size} is outside [1, {len(train)}] (the training split)")
    perm = np.random.default_rng([int(config.data.get("split_seed", 0)), 1]).permutation(train)
    return np.sort(perm[:size])


def subset_train_iterator(config, data_workdir: str, size: int):
    """Endless shuffled training Batches over `train_subset_indices`: the ``"train"`` split of
    `mmjax.train.data.featurized_source` restricted to `size` materials (same batching, budgets,
    modalities, targets and normalisation). ``.dataset`` is the subset (len == size)."""
    return featurized_source(config, "train", workdir=data_workdir,
                             rows=lambda n: train_subset_indices(config, n, size))


def _test_metrics(system, config, workdir, params, data_workdir) -> dict:

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
    workdir = os.path.abspath(workdir)
    cfg = stage_config(shared_data_config(config, workdir, init_from), "supervised",
                       init_from=os.path.abspath(init_from) if init_from else None)
    ds = open_dataset(cfg, workdir)
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
    show(f"learning curve (XxaCT-NN Fig. 3):\n{table}")
    return res, table
