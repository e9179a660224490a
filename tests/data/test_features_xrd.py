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


# ---------------------------------------------------------------------------------------------
# fast backend (vectorised port of pymatgen's XRDCalculator) vs a hand-computed reference and
# vs pymatgen itself on real structures
# ---------------------------------------------------------------------------------------------

import gzip  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402

import pandas as pd  # noqa: E402
from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS  # noqa: E402
from pymatgen.core import Element  # noqa: E402

from mmjax.data.features.xrd import xrd_peaks_fast, xrd_peaks_pymatgen  # noqa: E402


def form_factor(symbol, s):
    """f(s) = Z - 41.78214 s^2 sum_k a_k exp(-b_k s^2), s = sin(theta) / lambda (1/Å)."""
    ab = np.array(ATOMIC_SCATTERING_PARAMS[symbol])
    return Element(symbol).Z - 41.78214 * s ** 2 * np.sum(ab[:, 0] * np.exp(-ab[:, 1] * s ** 2))


def rocksalt_reference(a, cation, anion, lo, hi):
    """Conventional rock-salt cell (4 + 4 atoms), written out by hand: reflections exist for h, k, l
    all even (F = 4 (f_c + f_a)) or all odd (F = 4 (f_c - f_a)); all (hkl) with the same
    h^2 + k^2 + l^2 share one 2-theta, so their intensities add (count = multiplicity)."""
    out = {}
    n = int(np.ceil(2 * a / CU_KA)) + 1
    for h in range(-n, n + 1):
        for k in range(-n, n + 1):
            for l in range(-n, n + 1):
                q = h * h + k * k + l * l
                if q == 0 or len({h % 2, k % 2, l % 2}) != 1:
                    continue
                sin_t = CU_KA * np.sqrt(q) / (2 * a)
                if sin_t > 1:
                    continue
                tt = np.degrees(2 * np.arcsin(sin_t))
                if not lo <= tt <= hi:
                    continue
                s = sin_t / CU_KA
                sign = 1 if h % 2 == 0 else -1
                f = 4 * (form_factor(cation, s) + sign * form_factor(anion, s))
                theta = np.arcsin(sin_t)
                lp = (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
                out.setdefault(q, [tt, 0.0])[1] += f * f * lp
    q_sorted = sorted(out)
    return np.array([out[q][0] for q in q_sorted]), np.array([out[q][1] for q in q_sorted])


@pytest.mark.parametrize("a,cation,anion", [(5.64, "Na", "Cl"), (6.46, "Pb", "Te")])
def test_fast_peaks_match_hand_computed_rocksalt(a, cation, anion):
    st = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5] * 3])
    x_ref, y_ref = rocksalt_reference(a, cation, anion, 5.0, 90.0)
    x, y = xrd_peaks_fast(st, (5.0, 90.0), scaled=False)
    keep = y_ref / y_ref.max() * 100 > 1e-3  # pymatgen's (and our) drop threshold
    np.testing.assert_allclose(x, x_ref[keep], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y, y_ref[keep], rtol=1e-9)
    xs, ys = xrd_peaks_fast(st, (5.0, 90.0))  # scaled: strongest = 100
    np.testing.assert_allclose(ys, 100 * y / y.max(), rtol=1e-12)


def test_fast_matches_pymatgen_on_disordered_and_charged_species():
    disordered = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}, {"Fe": 0.25, "Ni": 0.75}],
                           [[0, 0, 0], [0.5, 0.5, 0.5]])
    charged = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg2+", "O2-"], [[0, 0, 0], [0.5] * 3])
    hexagonal = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    for st in (disordered, charged, hexagonal):
        for rng in ((5.0, 90.0), (0.0, 128.0)):
            x, y = xrd_peaks_fast(st, rng, scaled=False)
            x_ref, y_ref = xrd_peaks_pymatgen(st, rng, scaled=False)
            assert len(x) == len(x_ref) > 3
            np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-9)
            np.testing.assert_allclose(y, y_ref, rtol=1e-6)


def test_backend_and_element_errors():
    with pytest.raises(ValueError, match="unknown XRD backend"):
        xrd_pattern(rocksalt(), backend="numpy")
    dummy = Structure(Lattice.cubic(4.0), ["X0+"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="odd-one.*scattering coefficients for .X."):
        xrd_pattern(dummy, record_id="odd-one")
    with pytest.raises(ValueError, match="unknown radiation"):
        xrd_peaks_fast(rocksalt(), wavelength="CuKz")


def test_pymatgen_backend_empty_range_warns_too():
    tiny = Structure(Lattice.cubic(1.0), ["H"], [[0, 0, 0]])
    with pytest.warns(EmptyPatternWarning, match="tiny-pmg"):
        pattern = xrd_pattern(tiny, backend="pymatgen", record_id="tiny-pmg")
    assert not pattern.any()
    x, y = xrd_peaks_fast(tiny, (5.0, 90.0))
    assert x.shape == y.shape == (0,)


def varied_real_structures(root):
    """~30 real structures: 8 Castelli perovskites, 8 oblique (triclinic-cell) carbon24 cells and
    14 MP-40 materials (triclinic, the largest cells up to 40 sites, the heaviest elements)."""
    with gzip.open(root / "perovskites" / "structures_all.json.gz", "rt") as f:
        per = json.load(f)
    out = [(f"perov-{i}", Structure.from_str(per[i]["poscar"], fmt="poscar"))
           for i in sorted(per, key=int)[:8]]
    with gzip.open(root / "carbon24" / "structures_all.json.gz", "rt") as f:
        car = json.load(f)
    picked = 0
    for i in sorted(car)[:300]:
        st = Structure.from_str(car[i]["poscar"], fmt="poscar")
        if min(abs(ang - 90.0) for ang in st.lattice.angles) > 2.0:
            out.append((i, st))
            picked += 1
            if picked == 8:
                break
    mp = pd.read_csv(root / "mp40" / "mp40_test.csv.gz")
    mp["n_sites"] = mp.composition.str.findall(r"\d+").apply(lambda v: sum(map(int, v)))
    mp["max_z"] = mp.composition.str.findall(r"[A-Z][a-z]?").apply(lambda v: max(Element(e).Z for e in v))
    rows = pd.concat([mp[mp.crystal_system == "triclinic"].sort_values("material_id").head(5),
                      mp.sort_values(["n_sites", "material_id"]).tail(5),
                      mp.sort_values(["max_z", "material_id"]).tail(4)]).drop_duplicates("material_id")
    out += [(r.material_id, Structure.from_str(r.cif, fmt="cif")) for r in rows.itertuples()]
    return out


def test_fast_backend_equals_pymatgen_on_real_structures(shared_data):
    structures = varied_real_structures(shared_data)
    assert len(structures) >= 28
    assert max(len(st) for _, st in structures) >= 38 and max(len(st) for _, st in structures) <= 40
    assert max(max(sp.Z for sp in st.composition) for _, st in structures) >= 90  # U or heavier
    warnings.simplefilter("ignore")  # pymatgen CIF parsing chatter
    worst_peak, worst_pattern = 0.0, 0.0
    for rid, st in structures:
        x, y = xrd_peaks_fast(st, (5.0, 90.0), scaled=False, record_id=rid)
        x_ref, y_ref = xrd_peaks_pymatgen(st, (5.0, 90.0), scaled=False)
        assert len(x) == len(x_ref), rid
        np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-8, err_msg=rid)
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-9 * y_ref.max(), err_msg=rid)
        worst_peak = max(worst_peak, float(np.abs(y - y_ref).max() / y_ref.max()))
        fast = xrd_pattern(st, record_id=rid)
        ref = xrd_pattern(st, backend="pymatgen", record_id=rid)
        assert fast.max() == pytest.approx(100.0)
        worst_pattern = max(worst_pattern, float(np.abs(fast - ref).max()))
    assert worst_pattern < 1e-3 and worst_peak < 1e-6


def test_fast_backend_equals_pymatgen_on_matbind_grid(shared_data):
    """MatBind's 0-128 deg grid at 1 deg (lower bound 0: no min-radius cut)."""
    structures = varied_real_structures(shared_data)[::6]
    for rid, st in structures:
        fast = xrd_pattern(st, (0.0, 128.0), 1.0, 0.5, record_id=rid)
        ref = xrd_pattern(st, (0.0, 128.0), 1.0, 0.5, backend="pymatgen", record_id=rid)
        assert fast.shape == (128,)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-3, err_msg=rid)
