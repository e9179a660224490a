"""E1 probes: ridge vs numpy lstsq, alpha chosen on validation only, trained heads, early stopping."""

import numpy as np
import pytest

from mmjax.eval.finetune import fit_with_early_stopping
from mmjax.eval.probe import (Standardizer, evaluate_regression_probe, linear_head_probe, logistic_probe, ridge_fit,
                              ridge_probe)


def _data(seed=0, n=120, d=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.array([1, 10, 0.1, 1, 1, 1]) + 3
    w = rng.normal(size=d)
    y = x @ w + 0.1 * rng.normal(size=n)
    return x, y


def test_ridge_matches_augmented_lstsq():
    x, y = _data()
    alpha = 2.5
    w, b = ridge_fit(x, y, alpha)
    xc, yc = x - x.mean(0), y - y.mean()
    aug_x = np.vstack([xc, np.sqrt(alpha) * np.eye(x.shape[1])])
    aug_y = np.concatenate([yc, np.zeros(x.shape[1])])
    w_ref = np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]
    np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-12)
    assert b == pytest.approx(y.mean() - x.mean(0) @ w_ref)
    w0, _ = ridge_fit(x, y, 0.0)  # alpha 0 = ordinary least squares with intercept
    np.testing.assert_allclose(w0, np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0][:-1], rtol=1e-8)


def test_ridge_probe_alpha_is_chosen_on_validation_only():
    x, y = _data(1)
    tr, va = slice(0, 80), slice(80, 120)
    alphas = [1e-3, 1.0, 1e3]
    probe = ridge_probe(x[tr], y[tr], x[va], y[va], alphas)
    scaler = Standardizer.fit(x[tr])  # statistics from training rows only
    np.testing.assert_allclose(probe.scaler.mean, x[tr].mean(0))
    manual = {}
    for a in alphas:
        w, b = ridge_fit(scaler(x[tr]), y[tr], a)
        manual[a] = np.mean(np.abs(scaler(x[va]) @ w + b - y[va]))
    assert probe.alpha == min(manual, key=manual.get)
    assert probe.val_mae_by_alpha == pytest.approx(manual)
    # Corrupting validation labels (to favour heavy shrinkage) changes the choice: it is val-driven.
    corrupted = ridge_probe(x[tr], y[tr], x[va], np.full(40, y[tr].mean()), alphas)
    assert corrupted.alpha == 1e3 and probe.alpha != 1e3


def test_early_stopping_restores_best_and_stops():
    vals = [5.0, 3.0, 4.0, 4.5, 2.9999, 6.0, 7.0, 8.0]

    def train_epoch(state, epoch):
        return {"w": np.array(float(epoch))}, {"loss": 1.0}

    res = fit_with_early_stopping({"w": np.array(-1.0)}, train_epoch, lambda s: {"mae": vals[int(s["w"])]},
                                  monitor="mae", patience=2, max_epochs=8, min_delta=1e-3)
    # epoch 4 improves by < min_delta, so the best stays epoch 1; patience 2 stops after epoch 3
    assert res.best_epoch == 1 and float(res.state["w"]) == 1.0 and len(res.history) == 4 and res.stopped_early
    res_max = fit_with_early_stopping({"w": np.array(-1.0)}, train_epoch, lambda s: {"acc": vals[int(s["w"])]},
                                      monitor="acc", mode="max", patience=10, max_epochs=8)
    assert res_max.best_epoch == 7 and not res_max.stopped_early


def test_linear_head_regression_and_classification(tmp_path):
    x, y = _data(2, n=160)
    head = linear_head_probe(x[:100], y[:100], x[100:130], y[100:130], learning_rate=5e-2, batch_size=32, max_epochs=60, patience=8)
    ridge = ridge_probe(x[:100], y[:100], x[100:130], y[100:130])
    mae_head = np.mean(np.abs(head.predict(x[130:]) - y[130:]))
    mae_ridge = np.mean(np.abs(ridge.predict(x[130:]) - y[130:]))
    assert mae_head < 0.1 * np.mean(np.abs(y[130:] - y[:100].mean())) and mae_head < 3 * mae_ridge + 0.05
    labels = (x[:, 1] > 3).astype(int) * 3 + (x[:, 0] > 3)  # 4 used classes out of 7
    clf, accs = logistic_probe(x[:100], labels[:100], x[100:130], labels[100:130], n_classes=7, weight_decays=(0.0, 1e-2),
                               learning_rate=5e-2, batch_size=32, max_epochs=40, patience=5)
    assert set(accs) == {0.0, 1e-2} and np.mean(clf.predict(x[130:]) == labels[130:]) > 0.8
    with pytest.raises(ValueError, match="labels must lie"):
        linear_head_probe(x[:10], np.full(10, 7), x[10:15], np.zeros(5, int), n_classes=7)
    res, table = evaluate_regression_probe({"train": (x[:100], y[:100]), "val": (x[100:130], y[100:130]), "test": (x[130:], y[130:])},
                                           tmp_path, "y", train_head=False)
    assert res["ridge"]["test"]["mae"] == pytest.approx(mae_ridge) and (tmp_path / "probe_y.png").is_file()


def test_classification_probe_report_space_group_classes(tmp_path):
    from mmjax.eval.probe import N_SPACE_GROUP_CLASSES, evaluate_classification_probe

    rng = np.random.default_rng(5)
    centres = {225: np.array([3.0, 0, 0]), 62: np.array([0, 3.0, 0]), 14: np.array([0, 0, 3.0])}
    labels = rng.choice(list(centres), size=150)
    x = np.stack([centres[l] for l in labels]) + 0.3 * rng.normal(size=(150, 3))
    splits = {"train": (x[:90], labels[:90]), "val": (x[90:120], labels[90:120]), "test": (x[120:], labels[120:])}
    res, table = evaluate_classification_probe(splits, tmp_path, "space_group", N_SPACE_GROUP_CLASSES, weight_decays=(0.0,),
                                               learning_rate=5e-2, batch_size=30, max_epochs=30, patience=5)
    assert res["test"]["accuracy"] > 0.9 and set(res["test_per_class"]) == {"14", "62", "225", "mean"}
    assert (tmp_path / "probe_space_group.json").is_file()
