"""E5: PCA vs numpy, silhouette vs scikit-learn, KDE overlap, tolerance factor."""

import numpy as np
import pytest

from mmjax.eval.latent import evaluate_latent, group_similarity_overlap, kde_overlap, pca, silhouette_samples, silhouette_score
from mmjax.eval.tolerance import goldschmidt, in_perovskite_window, tolerance_factor


def test_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5))
    scores, comps, ratio = pca(x, 2)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    order = np.argsort(evals)[::-1]
    for j in range(2):
        v = evecs[:, order[j]]
        assert abs(abs(comps[j] @ v) - 1) < 1e-8  # same axis up to sign
    np.testing.assert_allclose(ratio, evals[order[:2]] / evals.sum(), rtol=1e-8)
    np.testing.assert_allclose(scores, (x - x.mean(0)) @ comps.T)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_silhouette_matches_sklearn(metric):
    from sklearn.metrics import silhouette_samples as sk_samples

    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (15, 3)), rng.normal(-3, 1, (1, 3))])
    labels = np.array([0] * 20 + [1] * 15 + [2])  # includes a singleton cluster
    ours = silhouette_samples(x, labels, metric, chunk_size=7)
    np.testing.assert_allclose(ours, sk_samples(x, labels, metric=metric), atol=1e-10)
    assert ours[-1] == 0.0
    assert silhouette_score(x, labels, metric) == pytest.approx(ours.mean())


def test_kde_overlap_limits():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 400)
    assert kde_overlap(a, a) == pytest.approx(1.0, abs=1e-3)
    assert kde_overlap(a, a + 20) < 1e-3
    mid = kde_overlap(rng.normal(0, 1, 2000), rng.normal(1, 1, 2000))
    assert mid == pytest.approx(2 * 0.3085, abs=0.05)  # two unit Gaussians 1 apart: 2 Φ(-1/2)


def test_group_overlap_separates_clustered_group(tmp_path):
    rng = np.random.default_rng(4)
    tight = np.array([1.0, 0, 0, 0]) + 0.05 * rng.normal(size=(30, 4))
    spread = rng.normal(size=(30, 4))
    x = np.concatenate([tight, spread])
    group = np.arange(60) < 30
    ov = group_similarity_overlap(x, group)
    assert ov["mean_sim_group"] > 0.9 and ov["overlap"] < 0.2
    res, table = evaluate_latent(x, tmp_path, crystal_system=np.repeat([0, 6], 30), properties={"gap": rng.random(60)},
                                 class_names=["triclinic"] + ["x"] * 5 + ["cubic"], in_group=group)
    assert res["silhouette"]["mean"] > 0 and (tmp_path / "latent_pca_crystal_system.png").is_file()
    assert (tmp_path / "latent_pca_gap.png").is_file() and (tmp_path / "latent_similarity_kde.png").is_file()


def test_tolerance_factor_srtio3_hand_value():
    from pymatgen.core import Lattice, Structure

    # A/B given in swapped site order: the assignment must come from the geometry.
    s = Structure(Lattice.cubic(3.905), ["Ti", "Sr", "O", "O", "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    r = tolerance_factor(s, "SrTiO3")
    assert (r["A"], r["B"]) == ("Sr", "Ti")
    # Shannon: Sr2+ XII 1.44, Ti4+ VI 0.605, O2- VI 1.40
    assert r["t"] == pytest.approx((1.44 + 1.40) / (np.sqrt(2) * (0.605 + 1.40)), abs=1e-9)
    assert goldschmidt(1.0, 1.0, 1.0) == pytest.approx(1 / np.sqrt(2))
    assert in_perovskite_window(1.0, ["O"]) and not in_perovskite_window(1.0, ["Se"]) and in_perovskite_window(1.02, ["Se"])
