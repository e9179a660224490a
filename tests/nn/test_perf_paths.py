"""Fast paths kept for CPU throughput: the gated edge block's hand-written backward pass.

Checked against a float64 NumPy implementation (values and the full vector-Jacobian product,
derived independently below) and against JAX autodiff of the plain expression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.edge_block import gated_edge_sum, gated_edge_sum_reference


def _case(seed=0, n=7, e=23, a=3, scale=3.0):
    rng = np.random.default_rng(seed)
    f32 = lambda *s: (scale * rng.normal(size=s)).astype(np.float32)  # noqa: E731
    P, Q, U = f32(n, 2 * a), f32(n, 2 * a), f32(e, 2 * a)
    gamma, beta = (1 + 0.3 * rng.normal(size=2 * a)).astype(np.float32), (0.2 * rng.normal(size=2 * a)).astype(np.float32)
    senders = np.sort(rng.integers(0, n, e)).astype(np.int32)
    receivers = rng.integers(0, n, e).astype(np.int32)
    mask = rng.uniform(size=e) > 0.2
    dout = rng.normal(size=(n, a)).astype(np.float32)
    return (P, Q, U, gamma, beta, senders, receivers, mask), dout


def _np_block_and_vjp(P, Q, U, gamma, beta, s, r, mask, dout, layer_norm):
    """Forward and VJP wrt (P, Q, U, gamma, beta) in float64, written from the maths."""
    P, Q, U, gamma, beta, dout = (x.astype(np.float64) for x in (P, Q, U, gamma, beta, dout))
    a = P.shape[1] // 2
    g = P[s] + Q[r] + U
    if layer_norm:
        mu = g.mean(1, keepdims=True)
        var = ((g - mu) ** 2).mean(1, keepdims=True)
        xhat = (g - mu) / np.sqrt(var + 1e-5)
        y = xhat * gamma + beta
    else:
        y = g
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    f, c = y[:, :a], y[:, a:]
    msg = np.where(mask[:, None], sig(f) * np.logaddexp(c, 0), 0.0)
    out = np.zeros((P.shape[0], a))
    np.add.at(out, s, msg)
    dm = np.where(mask[:, None], dout[s], 0.0)
    dy = np.concatenate([dm * np.logaddexp(c, 0) * sig(f) * (1 - sig(f)), dm * sig(f) * sig(c)], 1)
    if layer_norm:
        dgamma, dbeta = (dy * xhat).sum(0), dy.sum(0)
        dx = dy * gamma
        d = g.shape[1]
        # d xhat / d g for one row: (I - 1/d - xhat xhat^T / d) / sqrt(var + eps)
        dg = (dx - dx.mean(1, keepdims=True) - xhat * (dx * xhat).mean(1, keepdims=True)) / np.sqrt(var + 1e-5)
        assert d == 2 * a
    else:
        dgamma, dbeta, dg = np.zeros_like(gamma), np.zeros_like(beta), dy
    dP, dQ = np.zeros_like(P), np.zeros_like(Q)
    np.add.at(dP, s, dg)
    np.add.at(dQ, r, dg)
    return out, (dP, dQ, dg, dgamma, dbeta)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_edge_block_value_and_vjp_match_numpy(layer_norm):
    args, dout = _case()
    out, vjp = jax.vjp(lambda *p: gated_edge_sum(*p, *args[5:], layer_norm), *map(jnp.asarray, args[:5]))
    grads = vjp(jnp.asarray(dout))
    ref_out, ref_grads = _np_block_and_vjp(*args, dout, layer_norm)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("P", "Q", "U", "gamma", "beta"), grads, ref_grads):
        if not layer_norm and name in ("gamma", "beta"):
            continue  # unused without the norm (zero cotangent)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=name)


def test_edge_block_gradients_equal_autodiff_under_jit():
    args, dout = _case(seed=3, n=11, e=40, a=4)
    w = jnp.asarray(dout)
    loss = lambda fn: (lambda *p: jnp.sum(w * fn(*p, *args[5:], True)))  # noqa: E731
    fast = jax.jit(jax.grad(loss(gated_edge_sum), argnums=(0, 1, 2, 3, 4)))(*map(jnp.asarray, args[:5]))
    plain = jax.jit(jax.grad(loss(gated_edge_sum_reference), argnums=(0, 1, 2, 3, 4)))(*map(jnp.asarray, args[:5]))
    for got, want in zip(fast, plain):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_masked_edges_contribute_nothing():
    """Changing the pre-activations of masked edges changes neither the output nor any gradient."""
    args, dout = _case(seed=5)
    P, Q, U, gamma, beta, s, r, mask = args
    U2 = U.copy()
    U2[~mask] = 1e3
    f = lambda U: gated_edge_sum(*map(jnp.asarray, (P, Q, U, gamma, beta)), s, r, mask, True)  # noqa: E731
    o1, v1 = jax.vjp(f, jnp.asarray(U))
    o2, v2 = jax.vjp(f, jnp.asarray(U2))
    np.testing.assert_array_equal(o1, o2)
    (g1,), (g2,) = v1(jnp.asarray(dout)), v2(jnp.asarray(dout))
    np.testing.assert_array_equal(g1[mask], g2[mask])
    assert np.all(np.asarray(g1)[~mask] == 0) and np.all(np.asarray(g2)[~mask] == 0)
