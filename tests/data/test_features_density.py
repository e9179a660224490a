"""Charge density: identity on real 32³ grids, exact integer-factor cases, analytic resampling."""

import numpy as np
import pytest

from mmjax.data.material import RecordError
from mmjax.features import charge_density_features, resample_periodic


def test_real_32_grids_are_identity_up_to_normalisation(shared_data):
    with np.load(shared_data / "dos" / "charge_density_mp.npz", allow_pickle=False) as z:
        grids = z["grids"][:5].astype(np.float64)
    for g in grids:
        out = charge_density_features(g, size=32, normalize="mean")
        assert out.shape == (32, 32, 32) and out.dtype == np.float32
        np.testing.assert_allclose(out, g / g.mean(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(charge_density_features(g, normalize="max"), g / g.max(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(charge_density_features(g[None], normalize=None), g, rtol=1e-6)


def test_integer_factor_resampling_by_hand():
    rng = np.random.default_rng(1)
    fine = rng.random((64, 64, 64))
    np.testing.assert_allclose(resample_periodic(fine, 32), fine[::2, ::2, ::2])
    coarse = rng.random((16, 16, 16))
    up = resample_periodic(coarse, 32)
    np.testing.assert_allclose(up[::2, ::2, ::2], coarse)
    # a voxel between 8 samples (odd indices on all axes) is the mean of those corners (periodic wrap)
    corners = [coarse[(7 + a) % 16, (15 + b) % 16, (3 + c) % 16] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    assert up[15, 31, 7] == pytest.approx(np.mean(corners))


def trilinear_reference(grid, size, point):
    """Plain-loop periodic trilinear interpolation at output voxel ``point``."""
    n = grid.shape
    pos = [point[k] * n[k] / size for k in range(3)]
    base = [int(np.floor(p)) for p in pos]
    frac = [p - b for p, b in zip(pos, base)]
    total = 0.0
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                w = (frac[0] if a else 1 - frac[0]) * (frac[1] if b else 1 - frac[1]) * (frac[2] if c else 1 - frac[2])
                total += w * grid[(base[0] + a) % n[0], (base[1] + b) % n[1], (base[2] + c) % n[2]]
    return total


def test_anisotropic_grid_against_loop_reference():
    rng = np.random.default_rng(2)
    g = rng.random((20, 24, 28))
    out = resample_periodic(g, 32)
    for point in [(0, 0, 0), (31, 31, 31), (5, 17, 29), (13, 2, 30), (30, 9, 1)]:
        assert out[point] == pytest.approx(trilinear_reference(g, 32, point), rel=1e-12)


def test_analytic_periodic_function_at_other_resolution():
    def f(n):
        x = np.arange(n) / n
        return (2.0 + np.cos(2 * np.pi * x)[:, None, None] + 0.5 * np.sin(2 * np.pi * x)[None, :, None]
                * np.cos(2 * np.pi * x)[None, None, :])

    out = charge_density_features(f(48), size=32, normalize=None)
    # linear interpolation error <= h² max|f''| / 8 with h = 1/48 per axis, |f''| <= (2π)²·(1 + 0.5 + 0.5)
    bound = 3 * (1 / 48) ** 2 * (2 * np.pi) ** 2 * 2.0 / 8
    err = np.abs(out - f(32)).max()
    assert err < bound and err > 0
    normed = charge_density_features(f(48), size=32, normalize="mean")
    assert normed.mean() == pytest.approx(1.0, rel=1e-6)


def test_bad_grids_name_the_record():
    bad = np.ones((8, 8, 8))
    bad[1, 2, 3] = np.nan
    with pytest.raises(RecordError, match="mp-9.*NaN"):
        charge_density_features(bad, record_id="mp-9")
    with pytest.raises(RecordError, match="mp-10.*mean"):
        charge_density_features(np.zeros((4, 4, 4)), record_id="mp-10")
    with pytest.raises(RecordError, match="3-D"):
        charge_density_features(np.ones((4, 4)))
    with pytest.raises(ValueError, match="normalize"):
        charge_density_features(np.ones((4, 4, 4)), normalize="sum")
