"""Matbench folds (official rule, independent sklearn check, real task sizes), random and nested splits."""

import json

import numpy as np
import pytest

from mmjax.data import matbench_fold_of_rows, matbench_folds, random_split, validation_split
from mmjax.data.sources.compressed import load_json

SIX_TASKS = ("dielectric", "log_gvrh", "log_kvrh", "mp_gap", "mp_e_form", "perovskites")


def expected_sizes(n):
    return [n // 5 + (1 if j < n % 5 else 0) for j in range(5)]


@pytest.mark.parametrize("n", [5, 7, 11, 4764, 18928])
def test_folds_partition_rows(n):
    folds = matbench_folds(n)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(n))  # test sets partition the rows
    for train, test in folds:
        assert np.array_equal(train, np.setdiff1d(np.arange(n), test))  # train = the rest, sorted
        assert train.dtype == np.int64 and test.dtype == np.int64
    assert [len(te) for _, te in folds] == expected_sizes(n)


def test_folds_rule_by_hand():
    """The documented rule, written out independently of the implementation."""
    n = 13
    idx = np.arange(n)
    np.random.RandomState(18012019).shuffle(idx)
    chunks = [idx[0:3], idx[3:6], idx[6:9], idx[9:11], idx[11:13]]
    for (train, test), chunk in zip(matbench_folds(n), chunks):
        assert np.array_equal(test, np.sort(chunk))
        assert sorted(train.tolist() + chunk.tolist()) == list(range(n))


@pytest.mark.parametrize("n", [9, 4764, 18928])
def test_folds_equal_sklearn_kfold(n):
    model_selection = pytest.importorskip("sklearn.model_selection", reason="scikit-learn not installed")
    kfold = model_selection.KFold(n_splits=5, shuffle=True, random_state=18012019)
    ours = matbench_folds(n)
    for (train, test), (ktrain, ktest) in zip(ours, kfold.split(np.zeros(n))):
        assert np.array_equal(test, ktest)
        assert np.array_equal(train, ktrain)


def test_fold_of_rows_inverts_folds():
    n = 23
    fold_of = matbench_fold_of_rows(n)
    for j, (_, test) in enumerate(matbench_folds(n)):
        assert np.all(fold_of[test] == j)
    assert np.bincount(fold_of).tolist() == expected_sizes(n)


def test_folds_reject_tiny():
    with pytest.raises(ValueError, match="at least 5 rows"):
        matbench_folds(4)


def test_fold_sizes_of_six_real_tasks(shared_data):
    meta = json.loads((shared_data / "matbench" / "matbench_v0.1_dataset_metadata.json").read_text())
    sizes = {}
    for task in SIX_TASKS:
        doc = load_json(shared_data / "matbench" / f"matbench_{task}.json.bz2")
        n = len(doc["mbid"])
        assert n == meta[f"matbench_{task}"]["n_samples"]
        sizes[task] = [len(te) for _, te in matbench_folds(n)]
    assert sizes["perovskites"] == [3786, 3786, 3786, 3785, 3785]
    assert sizes["dielectric"] == [953, 953, 953, 953, 952]
    assert sizes["log_gvrh"] == sizes["log_kvrh"] == [2198, 2198, 2197, 2197, 2197]
    assert sizes["mp_gap"] == [21223, 21223, 21223, 21222, 21222]
    assert sizes["mp_e_form"] == [26551, 26551, 26550, 26550, 26550]


def test_random_split_partition_and_sizes():
    a, b, c = random_split(101, (0.8, 0.1, 0.1), seed=3)
    assert (len(a), len(b), len(c)) == (81, 10, 10)  # 80.8 -> 80 (+1 largest remainder), 10.1, 10.1
    assert np.array_equal(np.sort(np.concatenate([a, b, c])), np.arange(101))
    again = random_split(101, (0.8, 0.1, 0.1), seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, c), again))
    other = random_split(101, (0.8, 0.1, 0.1), seed=4)
    assert not np.array_equal(a, other[0])
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(10, (0.5, 0.4))


def test_validation_split_is_nested_in_train():
    train, test = matbench_folds(50)[2]
    sub, val = validation_split(train, fraction=0.2, seed=1)
    assert len(val) == 8 and len(sub) == 32  # round(0.2 * 40)
    assert set(sub) | set(val) == set(train.tolist())
    assert not set(val) & set(sub)
    assert not set(val) & set(test.tolist())  # never touches the test fold
    sub0, val0 = validation_split(train, fraction=0.0)
    assert len(val0) == 0 and np.array_equal(sub0, train)
    with pytest.raises(ValueError, match="repeated"):
        validation_split(np.array([1, 1, 2]), 0.5)
