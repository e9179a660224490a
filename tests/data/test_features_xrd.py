"""XRD: Bragg positions for NaCl, windowed smearing vs a dense reference, grids, empty patterns."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mmjax.features import EmptyPatternWarning, smear_pattern, two_theta_grid, xrd_pattern, xrd_peaks

CU_KA = 1.54184  # Å, pymatgen's "CuKa" (weighted K-alpha1/K-alpha2)


def rocksalt(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_nacl_peaks_follow_braggs_law():
    a = 5.64
    two_theta, intensity = xrd_peaks(rocksalt(a), (5.0, 90.0))
    # fcc: reflections with h, k, l all even or all odd; 2θ = 2 asin(λ / 2d), d = a / sqrt(h²+k²+l²)
    s2 = sorted({h * h + k * k + l * l for h in range(8) for k in range(8) for l in range(8)
                 if (h + k + l) > 0 and len({h % 2, k % 2, l % 2}) == 1})
    expected = [np.degrees(2 * np.arcsin(CU_KA * np.sqrt(q) / (2 * a))) for q in s2
                if CU_KA * np.sqrt(q) / (2 * a) < 1]
    expected = np.array([t for t in expected if 5.0 <= t <= 90.0])
    np.testing.assert_allclose(np.sort(two_theta), expected, atol=1e-4)
    assert intensity.max() == pytest.approx(100.0)
    assert two_theta[np.argmax(intensity)] == pytest.approx(expected[1], abs=1e-4)  # (200) strongest


def test_pattern_grid_shape_and_scale():
    pattern = xrd_pattern(rocksalt())
    grid = two_theta_grid(5.0, 90.0, 0.02)
    assert pattern.shape == (4250,) and pattern.dtype == np.float32
    assert grid[-1] == pytest.approx(89.98)
    assert pattern.max() == pytest.approx(100.0) and pattern.min() >= 0.0
    peaks, _ = xrd_peaks(rocksalt())
    assert abs(grid[np.argmax(pattern)] - peaks[np.argmax(_)]) <= 0.01
    coarse = xrd_pattern(rocksalt(), two_theta_range=(0.0, 128.0), step=1.0, sigma=1.0)
    assert coarse.shape == (128,) and coarse.max() == pytest.approx(100.0)
    np.testing.assert_allclose(two_theta_grid(0.0, 128.0, 1.0), np.arange(128.0))


def dense_reference(peaks, intensities, grid, sigma):
    out = np.zeros(len(grid))
    for p, i in zip(peaks, intensities):
        for k, x in enumerate(grid):
            out[k] += i * np.exp(-0.5 * ((x - p) / sigma) ** 2)
    return out


def test_smearing_matches_dense_reference():
    rng = np.random.default_rng(0)
    grid = two_theta_grid(5.0, 90.0, 0.02)
    peaks = np.concatenate([rng.uniform(5.0, 90.0, 60), [5.0, 5.03, 89.99, 4.7, 90.3]])  # edges too
    inten = rng.uniform(0.1, 100.0, len(peaks))
    got = smear_pattern(peaks, inten, grid, 0.1)
    ref = dense_reference(peaks, inten, grid, 0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * ref.max())
    wide = smear_pattern(peaks[:5], inten[:5], grid, 0.35)
    np.testing.assert_allclose(wide, dense_reference(peaks[:5], inten[:5], grid, 0.35), rtol=1e-5,
                               atol=1e-5 * inten[:5].max())


def test_smearing_rejects_mismatched_inputs():
    grid = two_theta_grid()
    with pytest.raises(ValueError, match="differ"):
        smear_pattern([10.0, 20.0], [1.0], grid)
    with pytest.raises(ValueError, match="uniform"):
        smear_pattern([10.0], [1.0], np.array([0.0, 1.0, 3.0]))
    assert not smear_pattern([], [], grid).any()


def test_no_peaks_in_range_gives_zeros_and_warning():
    tiny = Structure(Lattice.cubic(1.0), ["H"], [[0, 0, 0]])  # first reflection at 2θ ≈ 100.9°
    with pytest.warns(EmptyPatternWarning, match="tiny-cell"):
        pattern = xrd_pattern(tiny, record_id="tiny-cell")
    assert pattern.shape == (4250,) and not pattern.any() and np.isfinite(pattern).all()
