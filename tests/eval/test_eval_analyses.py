"""Power-law fit, convergence speed-up from metrics logs, per-class accuracy."""

import json

import numpy as np
import pytest

from mmjax.eval.analyses import (best_so_far_at_fractions, convergence_speedup, learning_curve, per_class_accuracy,
                                 power_law_fit, steps_to_threshold)


def test_power_law_fit_recovers_exponent(tmp_path):
    n = np.array([100, 300, 1000, 3000, 10000, 30000])
    rng = np.random.default_rng(0)
    err = 2.5 * n**-0.35 * np.exp(0.01 * rng.normal(size=n.size))
    fit = power_law_fit(n, err)
    assert fit["b"] == pytest.approx(-0.35, abs=0.02) and fit["a"] == pytest.approx(2.5, rel=0.15)
    exact = power_law_fit(n, 2.5 * n**-0.35)
    assert exact["b"] == pytest.approx(-0.35, abs=1e-10) and exact["r2"] == pytest.approx(1.0)
    fits, _ = learning_curve(n, {"m": err}, tmp_path)
    assert (tmp_path / "learning_curve.png").is_file() and fits["m"]["b"] == pytest.approx(fit["b"])


def _write_log(path, steps, values):
    with open(path, "w") as fh:
        for s, v in zip(steps, values):
            fh.write(json.dumps({"step": int(s), "time": 0.0, "val/mae": v, "train/loss": 1.0}) + "\n")
        fh.write(json.dumps({"step": 999, "train/loss": 0.5}) + "\n")  # line without the key


def test_convergence_speedup_hand_case(tmp_path):
    steps = np.arange(1, 11) * 100
    _write_log(tmp_path / "scratch.jsonl", steps, [10, 9, 8, 7, 6, 5, 4, 3, 2.5, 2.0])
    _write_log(tmp_path / "pre.jsonl", steps, [6, 4, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3])
    res, table = convergence_speedup({"scratch": tmp_path / "scratch.jsonl", "pre": tmp_path / "pre.jsonl"}, "scratch", out_dir=tmp_path)
    assert res["threshold"] == 2.0
    assert res["runs"]["scratch"]["steps_to_threshold"] == 1000 and res["runs"]["pre"]["steps_to_threshold"] == 300
    assert res["runs"]["pre"]["speedup"] == pytest.approx(1000 / 300)
    assert steps_to_threshold(steps, np.linspace(0, 1, 10), 0.5, mode="max") == 600
    np.testing.assert_allclose(best_so_far_at_fractions(steps, [10, 9, 8, 7, 6, 5, 4, 3, 2.5, 2.0], (0.25, 0.5)), [9, 6])


def test_per_class_accuracy():
    labels = np.array([0, 0, 0, 6, 6, 3])
    pred = np.array([0, 1, 0, 6, 0, 3])
    acc = per_class_accuracy(labels, pred, ["triclinic", "m", "o", "tetragonal", "tr", "h", "cubic"])
    assert acc == {"triclinic": pytest.approx(2 / 3), "tetragonal": 1.0, "cubic": 0.5, "mean": pytest.approx(4 / 6)}
