"""Fast paths kept for CPU throughput: the CGCNN gate's hand-written backward pass vs NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.activations import sigmoid_softplus_gate


def _np_gate_and_grad(g, dm):
    """Gate sigmoid(f) * softplus(c) of g = [f, c] and its vector-Jacobian product, float64."""
    a = g.shape[-1] // 2
    f, c = g[..., :a], g[..., a:]
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    sp = np.logaddexp(c, 0.0)
    out = sig(f) * sp
    d_f = dm * sp * sig(f) * (1.0 - sig(f))
    d_c = dm * sig(f) * sig(c)
    return out, np.concatenate([d_f, d_c], axis=-1)


def test_gate_value_and_gradient_match_numpy():
    rng = np.random.default_rng(0)
    g = (4.0 * rng.normal(size=(3, 7, 10))).astype(np.float32)   # [..., 2A], A = 5, wide range
    dm = rng.normal(size=(3, 7, 5)).astype(np.float32)
    out, vjp = jax.vjp(sigmoid_softplus_gate, jnp.asarray(g))
    (dg,) = vjp(jnp.asarray(dm))
    ref_out, ref_dg = _np_gate_and_grad(g.astype(np.float64), dm.astype(np.float64))
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dg, ref_dg, rtol=1e-4, atol=1e-6)


def test_gate_gradient_equals_autodiff_of_sliced_form():
    """Same gradient as differentiating the plain slice-and-multiply expression (under jit)."""
    rng = np.random.default_rng(1)
    g = jnp.asarray(rng.normal(size=(16, 8)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(16, 4)).astype(np.float32))
    plain = lambda g: jnp.sum(w * jax.nn.sigmoid(g[:, :4]) * jax.nn.softplus(g[:, 4:]))  # noqa: E731
    fast = lambda g: jnp.sum(w * sigmoid_softplus_gate(g))  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(fast))(g), jax.jit(jax.grad(plain))(g), rtol=1e-5, atol=1e-6)


def test_gate_rejects_odd_width():
    with pytest.raises(ValueError, match="even last axis"):
        jax.grad(lambda g: sigmoid_softplus_gate(g).sum())(jnp.ones((2, 5)))
