"""E2 Matbench protocol helper: folds vs the official rule, nested validation, results layout."""

import gzip
import json

import numpy as np
import pytest

from mmjax.data.material import RecordError
from mmjax.eval.matbench import MatbenchResults, dummy_fold_maes, fold_splits, load_matbench_labels, run_matbench


def test_fold_splits_follow_official_rule_and_nest_validation():
    n = 103
    idx = np.arange(n)
    np.random.RandomState(18012019).shuffle(idx)  # the documented official rule, computed independently
    sizes = [21, 21, 21, 20, 20]
    starts = np.cumsum([0] + sizes)
    splits = fold_splits(n, val_fraction=0.1)
    for j, sp in enumerate(splits):
        np.testing.assert_array_equal(sp["test"], np.sort(idx[starts[j]:starts[j + 1]]))
        assert not np.intersect1d(sp["val"], sp["test"]).size and not np.intersect1d(sp["train"], sp["test"]).size
        np.testing.assert_array_equal(np.union1d(sp["train"], sp["val"]), sp["train_full"])
        assert len(sp["val"]) == round(0.1 * len(sp["train_full"]))


def test_results_layout_scores_and_partial_folds(tmp_path):
    n = 50
    ids = np.array([f"mb-toy-{i + 1:03d}" for i in range(n)])
    y = np.linspace(0.0, 4.9, n)
    available = np.arange(n) % 3 != 0  # a subset, as perovskites with structures

    def fit_predict(train, val, test):
        assert available[train].all() and available[test].all() and not np.intersect1d(val, test).size
        return np.full(len(test), y[train].mean()), {"n_train": len(train)}

    res, table = run_matbench("toy", ids, y, fit_predict, tmp_path, available=available)
    with gzip.open(tmp_path / "results.json.gz", "rt") as fh:
        d = json.load(fh)
    task = d["tasks"]["matbench_toy"]
    assert task["benchmark_name"] == "matbench_v0.1" and task["dataset_name"] == "matbench_toy"
    assert sorted(task["results"]) == [f"fold_{j}" for j in range(5)]
    f0 = task["results"]["fold_0"]
    assert set(f0) == {"data", "parameters", "scores", "uncertainty"} and set(f0["scores"]) == {"mae", "rmse", "mape", "max_error"}
    train_full, test = fold_splits(n)[0]["train_full"], fold_splits(n)[0]["test"]
    test_av = test[available[test]]
    assert set(f0["data"]) == set(ids[test_av])
    nested_train = fold_splits(n)[0]["train"]
    mean_pred = y[nested_train[available[nested_train]]].mean()
    assert f0["scores"]["mae"] == pytest.approx(np.mean(np.abs(y[test_av] - mean_pred)))
    counts = d["user_metadata"]["fold_counts"]["fold_0"]
    assert counts["n_test_total"] == len(test) and counts["n_test_available"] == len(test_av) < len(test)
    maes = [task["results"][f"fold_{j}"]["scores"]["mae"] for j in range(5)]
    assert d["user_metadata"]["summary"]["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert d["user_metadata"]["summary"]["mae"]["std"] == pytest.approx(np.std(maes))
    assert d["user_metadata"]["summary"]["complete"] is False and "fold_4" in table


def test_record_rejects_rows_outside_fold_and_nan():
    ids = np.array([f"id{i}" for i in range(20)])
    r = MatbenchResults("toy", ids, np.zeros(20))
    _, test0 = r.folds[0]
    _, test1 = r.folds[1]
    with pytest.raises(RecordError, match=f"id{test1[0]}"):
        r.record(0, test1[:1], [0.0])
    with pytest.raises(RecordError, match="non-finite"):
        r.record(0, test0[:2], [0.0, np.nan])


def test_dummy_mae_on_real_dielectric_matches_leaderboard(shared_data):
    lab = load_matbench_labels(shared_data / "matbench" / "matbench_dielectric.json.bz2")
    assert len(lab["ids"]) == 4764 and lab["target_name"] == "n" and lab["ids"][0] == "mb-dielectric-0001"
    maes = dummy_fold_maes(lab["targets"])
    meta = json.loads((shared_data / "matbench" / "matbench_v0.1_dataset_metadata.json").read_text())
    mad = meta["matbench_dielectric"]["mad"]
    assert 0.5 * mad < maes.mean() < 2 * mad  # same order of magnitude as the MAD
    assert maes.mean() == pytest.approx(0.8088, abs=5e-5)  # Matbench leaderboard "Dummy" mean MAE


def test_mape_skips_labels_at_zero_as_matbench_does():
    from mmjax.eval.matbench import score_regression

    s = score_regression(np.array([0.0, 2.0, -4.0, 1e-6]), np.array([0.5, 1.0, -3.0, 0.2]))
    assert s["mape"] == pytest.approx((0.5 + 0.25) / 2)  # the 0 and 1e-6 labels are skipped
    assert s["mae"] == pytest.approx((0.5 + 1 + 1 + 0.199999) / 4, rel=1e-5)
    assert np.isnan(score_regression(np.zeros(3), np.ones(3))["mape"])
