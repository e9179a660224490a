"""Charge-density voxel grids resampled to a fixed cube and normalised.

Sampling convention (VASP CHGCAR / MultiMat): an [n0, n1, n2] grid holds samples at fractional
positions (i / n0, j / n1, k / n2) of a periodic cell. Output voxel (a, b, c) of a size^3 grid sits
at (a / size, b / size, c / size) and is obtained by **periodic trilinear interpolation** (the
tensor product of 1-D linear interpolation with wrap-around, applied axis by axis, which equals
trilinear interpolation exactly). Consequences: same size -> identity; downsampling by an integer
factor picks every factor-th sample; upsampling by 2 puts corner means between samples.
"""

from __future__ import annotations

import numpy as np

from mmjax.data.material import RecordError

NORMALIZATIONS = ("mean", "max", None)


def _resample_axis(grid: np.ndarray, axis: int, size: int) -> np.ndarray:
    n = grid.shape[axis]
    if n == size:
        return grid
    pos = np.arange(size) * (n / size)
    i0 = np.floor(pos).astype(np.int64)
    w = pos - i0
    a = np.take(grid, i0 % n, axis=axis)
    b = np.take(grid, (i0 + 1) % n, axis=axis)
    shape = [1] * grid.ndim
    shape[axis] = size
    w = w.reshape(shape)
    return (1.0 - w) * a + w * b


def resample_periodic(grid, size: int = 32) -> np.ndarray:
    """Periodic trilinear resampling of a 3-D grid [n0, n1, n2] to [size, size, size], float64."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 3:
        raise ValueError(f"charge density grid must be 3-D, got shape {g.shape}")
    for axis in range(3):
        g = _resample_axis(g, axis, size)
    return g


def charge_density_features(grid, size: int = 32, normalize: str | None = "mean", *,
                            record_id: str = "?") -> np.ndarray:
    """Resampled, normalised charge density, float32 [size, size, size].

    Args:
      grid: float [nx, ny, nz] periodic voxel grid (any shape, e.g. CHGCAR ``total`` = rho * V_cell).
      size: output edge length (32 as in MultiMat).
      normalize: "mean" (divide by the grid mean, so the output averages 1; removes the cell-volume
        and electron-count scale), "max" (divide by the maximum, output max 1) or None (raw values).
      record_id: named in errors (non-finite values, non-positive mean/max).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim == 4 and g.shape[0] == 1:  # MultiMat's (1, 32, 32, 32) tensors
        g = g[0]
    if g.ndim != 3 or min(g.shape) < 1:
        raise RecordError(record_id, f"charge density must be a 3-D grid, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise RecordError(record_id, "charge density contains NaN/inf")
    out = resample_periodic(g, size)
    if normalize is not None:
        scale = out.mean() if normalize == "mean" else out.max()
        if not scale > 0:
            raise RecordError(record_id, f"charge density {normalize} is {scale}, cannot normalise")
        out = out / scale
    return out.astype(np.float32)
