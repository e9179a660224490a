"""DOS features on MultiMat's real (non-uniform, Fermi-shifted) grids, NaN repair and errors."""

import numpy as np
import pytest
from scipy.interpolate import interp1d

from mmjax.data.material import RecordError
from mmjax.features import dos_energy_grid, dos_features, repair_nans


@pytest.fixture(scope="module")
def dos100(shared_data):
    with np.load(shared_data / "dos" / "dos_mp100.npz", allow_pickle=False) as z:
        return z["material_ids"], z["energies"].astype(np.float64), z["densities"].astype(np.float64)


def test_grid():
    g = dos_energy_grid()
    assert g.shape == (601,) and g.dtype == np.float32
    assert g[0] == -10.0 and g[-1] == 10.0 and g[300] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(np.diff(dos_energy_grid(2001, -5, 5)), 0.005, rtol=1e-4)


@pytest.mark.parametrize("length", [601, 2001])
def test_resampling_matches_scipy_on_real_dos(dos100, length):
    ids, energies, densities = dos100
    grid = dos_energy_grid(length, -10.0, 10.0)
    for k in range(0, 100, 7):
        e, d = energies[k], densities[k]
        out = dos_features(e, d, grid=grid, record_id=str(ids[k]))
        assert out["densities"].shape == (length,) and out["mask"].dtype == bool
        inside = (grid >= e[0]) & (grid <= e[-1])
        np.testing.assert_array_equal(out["mask"], inside)
        ref = interp1d(e, d)(grid[inside])
        np.testing.assert_allclose(out["densities"][inside], ref, rtol=1e-5, atol=1e-6)
        assert (out["densities"][~inside] == 0).all()


def test_partial_coverage_and_fermi_shift(dos100):
    _, energies, densities = dos100
    e, d = energies[0], densities[0]
    cut = (e > -3.0)  # source covering only E - E_F > -3 eV
    out = dos_features(e[cut], d[cut])
    g = dos_energy_grid()
    np.testing.assert_array_equal(out["mask"], (g >= e[cut][0]) & (g <= e[cut][-1]))
    assert not out["mask"][:100].any() and out["mask"][400]
    assert e[-1] < 10.0 and not out["mask"][-1]  # this material's source grid ends at 8.4 eV
    efermi = 4.25  # absolute energies + E_F must give the same features
    shifted = dos_features(e + efermi, d, efermi=efermi)
    plain = dos_features(e, d)
    np.testing.assert_allclose(shifted["densities"], plain["densities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(shifted["mask"], plain["mask"])


def test_nan_repair_by_hand_and_on_real_data(dos100):
    np.testing.assert_allclose(repair_nans([1.0, np.nan, np.nan, 4.0]), [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(repair_nans([np.nan, 2.0, 5.0, np.nan]), [2.0, 2.0, 5.0, 5.0])
    _, energies, densities = dos100
    e, d = energies[3], densities[3].copy()
    d[200:203] = np.nan
    out = dos_features(e, d)
    assert np.isfinite(out["densities"]).all()
    repaired = repair_nans(d)
    for i, k in enumerate(range(200, 203)):
        w = (i + 1) / 4.0
        assert repaired[k] == pytest.approx((1 - w) * densities[3][199] + w * densities[3][203])


def test_errors_name_the_record():
    e = np.linspace(-5, 5, 11)
    with pytest.raises(RecordError, match="mp-42.*all NaN"):
        dos_features(e, np.full(11, np.nan), record_id="mp-42")
    with pytest.raises(RecordError, match="mp-7.*increasing"):
        dos_features(e[::-1], np.ones(11), record_id="mp-7")
    with pytest.raises(RecordError, match="mp-8.*differ"):
        dos_features(e, np.ones(10), record_id="mp-8")
