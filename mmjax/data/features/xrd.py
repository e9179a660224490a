"""Powder X-ray diffraction patterns: Cu K-alpha peaks, Gaussian-smeared onto a fixed grid.

Two peak backends give the same peaks: ``"fast"`` (default) is a vectorised NumPy port of
pymatgen's ``XRDCalculator.get_pattern`` (``xrd_peaks_fast``); ``"pymatgen"`` calls pymatgen itself
and stays as the reference. pymatgen spends most of its time building hkl family labels in pure
Python; the fast path skips the labels (they do not change positions or intensities).

Grid convention: ``two_theta_grid(lo, hi, step)`` has L = round((hi - lo) / step) points at
lo + k * step (k = 0 .. L-1), so hi is excluded: 5-90 deg at 0.02 gives 4250 points, the last at
89.98; 0-128 deg at 1.0 gives MatBind's 128 points 0..127.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from pymatgen.core import Element


class EmptyPatternWarning(UserWarning):
    """A structure has no diffraction peak inside the requested 2-theta range (pattern is zeros)."""


def two_theta_grid(lo: float = 5.0, hi: float = 90.0, step: float = 0.02) -> np.ndarray:
    """2-theta grid in degrees, float64 [L] with L = round((hi - lo) / step), points lo + k * step."""
    if not hi > lo or not step > 0:
        raise ValueError(f"bad 2-theta grid: range ({lo}, {hi}), step {step}")
    n = int(round((hi - lo) / step))
    return lo + step * np.arange(n)


def smear_pattern(peaks_2theta, intensities, grid, sigma: float = 0.1, truncate: float = 6.0) -> np.ndarray:
    """Sum of Gaussians I_p * exp(-(x - t_p)^2 / (2 sigma^2)) on a uniform grid, float32 [L].

    Args:
      peaks_2theta: float [P] peak positions (degrees); peaks off the grid still contribute their tails.
      intensities: float [P] peak heights (arbitrary units).
      grid: float [L] uniform grid (degrees), e.g. ``two_theta_grid(...)``.
      sigma: Gaussian standard deviation in degrees.
      truncate: each Gaussian is evaluated only within +-truncate*sigma of its centre (relative
        error exp(-truncate^2 / 2): 1.5e-8 at 6), which makes the cost O(P * window) instead of
        O(P * L); contributions are accumulated with ``np.bincount``.
    Returns the unnormalised smeared pattern (no scaling; see ``xrd_pattern``).
    """
    grid = np.asarray(grid, dtype=np.float64)
    peaks = np.asarray(peaks_2theta, dtype=np.float64).reshape(-1)
    inten = np.asarray(intensities, dtype=np.float64).reshape(-1)
    if peaks.shape != inten.shape:
        raise ValueError(f"peaks {peaks.shape} and intensities {inten.shape} differ in length")
    n = len(grid)
    if n == 0 or len(peaks) == 0:
        return np.zeros(n, np.float32)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    lo = grid[0]
    step = (grid[-1] - lo) / (n - 1) if n > 1 else 1.0
    if n > 2 and np.abs(np.diff(grid) - step).max() > 1e-6 * abs(step) + 1e-9:
        raise ValueError("smear_pattern needs a uniform grid")
    half = int(np.ceil(truncate * sigma / step))
    offsets = np.arange(-half, half + 1)
    centre = np.rint((peaks - lo) / step).astype(np.int64)
    idx = centre[:, None] + offsets[None, :]  # [P, W]
    valid = (idx >= 0) & (idx < n)
    x = lo + idx * step
    vals = inten[:, None] * np.exp(-0.5 * ((x - peaks[:, None]) / sigma) ** 2)
    out = np.bincount(idx[valid], weights=vals[valid], minlength=n)
    return out.astype(np.float32)


_BACKENDS = ("fast", "pymatgen")

# pymatgen constants (pymatgen/analysis/diffraction/core.py, AbstractDiffractionPatternCalculator)
_TWO_THETA_TOL = 1e-5  # degrees: peaks whose 2-theta round to the same multiple are merged
_SCALED_INTENSITY_TOL = 1e-3  # peaks below this (on the 0-100 scale of the strongest) are dropped


def _wavelength(wavelength) -> float:
    """Wavelength in Å from a pymatgen radiation name ("CuKa" -> 1.54184) or a number in Å."""
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS

    if isinstance(wavelength, str):
        if wavelength not in WAVELENGTHS:
            raise ValueError(f"unknown radiation {wavelength!r}; known: {sorted(WAVELENGTHS)}")
        return float(WAVELENGTHS[wavelength])
    value = float(wavelength)
    if not value > 0:
        raise ValueError(f"wavelength must be > 0 Å, got {wavelength}")
    return value


@functools.lru_cache(maxsize=None)
def _element_params(symbol: str) -> tuple[int, np.ndarray]:
    """(Z, coefficients float64 [4, 2] of (a_k, b_k)) from pymatgen's atomic_scattering_params.json."""
    from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS
    if symbol not in ATOMIC_SCATTERING_PARAMS:
        raise ValueError(f"no X-ray scattering coefficients for {symbol!r}")
    return Element(symbol).Z, np.asarray(ATOMIC_SCATTERING_PARAMS[symbol], dtype=np.float64)


def _scatterers(structure, record_id=None):
    """Sites grouped by element.

    Returns (frac float64 [N, 3], weights float64 [N, E] with weights[n, e] = occupancy of
    element e on entry n, Z float64 [E], coeff float64 [E, 4, 2]); one entry per (site, species).
    """
    symbols: dict[str, int] = {}
    rows, cols, occ, frac = [], [], [], []
    fcoords = structure.frac_coords
    for i, site in enumerate(structure):
        for sp, o in site.species.items():
            sym = sp.symbol
            if sym not in symbols:
                symbols[sym] = len(symbols)
            rows.append(len(frac))
            cols.append(symbols[sym])
            occ.append(o)
            frac.append(fcoords[i])
    params = []
    for sym in symbols:
        try:
            params.append(_element_params(sym))
        except ValueError as err:
            name = record_id if record_id is not None else structure.composition.reduced_formula
            raise ValueError(f"record {name!r}: cannot compute an XRD pattern: {err}") from None
    weights = np.zeros((len(frac), len(symbols)))
    weights[rows, cols] = occ
    z = np.array([p[0] for p in params], dtype=np.float64)
    coeff = np.stack([p[1] for p in params])
    return np.asarray(frac, dtype=np.float64).reshape(-1, 3), weights, z, coeff


@functools.lru_cache(maxsize=256)
def _half_space_box(nh: int, nk: int, nl: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer (h, k, l) with |h| <= nh, |k| <= nk, |l| <= nl in the half-space (h, k, l) > 0
    lexically (h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0): (int64 [B, 3], float64 [B, 3]),
    read-only (cached)."""
    h = np.arange(0, nh + 1)
    k = np.arange(-nk, nk + 1)
    l = np.arange(-nl, nl + 1)
    hkl = np.stack(np.meshgrid(h, k, l, indexing="ij"), axis=-1).reshape(-1, 3)
    hh, kk, ll = hkl.T
    hkl = hkl[(hh > 0) | ((hh == 0) & (kk > 0)) | ((hh == 0) & (kk == 0) & (ll > 0))]
    hkl_f = hkl.astype(np.float64)
    hkl.flags.writeable = False
    hkl_f.flags.writeable = False
    return hkl, hkl_f


def _half_space_hkl(lattice_matrix: np.ndarray, max_r: float):
    """Miller indices of reciprocal points 0 < |g| <= max_r in the half-space (h, k, l) > 0 lexically.

    Args:
      lattice_matrix: float [3, 3] real-space lattice vectors as rows (Å).
      max_r: radius in 1/Å (crystallographic reciprocal lattice, no 2 pi).
    Returns (hkl int64 [M, 3], |g| float64 [M] in 1/Å). |h| <= |g| |a_1| bounds the box.
    """
    recip = np.linalg.inv(lattice_matrix).T  # rows b_i with a_i . b_j = delta_ij
    nmax = np.floor(max_r * np.sqrt((lattice_matrix ** 2).sum(axis=1)) + 1e-9).astype(np.int64)
    hkl, hkl_f = _half_space_box(*(int(n) for n in nmax))
    cart = hkl_f @ recip
    g = np.sqrt((cart * cart).sum(axis=1))
    keep = g <= max_r
    return hkl[keep], g[keep]


def xrd_peaks_fast(structure, two_theta_range=(5.0, 90.0), wavelength="CuKa", *, scaled: bool = True,
                   record_id: str | None = None):
    """Vectorised NumPy port of pymatgen ``XRDCalculator(wavelength).get_pattern(structure, scaled,
    two_theta_range)`` (no symprec refinement, no Debye-Waller factors — pymatgen's defaults).

    Steps, as in pymatgen: reciprocal points ``g = h b1 + k b2 + l b3`` with
    ``min_r <= |g| <= max_r`` (``r = 2 sin(theta) / lambda``), one Friedel half-space (intensity
    doubled); structure factor ``F = sum_j occ_j f_j(s) exp(2 pi i hkl . r_j)`` with
    ``f(s) = Z - 41.78214 s^2 sum_k a_k exp(-b_k s^2)``, ``s = |g| / 2``; intensity ``2 |F|^2`` times
    the Lorentz-polarisation factor ``(1 + cos^2 2theta) / (sin^2 theta cos theta)``; reflections
    whose 2-theta round to the same multiple of 1e-5 deg are merged (intensities summed, position of
    the first in (|g|, -h, -k, -l) order); merged peaks below 1e-3 % of the strongest are dropped.
    The hkl family labels pymatgen also builds are not computed.

    Args:
      structure: pymatgen ``Structure`` (ordered or disordered; species with oxidation states ok).
      two_theta_range: (lo, hi) degrees 2-theta.
      wavelength: pymatgen radiation name ("CuKa" = 1.54184 Å) or a float in Å.
      scaled: True scales the strongest peak to 100 (pymatgen ``scaled=True``); False returns the
        raw intensities (electrons^2, arbitrary overall factor as pymatgen).
      record_id: names the record in errors.
    Returns (two_theta float64 [P] degrees ascending, intensity float64 [P]); empty arrays when no
    reciprocal point lies in the range (pymatgen raises on that case).
    Raises ValueError naming the record for an element without scattering coefficients.
    """
    lam = _wavelength(wavelength)
    lo, hi = (float(t) for t in two_theta_range)
    min_r, max_r = (2.0 * np.sin(np.radians(t / 2.0)) / lam for t in (lo, hi))
    frac, weights, z, coeff = _scatterers(structure, record_id)
    hkl, g = _half_space_hkl(np.asarray(structure.lattice.matrix, dtype=np.float64), max_r)
    if min_r:
        keep = g >= min_r
        hkl, g = hkl[keep], g[keep]
    if len(g) == 0:
        return np.zeros(0), np.zeros(0)
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], g))
    hkl, g = hkl[order], g[order]

    theta = np.arcsin(np.clip(lam * g / 2.0, -1.0, 1.0))  # [M]
    s2 = (g / 2.0) ** 2  # [M]
    # f_e(s) for every element: [M, E]
    form = z[None, :] - 41.78214 * s2[:, None] * np.einsum(
        "ek,mek->me", coeff[:, :, 0], np.exp(-coeff[None, :, :, 1] * s2[:, None, None]))
    phase = np.exp(2j * np.pi * (hkl.astype(np.float64) @ frac.T))  # [M, N]
    f_hkl = np.einsum("me,me->m", phase @ weights, form)  # [M]
    i_hkl = f_hkl.real ** 2 + f_hkl.imag ** 2
    cos2t = np.cos(2.0 * theta)
    lorentz = (1.0 + cos2t ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    intensity = 2.0 * i_hkl * lorentz
    two_theta = np.degrees(2.0 * theta)

    # Merge: keys are non-decreasing along |g| order, so groups are contiguous runs.
    keys = np.round(two_theta / _TWO_THETA_TOL).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    y = np.add.reduceat(intensity, starts)
    x = two_theta[starts]
    keep = y / y.max() * 100.0 > _SCALED_INTENSITY_TOL
    x, y = x[keep], y[keep]
    if scaled:
        y = y / y.max() * 100.0
    return x, y


@functools.lru_cache(maxsize=8)
def _calculator(wavelength):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    return XRDCalculator(wavelength=wavelength)


def xrd_peaks_pymatgen(structure, two_theta_range=(5.0, 90.0), wavelength="CuKa", *, scaled: bool = True):
    """pymatgen ``XRDCalculator.get_pattern`` peaks (the reference for ``xrd_peaks_fast``).

    Returns (two_theta float64 [P] degrees, intensity float64 [P], max 100 when ``scaled``);
    empty arrays when no reciprocal-lattice point falls in the range (pymatgen itself crashes on
    that case, e.g. a 1 Å cubic cell whose first reflection is beyond 90 deg).
    """
    calc = _calculator(wavelength)
    lo, hi = (float(t) for t in two_theta_range)
    min_r, max_r = (2.0 * np.sin(np.radians(t / 2.0)) / calc.wavelength for t in (lo, hi))
    recip = structure.lattice.reciprocal_lattice_crystallographic
    norms = np.array([pt[1] for pt in recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], max_r)])
    if not ((norms > 1e-12) & (norms >= min_r)).any():
        return np.zeros(0), np.zeros(0)
    pattern = calc.get_pattern(structure, scaled=scaled, two_theta_range=(lo, hi))
    return np.asarray(pattern.x, dtype=np.float64), np.asarray(pattern.y, dtype=np.float64)


def xrd_peaks(structure, two_theta_range=(5.0, 90.0), wavelength="CuKa", *, backend: str = "fast",
              record_id: str | None = None):
    """Powder peaks inside ``two_theta_range``: (two_theta float64 [P] deg, intensity [P], max 100).

    ``backend="fast"`` (default) uses ``xrd_peaks_fast``; ``"pymatgen"`` uses pymatgen's
    ``XRDCalculator`` (same peaks; tested to 1e-6 relative per peak). Empty arrays when no reciprocal-lattice point
    falls in the range.
    """
    if backend == "fast":
        x, y = xrd_peaks_fast(structure, two_theta_range, wavelength, record_id=record_id)
    elif backend == "pymatgen":
        x, y = xrd_peaks_pymatgen(structure, two_theta_range, wavelength)
    else:
        raise ValueError(f"unknown XRD backend {backend!r}; expected one of {_BACKENDS}")
    inside = (x >= two_theta_range[0]) & (x <= two_theta_range[1])
    return x[inside], y[inside]


def xrd_pattern(
    structure,
    two_theta_range=(5.0, 90.0),
    step: float = 0.02,
    sigma: float = 0.1,
    *,
    wavelength="CuKa",
    backend: str = "fast",
    record_id: str | None = None,
) -> np.ndarray:
    """Smeared powder XRD pattern, float32 [L] in [0, 100] (max scaled to 100).

    Cu K-alpha (pymatgen "CuKa", 1.54184 Å) peaks inside ``two_theta_range`` only (``xrd_peaks``
    with ``backend`` "fast" or "pymatgen"), each a Gaussian with standard deviation ``sigma``
    degrees 2-theta (``smear_pattern``), on ``two_theta_grid(*two_theta_range, step)``. A structure
    without peaks in the range gives an all-zero pattern and an ``EmptyPatternWarning`` naming
    ``record_id`` (never NaN).
    """
    lo, hi = map(float, two_theta_range)
    grid = two_theta_grid(lo, hi, step)
    peaks, inten = xrd_peaks(structure, (lo, hi), wavelength, backend=backend, record_id=record_id)
    pattern = smear_pattern(peaks, inten, grid, sigma)
    top = float(pattern.max()) if len(pattern) else 0.0
    if not top > 0:
        name = record_id if record_id is not None else structure.composition.reduced_formula
        warnings.warn(
            f"record {name!r}: no XRD peak in 2-theta range ({lo}, {hi}); pattern set to zeros",
            EmptyPatternWarning, stacklevel=2)
        return np.zeros(len(grid), np.float32)
    return (pattern * np.float32(100.0 / top)).astype(np.float32)
