"""E2 Matbench protocol: official folds, nested validation, per-fold scores, results file.

Protocol (Matbench v0.1, regression tasks): the 5 official folds are
``KFold(5, shuffle=True, random_state=18012019)`` over the rows in file order
(:func:`mmjax.data.matbench_folds`). Inside each fold's training rows a validation split is
drawn (:func:`mmjax.data.splits.validation_split`) for tuning / early stopping; the test fold
is only predicted. The reported score is the mean ± std (population std, ``np.std``) of the
5 per-fold MAEs.

Results file (:meth:`MatbenchResults.as_dict`) follows Matbench's ``results.json.gz`` layout as
written by ``MatbenchBenchmark.as_dict`` / ``MatbenchTask.as_dict``::

    {"@module", "@class", "version", "benchmark_name": "matbench_v0.1",
     "datestamp", "user_metadata": {...}, "hash",
     "tasks": {"matbench_<task>": {"@module", "@class", "benchmark_name", "dataset_name",
        "results": {"fold_<j>": {"data": {mbid: prediction}, "parameters": {...},
                                 "scores": {"mae", "rmse", "mape", "max_error"},
                                 "uncertainty": null}}}}}

Deviations: "@module"/"@class" name this module; "hash" is a SHA-256 of the canonical JSON of
the other keys (not matbench's own hash function), so the file is not loadable by
``MatbenchBenchmark.from_file`` as written: `mmjax.eval.matbench_file` converts a complete run. Where only some rows of a fold can be predicted (e.g.
perovskites with structures: 8,100 of 18,928), each fold additionally records
``"available": {"n_test_total", "n_test_available", "n_train_total", "n_train_available"}``
under ``user_metadata["fold_counts"]`` and scores cover the available rows only.
"""

from __future__ import annotations

import bz2
import copy
import datetime
import gzip
import hashlib
import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np
import ml_collections

from mmjax.data.material import RecordError
from mmjax.data.splits import matbench_folds, validation_split
from mmjax.eval.report import format_table, to_jsonable, write_json

BENCHMARK_NAME = "matbench_v0.1"
REG_METRICS = ("mae", "rmse", "mape", "max_error")
_NON_TARGET_COLUMNS = {"mbid", "composition", "structure", "spg_num", "crys_sys"}


def load_matbench_labels(path: str | os.PathLike) -> dict:
    """Read a Matbench label artifact ``matbench_<task>.json.bz2`` (column-oriented pandas JSON).

    Returns {"task", "ids" (str [N], mbid in file order), "targets" (float64 [N]),
    "target_name", "columns" (the remaining columns as lists, file order)}.
    """
    path = os.fspath(path)
    opener = bz2.open if path.endswith(".bz2") else gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        table = json.load(fh)
    targets = [c for c in table if c not in _NON_TARGET_COLUMNS]
    if "mbid" not in table or len(targets) != 1:
        raise ValueError(f"{path}: expected an 'mbid' column and one target column, got columns {sorted(table)}")
    rows = sorted(table["mbid"], key=int)
    if rows != [str(i) for i in range(len(rows))]:
        raise ValueError(f"{path}: row keys are not 0..N-1")
    col = lambda c: [table[c][r] for r in rows]
    ids = np.asarray(col("mbid"), dtype=str)
    y = np.asarray([np.nan if v is None else v for v in col(targets[0])], dtype=np.float64)
    name = os.path.basename(path).split(".")[0]
    return {
        "task": name,
        "ids": ids,
        "targets": y,
        "target_name": targets[0],
        "columns": {c: col(c) for c in table if c not in ("mbid", targets[0])},
    }


MAPE_THRESHOLD = 1e-5


def score_regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Matbench's regression scores: mae, rmse, mape, max_error.

    MAPE as Matbench computes it: ``mean(|err| / |y|)`` over the rows with ``|y| > 1e-5`` only
    (labels at or near zero are skipped, not divided by; NaN if every label is that small).
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    err = np.abs(yp - yt)
    keep = np.abs(yt) > MAPE_THRESHOLD
    return {
        "mae": float(err.mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(err[keep] / np.abs(yt[keep]))) if keep.any() else float("nan"),
        "max_error": float(err.max()),
    }


def fold_splits(n_rows: int, val_fraction: float = 0.1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Official folds with a nested validation split inside each training fold.

    Returns 5 dicts {"train_full", "train", "val", "test"} of sorted int64 row indices;
    train ∪ val = train_full, disjoint from test.
    """
    out = []
    for j, (train_full, test) in enumerate(matbench_folds(n_rows)):
        sub, val = validation_split(train_full, val_fraction, seed=seed + j)
        out.append({"train_full": train_full, "train": sub, "val": val, "test": test})
    return out


def dummy_fold_maes(targets: np.ndarray) -> np.ndarray:
    """Matbench's Dummy baseline: per official fold, predict the training-fold mean; returns the
    5 test MAEs (float64 [5]). Targets must be finite."""
    y = np.asarray(targets, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("targets contain NaN/inf; the dummy baseline needs every label")
    return np.asarray([np.mean(np.abs(y[te] - y[tr].mean())) for tr, te in matbench_folds(len(y))])


class MatbenchResults:
    """Collects per-fold predictions of one task and writes a Matbench-layout results file.

    task: "matbench_<name>"; ids: str [N] mbids in file order; targets: float64 [N] labels.
    """

    def __init__(self, task: str, ids: Sequence[str], targets: np.ndarray, user_metadata: Mapping | None = None):
        self.task = task if task.startswith("matbench_") else f"matbench_{task}"
        self.ids = np.asarray(ids, dtype=str)
        self.targets = np.asarray(targets, dtype=np.float64)
        if self.ids.shape != self.targets.shape:
            raise ValueError(f"ids {self.ids.shape} and targets {self.targets.shape} differ in shape")
        self.folds = matbench_folds(len(self.ids))
        self.results: dict[str, dict] = {}
        self.fold_counts: dict[str, dict] = {}
        self.user_metadata = dict(user_metadata or {})

    def record(self, fold: int, rows: np.ndarray, predictions: np.ndarray, params: Mapping | None = None, n_train_available: int | None = None) -> dict:
        """Record predictions for ``rows`` (int indices, must lie in fold ``fold``'s test set).

        Predicting a subset of the test fold is allowed (counts are recorded); a row outside the
        fold, a repeated row, or a non-finite prediction raises (RecordError naming the mbid).
        Returns the fold's scores.
        """
        rows = np.asarray(rows, dtype=np.int64)
        pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
        train_full, test = self.folds[fold]
        if pred.shape != rows.shape:
            raise ValueError(f"fold {fold}: {len(pred)} predictions for {len(rows)} rows")
        if len(np.unique(rows)) != len(rows):
            raise ValueError(f"fold {fold}: repeated rows")
        outside = rows[~np.isin(rows, test)]
        if outside.size:
            raise RecordError(self.ids[outside[0]], f"row {int(outside[0])} is not in the test set of fold {fold} ({outside.size} such rows)")
        bad = np.flatnonzero(~np.isfinite(pred))
        if bad.size:
            raise RecordError(self.ids[rows[bad[0]]], f"non-finite prediction in fold {fold} ({bad.size} such rows)")
        key = f"fold_{fold}"
        scores = score_regression(self.targets[rows], pred)
        self.results[key] = {
            "data": {str(self.ids[r]): float(p) for r, p in zip(rows, pred)},
            "parameters": dict(params or {}),
            "scores": scores,
            "uncertainty": None,
        }
        self.fold_counts[key] = {
            "n_test_total": int(len(test)),
            "n_test_available": int(len(rows)),
            "n_train_total": int(len(train_full)),
            "n_train_available": int(len(train_full) if n_train_available is None else n_train_available),
        }
        return scores

    def summary(self) -> dict:
        """{metric: {"mean", "std", "min", "max"}} over recorded folds, plus "n_folds" and
        "complete" (all 5 folds recorded with every test row)."""
        out: dict = {}
        for m in REG_METRICS:
            vals = np.asarray([r["scores"][m] for r in self.results.values()])
            out[m] = {"mean": float(vals.mean()), "std": float(vals.std()), "min": float(vals.min()), "max": float(vals.max())} if vals.size else {}
        out["n_folds"] = len(self.results)
        out["complete"] = len(self.results) == 5 and all(c["n_test_available"] == c["n_test_total"] for c in self.fold_counts.values())
        return out

    def as_dict(self) -> dict:
        """The Matbench-layout dictionary (see module docstring)."""
        results = {k: self.results[k] for k in sorted(self.results)}
        d = {
            "@module": __name__,
            "@class": type(self).__name__,
            "version": "mmjax",
            "tasks": {
                self.task: {
                    "@module": __name__,
                    "@class": "MatbenchTaskResults",
                    "benchmark_name": BENCHMARK_NAME,
                    "dataset_name": self.task,
                    "results": results,
                }
            },
            "user_metadata": {**self.user_metadata, "fold_counts": self.fold_counts, "summary": self.summary()},
            "benchmark_name": BENCHMARK_NAME,
            "datestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y.%m.%d %H:%M.%S"),
        }
        d = to_jsonable(d)
        d["hash"] = hashlib.sha256(json.dumps({k: v for k, v in d.items() if k != "datestamp"}, sort_keys=True).encode()).hexdigest()
        return d

    def write(self, path: str | os.PathLike) -> str:
        """Write :meth:`as_dict` to ``path`` (gzip when it ends in .gz). Returns the path."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        data = json.dumps(self.as_dict()).encode()
        if path.endswith(".gz"):
            with gzip.open(path, "wb") as fh:
                fh.write(data)
        else:
            with open(path, "wb") as fh:
                fh.write(data)
        return path

    def table(self) -> str:
        rows = [{"fold": k, **self.fold_counts[k], **self.results[k]["scores"]} for k in sorted(self.results)]
        s = self.summary()
        rows.append({"fold": "mean", "mae": s["mae"].get("mean"), "rmse": s["rmse"].get("mean")})
        rows.append({"fold": "std", "mae": s["mae"].get("std"), "rmse": s["rmse"].get("std")})
        return format_table(rows, ["fold", "n_test_available", "n_test_total", "mae", "rmse", "max_error"])


FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict]]


def run_matbench(
    task: str,
    ids: Sequence[str],
    targets: np.ndarray,
    fit_predict: FitPredict,
    out_dir: str | os.PathLike,
    available: np.ndarray | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
) -> tuple[MatbenchResults, str]:
    """Run the protocol with a model given as ``fit_predict(train_rows, val_rows, test_rows)
    -> (test predictions, params)``; every index is a row in file order.

    available: optional bool [N]: rows the model can use (e.g. perovskites with a structure);
        every split is intersected with it and the per-fold counts are recorded.
    Writes ``<out_dir>/results.json.gz`` and ``<out_dir>/matbench_summary.json``.
    """
    res = MatbenchResults(task, ids, targets)
    avail = np.ones(len(res.ids), dtype=bool) if available is None else np.asarray(available, dtype=bool)
    labelled = avail & np.isfinite(res.targets)
    for j, split in enumerate(fold_splits(len(res.ids), val_fraction, seed)):
        if j not in folds:
            continue
        keep = {k: v[labelled[v]] for k, v in split.items()}
        pred, params = fit_predict(keep["train"], keep["val"], keep["test"])
        res.record(j, keep["test"], pred, params, n_train_available=len(keep["train_full"]))
    out_dir = os.fspath(out_dir)
    res.write(os.path.join(out_dir, "results.json.gz"))
    write_json(os.path.join(out_dir, "matbench_summary.json"), {"task": res.task, "summary": res.summary(), "fold_counts": res.fold_counts})
    return res, res.table()


# ----------------------------------------------------------------------------------------------
# Transfer protocols: self-supervised pretraining, then a supervised fit on each fold

PROTOCOLS = {
    "scratch": "the system trained from random initialisation on each fold (the CGCNN baseline)",
    "xmopa": "X-MoPA: self-supervised pretraining, then frozen encoders + trained prediction heads",
    "multimat": "MultiMat: self-supervised pretraining, then the crystal encoder + a linear head fine-tuned",
}


def pretraining_config(config, *, source: str, steps: int, batch_size: int, n_devices: int, data_dir: str,
                       eval_fraction: float = 0.05, lr: float | None = None, workers: int = 2):
    """A copy of a system config for label-free pretraining (``--mode=pretrain``) on ``source``.

    The copy has no prediction targets (``data.targets = ()``, ``system.targets = {}``: no head,
    no label is read), ``pretrain.steps = steps``, ``batch_size`` global materials per step
    (``batch_size / n_devices`` per device), a random ``1 - eval_fraction`` / ``eval_fraction``
    train / eval split of the source (no test part), the featurised cache under ``data_dir``,
    the peak learning rate ``lr`` when given, one evaluation and one checkpoint at the end.
    """
    if steps < 1:
        raise ValueError(f"pretraining needs steps >= 1, got {steps}")
    if batch_size % n_devices:
        raise ValueError(f"pretraining batch {batch_size} is not a multiple of the {n_devices} devices")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    c = copy.deepcopy(config)
    with c.unlocked():
        c.data.source = str(source)
        c.data.source_kwargs = ml_collections.ConfigDict({}, type_safe=False)
        c.data.data_dir = str(data_dir)
        c.data.targets = ()
        c.data.split = (1.0 - eval_fraction, eval_fraction, 0.0)
        c.data.batch_per_device = batch_size // n_devices
        c.data.num_workers = int(workers)
        c.system.targets = ml_collections.ConfigDict({}, type_safe=False)
        c.pretrain.steps = int(steps)
        c.train.eval_every = 0
        c.train.progress = False
        c.train.log_every = max(1, min(100, steps))
        c.checkpoint.every = 0
        if lr is not None:
            c.optim.peak_lr = float(lr)
    return c


# The supervised stage's form per protocol: "frozen" = encoders frozen, heads trained;
# "finetune" = every parameter trained from the pretrained initialisation.
DOWNSTREAM_FORMS = ("frozen", "finetune")
DEFAULT_DOWNSTREAM = {"xmopa": "frozen", "multimat": "finetune"}


def downstream_config(config, protocol: str, target: str, downstream: str | None = None):
    """``(config, trainable)`` of the supervised stage of ``protocol`` for regression ``target``.

    * "xmopa": stage "finetune", heads on the concatenated latents (``system.head_source``);
      ``downstream="frozen"`` (default, the paper's "fine tuning of only the final prediction
      heads") gives ``trainable = ("head",)`` (every encoder / projection / predictor frozen),
      ``"finetune"`` trains everything.
    * "multimat": stage "finetune", a linear head (``head_hidden = ()``) on the crystal encoder
      output, batches with the crystal modality only (the head reads nothing else);
      ``downstream="finetune"`` (default, as MultiMat fine-tunes) trains every parameter,
      ``"frozen"`` the head only.
    * "scratch": the config unchanged apart from the target; ``trainable = None``
      (``downstream`` must be None).
    Pretrained weights are loaded by `mmjax.eval.fit.fit_predict` (``init_from``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    if protocol == "scratch" and downstream is not None:
        raise ValueError(f"downstream={downstream!r} needs a pretraining protocol, not 'scratch'")
    downstream = downstream or DEFAULT_DOWNSTREAM.get(protocol)
    if protocol != "scratch" and downstream not in DOWNSTREAM_FORMS:
        raise ValueError(f"downstream must be one of {DOWNSTREAM_FORMS}, got {downstream!r}")
    c = copy.deepcopy(config)
    with c.unlocked():
        c.data.targets = (target,)
        if protocol == "scratch":
            return c, None
        c.system.targets = ml_collections.ConfigDict({target: 1}, type_safe=False)
        c.system.stage = "finetune"
        if protocol == "multimat":
            c.system.head_hidden = ()
            c.data.modalities = ("crystal",)
    return c, (("head",) if downstream == "frozen" else None)
