"""E4 discovery: MultiMat Eq. 5 on hand cases and best-of-n ordering."""

import numpy as np
import pytest

from mmjax.eval.discovery import best_of_n_curve, dos_grid, evaluate_discovery, normalized_dos_mae, resample_dos


def test_normalized_mae_hand_case():
    grid = dos_grid((-5, 5), 101)
    target = np.ones_like(grid)  # area 10
    cands = np.stack([np.ones_like(grid), 2 * np.ones_like(grid), np.zeros_like(grid)])
    np.testing.assert_allclose(normalized_dos_mae(target, cands, grid), [0.0, 1.0, 1.0])
    # a step: candidate 0 on [-5, 0), 1 on [0, 5]: |diff| = 1 on half the window -> 0.5 (+ grid error)
    step = (grid >= 0).astype(float)
    assert normalized_dos_mae(target, step, grid) == pytest.approx(0.5, abs=0.02)
    assert np.isnan(normalized_dos_mae(np.zeros_like(grid), target, grid))


def test_resample_dos_window_and_outside_zero():
    e = np.array([[-10.0, 0.0, 10.0], [-1.0, 0.0, 1.0]])
    d = np.array([[0.0, 10.0, 0.0], [1.0, 1.0, 1.0]])
    grid = np.array([-5.0, 0.0, 2.0])
    np.testing.assert_allclose(resample_dos(e, d, grid), [[5.0, 10.0, 8.0], [0.0, 1.0, 0.0]])


def test_best_of_n_improves_with_n(tmp_path):
    grid = dos_grid((-5, 5), 51)
    q_dos = np.ones((1, grid.size))
    cand_dos = np.stack([3 * np.ones(grid.size), np.ones(grid.size), 2 * np.ones(grid.size)])
    # nearest candidate by cosine is 0 (bad, nMAE 2), then 2 (nMAE 1), then 1 (perfect)
    q_emb = np.array([[1.0, 0.0]])
    c_emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    res = best_of_n_curve(q_emb, c_emb, q_dos, cand_dos, grid, ns=(1, 2, 3))
    np.testing.assert_allclose(res["mean_nmae"], [2.0, 1.0, 0.0])
    ex = best_of_n_curve(q_emb, c_emb, q_dos, cand_dos, grid, ns=(1, 2), exclude=np.array([0]))
    np.testing.assert_allclose(ex["mean_nmae"], [1.0, 0.0])
    out, table = evaluate_discovery(q_emb, c_emb, q_dos, cand_dos, grid, tmp_path, ns=(1, 2, 3))
    assert len(out["random_mean_nmae"]) == 3 and (tmp_path / "discovery_nmae.png").is_file()
