"""Distance / fraction expansions and activations against plain-NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.nn import activations
from mmjax.nn.basis import (fractional_encoding, fractional_encoding_table, gaussian_expansion, rbf_expansion,
                            sinusoidal_positions)


def test_gaussian_expansion_matches_cgcnn_formula():
    d = np.array([0.0, 1.234, 4.0, 7.99, 8.5], np.float32)
    filt = np.arange(0.0, 8.0 + 0.2, 0.2)  # CGCNN GaussianDistance(dmin=0, dmax=8, step=0.2)
    assert len(filt) == 41
    ref = np.exp(-((d[:, None] - filt[None, :]) ** 2) / 0.2 ** 2)
    got = np.asarray(gaussian_expansion(d))
    assert got.shape == (5, 41)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert np.argmax(got[2]) == 20  # d = 4.0 peaks on centre 20 (4.0 A)


def test_rbf_expansion_gamma_is_inverse_spacing():
    x = np.array([-3.7, 0.0, 1.1], np.float32)
    centers = np.linspace(-4, 4, 9)
    gamma = 1.0 / 1.0  # spacing 1
    base = gamma * (x[:, None] - centers)
    np.testing.assert_allclose(rbf_expansion(x, -4, 4, 9), np.exp(-base ** 2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rbf_expansion(x, -4, 4, 9, "multiquadric"), np.sqrt(1 + base ** 2), rtol=1e-5)


def _crabnet_encoder_numpy(frac, d_half, resolution, log):
    """Direct transcription of CrabNet's FractionalEncoder (torch -> numpy)."""
    x = np.linspace(0, resolution - 1, resolution).reshape(resolution, 1)
    fraction = np.tile(np.linspace(0, d_half - 1, d_half).reshape(1, d_half), (resolution, 1))
    pe = np.zeros((resolution, d_half))
    pe[:, 0::2] = np.sin(x / np.power(50, 2 * fraction[:, 0::2] / d_half))
    pe[:, 1::2] = np.cos(x / np.power(50, 2 * fraction[:, 1::2] / d_half))
    v = np.array(frac, np.float64)
    if log:
        v = 0.0025 * np.log2(v) ** 2
        v[v > 1] = 1
    v[v < 1 / resolution] = 1 / resolution
    idx = np.round(v * resolution).astype(int) - 1
    return pe[idx]


def test_fractional_encoding_matches_crabnet():
    frac = np.array([[0.5, 0.25, 0.125, 0.0001], [1.0, 0.7, 0.3, 0.01]], np.float32)
    for log in (False, True):
        ref = _crabnet_encoder_numpy(frac, 8, 200, log)
        got = np.asarray(fractional_encoding(frac, 8, 200, log=log))
        assert got.shape == (2, 4, 8)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    table = fractional_encoding_table(8, 200)
    np.testing.assert_allclose(table[3, 0], np.sin(3.0), rtol=1e-6)  # column 0: x / 50^0


def test_sinusoidal_positions_hand_values():
    pe = sinusoidal_positions(4, 6)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(pe[2, 0], np.sin(2.0), rtol=1e-6)
    np.testing.assert_allclose(pe[2, 3], np.cos(2.0 / 10000 ** (2 / 6)), rtol=1e-6)


def test_fast_activations_match_reference_values_and_gradients():
    x = jnp.linspace(-30.0, 30.0, 101)
    np.testing.assert_allclose(activations.softplus(x), np.logaddexp(np.asarray(x, np.float64), 0.0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(activations.sigmoid(x), 1 / (1 + np.exp(-np.asarray(x, np.float64))), rtol=1e-6, atol=1e-7)
    g = jax.vmap(jax.grad(activations.softplus))(x)
    np.testing.assert_allclose(g, 1 / (1 + np.exp(-np.asarray(x, np.float64))), rtol=1e-6, atol=1e-7)
