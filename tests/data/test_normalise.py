"""mmjax.data.normalise: the one target-normalisation table, checked against hand-computed values."""

import numpy as np
import pytest

from mmjax.data.normalise import moments, normalise, regression_entry, table_from_manifest, target_moments


class _Manifest:
    def __init__(self, schema, targets):
        self.schema, self.statistics = schema, {"targets": targets}


def test_moments_are_population_mean_and_std_of_the_finite_values():
    assert moments(np.array([1.0, 3.0, np.nan, np.inf])) == (2.0, 1.0)
    assert moments(np.array([4.0, 4.0])) == (4.0, 1.0)  # zero spread: std 1, never a division by 0
    with pytest.raises(ValueError, match="no finite target values among the val rows"):
        moments(np.array([np.nan]), what="val rows")


def test_table_from_manifest_scalar_vector_class_and_errors():
    m = _Manifest({"target/e": {"shape": []}, "target/v": {"shape": [2]}, "label/sg": {"shape": []},
                   "target/empty": {"shape": []}},
                  {"e": {"count": 3, "mean": 1.5, "std": 0.5}, "v": {"count": [2, 1], "mean": [1.0, -2.0],
                                                                     "std": [2.0, 0.0]}, "empty": {"count": 0}})
    t = table_from_manifest(m, ["e", "v", "sg"], normalize=True)
    assert t["e"] == {"kind": "regression", "mean": 1.5, "std": 0.5}
    assert t["v"] == {"kind": "regression", "mean": [1.0, -2.0], "std": [2.0, 1.0], "shape": [2]}  # std 0 -> 1
    assert t["sg"] == {"kind": "class"}
    assert table_from_manifest(m, ["e", "v"], normalize=False) == {
        "e": {"kind": "regression", "mean": 0.0, "std": 1.0},
        "v": {"kind": "regression", "mean": [0.0, 0.0], "std": [1.0, 1.0], "shape": [2]}}
    with pytest.raises(ValueError, match="'empty' has no labelled records"):
        table_from_manifest(m, ["empty"], normalize=True)
    with pytest.raises(ValueError, match="unknown target 'gap'"):
        table_from_manifest(m, ["gap"], normalize=False)


def test_normalise_masks_non_finite_and_unlabelled_slots():
    y = np.array([[3.0, np.nan, 5.0, 7.0]], np.float32)
    ok = np.array([[True, True, False, True]])
    mean, std = target_moments(regression_entry(1.0, 2.0))
    vals, mask = normalise(y, ok, mean, std)
    np.testing.assert_array_equal(mask, [[True, False, False, True]])
    np.testing.assert_array_equal(vals, np.array([[1.0, 0.0, 0.0, 3.0]], np.float32))
    assert vals.dtype == np.float32
    mean, std = target_moments(regression_entry([0.0, 10.0], [1.0, 5.0], (2,)), (2,))
    vals, _ = normalise(np.array([[2.0, 20.0]], np.float32), np.ones((1, 2), bool), mean, std)
    np.testing.assert_array_equal(vals, [[2.0, 2.0]])
