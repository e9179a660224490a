"""Paper-style analyses over finished runs (thin; systems supply the runs).

* XxaCT-NN Table 2 / Fig. 6: convergence speed-up from pretraining, read from the
  ``metrics.jsonl`` logs written by ``mmjax.train.metrics.MetricWriter`` (one JSON object per
  line with "step" and "<split>/<name>" keys).
* XxaCT-NN Table 4: per-crystal-system accuracy.
* XxaCT-NN Fig. 3: error versus training-set size with a power-law fit err = a · n^b
  (least squares on log err versus log n).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from mmjax.eval.report import format_table, new_figure, save_figure, write_json


def read_metrics_jsonl(path: str | os.PathLike, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps int64 [K], values float64 [K]) of every line of a metrics.jsonl holding a finite
    ``key`` (e.g. "val/mae"), sorted by step; later lines win for a repeated step (resumed runs)."""
    by_step: dict[int, float] = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not JSON ({err})") from err
            v = row.get(key)
            if v is not None and np.isfinite(v):
                by_step[int(row["step"])] = float(v)
    steps = np.asarray(sorted(by_step), dtype=np.int64)
    return steps, np.asarray([by_step[s] for s in steps], dtype=np.float64)


def steps_to_threshold(steps: np.ndarray, values: np.ndarray, threshold: float, mode: str = "min") -> int | None:
    """First step whose value reaches ``threshold`` (<= for mode "min", >= for "max"); None if never."""
    values = np.asarray(values)
    hit = values <= threshold if mode == "min" else values >= threshold
    idx = np.flatnonzero(hit)
    return int(np.asarray(steps)[idx[0]]) if idx.size else None


def best_so_far_at_fractions(steps: np.ndarray, values: np.ndarray, fractions: Sequence[float] = (0.05, 0.15, 0.25), mode: str = "min") -> list[float]:
    """Best value logged up to each fraction of the run's last step (XxaCT-NN Table 2 columns);
    NaN where nothing was logged yet."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    best = np.minimum.accumulate(values) if mode == "min" else np.maximum.accumulate(values)
    out = []
    for f in fractions:
        idx = np.flatnonzero(steps <= f * steps[-1])
        out.append(float(best[idx[-1]]) if idx.size else float("nan"))
    return out


def convergence_speedup(
    runs: Mapping[str, str | os.PathLike],
    baseline: str,
    key: str = "val/mae",
    mode: str = "min",
    threshold: float | None = None,
    fractions: Sequence[float] = (0.05, 0.15, 0.25),
    out_dir: str | os.PathLike | None = None,
    extra: Mapping | None = None,
) -> tuple[dict, str]:
    """Steps each run needs to reach ``threshold`` and its speed-up over ``baseline``.

    runs: name -> metrics.jsonl path. threshold defaults to the baseline's best value, so the
    speed-up reads "how much sooner does a pretrained run match the from-scratch optimum"
    (speed-up = baseline steps / run steps). Also reports best-so-far values at ``fractions``
    of each run and the overall best. Writes ``convergence.json`` and ``convergence.png`` when
    ``out_dir`` is given; ``results["curves"]`` holds each run's (steps, values) and `extra`
    (e.g. wall times) is stored under its own keys. Returns (results, text table).
    """
    curves = {name: read_metrics_jsonl(p, key) for name, p in runs.items()}
    for name, (s, _) in curves.items():
        if s.size == 0:
            raise ValueError(f"run {name!r}: no finite {key!r} in its metrics log")
    bs, bv = curves[baseline]
    thr = float(np.min(bv) if mode == "min" else np.max(bv)) if threshold is None else float(threshold)
    base_steps = steps_to_threshold(bs, bv, thr, mode)
    res: dict = {"key": key, "mode": mode, "threshold": thr, "baseline": baseline, "runs": {},
                 "curves": {name: {"steps": s, "values": v} for name, (s, v) in curves.items()}, **dict(extra or {})}
    for name, (s, v) in curves.items():
        n = steps_to_threshold(s, v, thr, mode)
        res["runs"][name] = {
            "steps_to_threshold": n,
            "speedup": (base_steps / n) if (n and base_steps) else None,
            "at_fractions": dict(zip([f"{f:g}" for f in fractions], best_so_far_at_fractions(s, v, fractions, mode))),
            "best": float(np.min(v) if mode == "min" else np.max(v)),
        }
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        write_json(os.path.join(out_dir, "convergence.json"), res)
        fig, ax = new_figure()
        for name, (s, v) in curves.items():
            ax.plot(s, v, label=name)
        ax.axhline(thr, color="k", ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        save_figure(fig, os.path.join(out_dir, "convergence.png"))
    rows = [{"run": k, "steps": r["steps_to_threshold"], "speedup": r["speedup"], **r["at_fractions"], "best": r["best"]} for k, r in res["runs"].items()]
    return res, format_table(rows)


def per_class_accuracy(labels: np.ndarray, pred: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """Accuracy within each true class (XxaCT-NN Table 4) and "mean" (overall accuracy).

    Classes absent from ``labels`` are omitted. Keys are class names when given, else labels.
    """
    labels, pred = np.asarray(labels), np.asarray(pred)
    out = {}
    for c in np.unique(labels):
        name = class_names[int(c)] if class_names is not None else str(c)
        out[name] = float(np.mean(pred[labels == c] == c))
    out["mean"] = float(np.mean(pred == labels))
    return out


def power_law_fit(n: np.ndarray, err: np.ndarray) -> dict:
    """Fit err = a · n^b by least squares on (log n, log err). n, err > 0.

    Returns {"a", "b", "r2" (of the log-log fit)}.
    """
    n = np.asarray(n, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if n.shape != err.shape or n.size < 2 or np.any(n <= 0) or np.any(err <= 0):
        raise ValueError("power_law_fit needs >= 2 positive (n, err) pairs of equal length")
    lx, ly = np.log(n), np.log(err)
    design = np.stack([np.ones_like(lx), lx], axis=1)
    (log_a, b), *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ np.array([log_a, b])
    ss_tot = np.sum((ly - ly.mean()) ** 2)
    return {"a": float(np.exp(log_a)), "b": float(b), "r2": float(1 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else 1.0}


def learning_curve(n: np.ndarray, err: Mapping[str, np.ndarray], out_dir: str | os.PathLike, ylabel: str = "test MAE") -> tuple[dict, str]:
    """Power-law fits of error versus training-set size for several models; log-log plot
    ``learning_curve.png`` and ``learning_curve.json``. Returns (fits, table)."""
    fits = {name: power_law_fit(n, e) for name, e in err.items()}
    out_dir = os.fspath(out_dir)
    write_json(os.path.join(out_dir, "learning_curve.json"), {"n": n, "err": err, "fits": fits})
    fig, ax = new_figure()
    grid = np.geomspace(np.min(n), np.max(n), 50)
    for name, e in err.items():
        line = ax.plot(n, e, "o", label=f"{name} (b = {fits[name]['b']:.2f})")[0]
        ax.plot(grid, fits[name]["a"] * grid ** fits[name]["b"], "--", color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out_dir, "learning_curve.png"))
    return fits, format_table([{"model": k, **v} for k, v in fits.items()])
