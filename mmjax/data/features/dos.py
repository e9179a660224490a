"""Density of states on a fixed Fermi-shifted energy grid, with a coverage mask and NaN repair."""

from __future__ import annotations

import numpy as np

from mmjax.data.material import RecordError

EDGE_TOL = 1e-6  # eV; grid points this close outside the source range still count as covered


def dos_energy_grid(length: int = 601, emin: float = -10.0, emax: float = 10.0) -> np.ndarray:
    """Fixed energy grid E - E_F in eV, float32 [length] = linspace(emin, emax, length) (both ends included)."""
    if length < 2 or not emax > emin:
        raise ValueError(f"bad DOS grid: length {length}, range ({emin}, {emax})")
    return np.linspace(emin, emax, length).astype(np.float32)


def repair_nans(values, record_id: str = "?") -> np.ndarray:
    """Fill NaN runs by linear interpolation between the nearest finite neighbours (by index).

    Leading / trailing NaN runs take the nearest finite value. float64 [L] in, float64 [L] out.
    Raises ``RecordError`` when every value is NaN.
    """
    v = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(v)
    if bad.all():
        raise RecordError(record_id, "DOS densities are all NaN")
    if bad.any():
        idx = np.arange(len(v))
        v[bad] = np.interp(idx[bad], idx[~bad], v[~bad])
    return v


def dos_features(energies, densities, efermi: float | None = None, grid=None, *,
                 record_id: str = "?") -> dict[str, np.ndarray]:
    """Resample one DOS onto a fixed Fermi-shifted grid.

    Args:
      energies: float [S] eV, strictly increasing (any spacing, e.g. MP's non-uniform grids).
      densities: float [S] states/eV, NaNs allowed (repaired by ``repair_nans``, in index space,
        before resampling).
      efermi: Fermi energy in eV subtracted from ``energies``; None when they are already E - E_F.
      grid: target energies E - E_F, float [L]; default ``dos_energy_grid()`` (601 points, -10..10 eV).
      record_id: named in errors.

    Returns dict with densities float32 [L] (linear interpolation onto the grid; 0 where masked)
    and mask bool [L] (True where the grid energy lies inside the source's energy range, up to
    ``EDGE_TOL`` so that float noise from the Fermi shift does not flip the end points).
    """
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    d = np.asarray(densities, dtype=np.float64).reshape(-1)
    if e.shape != d.shape:
        raise RecordError(record_id, f"DOS energies {e.shape} and densities {d.shape} differ in length")
    if len(e) < 2:
        raise RecordError(record_id, "DOS needs at least 2 energies")
    if not np.isfinite(e).all():
        raise RecordError(record_id, "DOS energies contain NaN/inf")
    if not (np.diff(e) > 0).all():
        raise RecordError(record_id, "DOS energies are not strictly increasing")
    if efermi is not None:
        if not np.isfinite(efermi):
            raise RecordError(record_id, f"Fermi energy {efermi} is not finite")
        e = e - float(efermi)
    d = repair_nans(d, record_id)
    g = dos_energy_grid() if grid is None else np.asarray(grid, dtype=np.float64).reshape(-1)
    mask = (g >= e[0] - EDGE_TOL) & (g <= e[-1] + EDGE_TOL)
    out = np.where(mask, np.interp(g, e, d), 0.0)
    return {"densities": out.astype(np.float32), "mask": mask}
