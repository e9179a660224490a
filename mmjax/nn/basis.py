"""Fixed (parameter-free) feature expansions computed on device.

All functions are pure jnp, jit/vmap friendly, and take float arrays of any leading shape.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def gaussian_expansion(distances, start: float = 0.0, stop: float = 8.0, num: int = 41,
                       width: float | None = None):
    """CGCNN Gaussian distance expansion ``exp(-(d - mu_k)^2 / width^2)``.

    Args:
      distances: float [...] distances in Angstrom.
      start, stop: first and last centre (Angstrom); centres are ``linspace(start, stop, num)``
        (CGCNN/MatBind: 0..8 step 0.2 -> 41 centres).
      num: number of centres K.
      width: Gaussian width in Angstrom; defaults to the centre spacing (CGCNN ``var = step``).

    Returns:
      float [..., K].
    """
    centers = jnp.linspace(start, stop, num, dtype=jnp.float32)
    if width is None:
        width = (stop - start) / (num - 1)
    d = jnp.asarray(distances, jnp.float32)[..., None]
    return jnp.exp(-((d - centers) ** 2) / (width ** 2))


def rbf_expansion(values, vmin: float, vmax: float, bins: int, kind: str = "gaussian"):
    """PotNet/ALIGNN ``RBFExpansion`` with ``gamma = 1 / spacing`` (not 1/spacing^2).

    ``base = gamma * (x - mu_k)``; gaussian ``exp(-base^2)``, multiquadric ``sqrt(1 + base^2)``,
    inverse_quadratic ``1 / (1 + base^2)``.

    Args:
      values: float [...] scalar inputs (PotNet: ``-0.75 / d`` for local edges, the summed
        potential for infinite edges).
      vmin, vmax, bins: centres ``linspace(vmin, vmax, bins)``.
      kind: "gaussian" | "multiquadric" | "inverse_quadratic".

    Returns:
      float [..., bins].
    """
    centers = jnp.linspace(vmin, vmax, bins, dtype=jnp.float32)
    gamma = 1.0 / ((vmax - vmin) / (bins - 1))
    base = gamma * (jnp.asarray(values, jnp.float32)[..., None] - centers)
    if kind == "gaussian":
        return jnp.exp(-(base ** 2))
    if kind == "multiquadric":
        return jnp.sqrt(1.0 + base ** 2)
    if kind == "inverse_quadratic":
        return 1.0 / (1.0 + base ** 2)
    raise ValueError(f"unknown rbf kind {kind!r}; expected gaussian, multiquadric or inverse_quadratic")


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """Vaswani sinusoidal position table (numpy, built once at trace time).

    ``pe[p, 2i] = sin(p / base^(2i/dim))``, ``pe[p, 2i+1] = cos(p / base^(2i/dim))``.

    Returns:
      float32 [length, dim].
    """
    pos = np.arange(length, dtype=np.float64)[:, None]
    i = np.arange(dim, dtype=np.float64)[None, :]
    angle = pos / np.power(base, 2.0 * (i // 2) / dim)
    pe = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(np.float32)


def fractional_encoding_table(dim: int, resolution: int) -> np.ndarray:
    """CrabNet ``FractionalEncoder`` table (base 50, not 10000).

    ``pe[x, k] = sin(x / 50^(2k/dim))`` for even columns k and ``cos(x / 50^(2k/dim))`` for odd
    columns (CrabNet uses the column index k itself in the exponent).

    Args:
      dim: columns (CrabNet uses d_model // 2).
      resolution: rows (CrabNet: 5000).

    Returns:
      float32 [resolution, dim].
    """
    x = np.arange(resolution, dtype=np.float64)[:, None]
    k = np.arange(dim, dtype=np.float64)[None, :]
    angle = x / np.power(50.0, 2.0 * k / dim)
    return np.where(k % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


def fractional_encoding(fractions, dim: int, resolution: int = 5000, log: bool = False):
    """CrabNet fractional encoding of element fractions (table lookup, as in CrabNet).

    Linear variant: index ``round(f * resolution) - 1`` with f clamped below at 1/resolution.
    Log variant (``log=True``): ``f' = min(0.0025 * log2(f)^2, 1)`` then the same lookup.

    Args:
      fractions: float [...] in (0, 1]; entries <= 0 (padding) map to row 0 (CrabNet maps them
        elsewhere; padded elements are masked out downstream, so this never matters).
      dim: encoding width (CrabNet: d_model // 2).
      resolution: table rows.
      log: use the log-fraction variant.

    Returns:
      float32 [..., dim].
    """
    table = jnp.asarray(fractional_encoding_table(dim, resolution))
    x = jnp.asarray(fractions, jnp.float32)
    if log:
        safe = jnp.where(x > 0, x, 1.0)
        x = jnp.where(x > 0, jnp.minimum(0.0025 * jnp.log2(safe) ** 2, 1.0), 0.0)
    x = jnp.maximum(x, 1.0 / resolution)
    idx = jnp.clip(jnp.round(x * resolution).astype(jnp.int32) - 1, 0, resolution - 1)
    return table[idx]
