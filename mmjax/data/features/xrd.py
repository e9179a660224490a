"""Powder X-ray diffraction patterns: pymatgen Cu K-alpha peaks, Gaussian-smeared onto a fixed grid.

Grid convention: ``two_theta_grid(lo, hi, step)`` has L = round((hi - lo) / step) points at
lo + k * step (k = 0 .. L-1), so hi is excluded: 5-90 deg at 0.02 gives 4250 points, the last at
89.98; 0-128 deg at 1.0 gives MatBind's 128 points 0..127.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np


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
    if n > 2 and not np.allclose(np.diff(grid), step, rtol=1e-6, atol=1e-9):
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


@functools.lru_cache(maxsize=8)
def _calculator(wavelength: str):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    return XRDCalculator(wavelength=wavelength)


def xrd_peaks(structure, two_theta_range=(5.0, 90.0), wavelength: str = "CuKa"):
    """pymatgen powder peaks inside ``two_theta_range``: (two_theta float64 [P] deg, intensity [P], max 100).

    Returns empty arrays when no reciprocal-lattice point falls in the range (pymatgen itself
    crashes on that case, e.g. a 1 Å cubic cell whose first reflection is beyond 90 deg).
    """
    calc = _calculator(wavelength)
    lo, hi = (float(t) for t in two_theta_range)
    min_r, max_r = (2.0 * np.sin(np.radians(t / 2.0)) / calc.wavelength for t in (lo, hi))
    recip = structure.lattice.reciprocal_lattice_crystallographic
    norms = np.array([pt[1] for pt in recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], max_r)])
    if not ((norms > 1e-12) & (norms >= min_r)).any():
        return np.zeros(0), np.zeros(0)
    pattern = calc.get_pattern(structure, scaled=True, two_theta_range=(lo, hi))
    x = np.asarray(pattern.x, dtype=np.float64)
    y = np.asarray(pattern.y, dtype=np.float64)
    inside = (x >= two_theta_range[0]) & (x <= two_theta_range[1])
    return x[inside], y[inside]


def xrd_pattern(
    structure,
    two_theta_range=(5.0, 90.0),
    step: float = 0.02,
    sigma: float = 0.1,
    *,
    wavelength: str = "CuKa",
    record_id: str | None = None,
) -> np.ndarray:
    """Smeared powder XRD pattern, float32 [L] in [0, 100] (max scaled to 100).

    pymatgen ``XRDCalculator("CuKa")`` (1.54184 Å) peaks inside ``two_theta_range`` only, each a
    Gaussian with standard deviation ``sigma`` degrees 2-theta (``smear_pattern``), on
    ``two_theta_grid(*two_theta_range, step)``. A structure without peaks in the range gives an
    all-zero pattern and an ``EmptyPatternWarning`` naming ``record_id`` (never NaN).
    """
    lo, hi = map(float, two_theta_range)
    grid = two_theta_grid(lo, hi, step)
    peaks, inten = xrd_peaks(structure, (lo, hi), wavelength)
    pattern = smear_pattern(peaks, inten, grid, sigma)
    top = float(pattern.max()) if len(pattern) else 0.0
    if not top > 0:
        name = record_id if record_id is not None else structure.composition.reduced_formula
        warnings.warn(
            f"record {name!r}: no XRD peak in 2-theta range ({lo}, {hi}); pattern set to zeros",
            EmptyPatternWarning, stacklevel=2)
        return np.zeros(len(grid), np.float32)
    return (pattern * np.float32(100.0 / top)).astype(np.float32)
