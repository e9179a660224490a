"""The gated edge block of CGCNN / CGConv with a hand-written backward pass (XLA:CPU speed).

For every edge ``e = (i -> j)`` (``i = senders[e]``, the centre; ``j = receivers[e]``)::

    g_e   = P[i] + Q[j] + U[e]                          [E, 2A]   pre-activation
    y_e   = LayerNorm(g_e) * gamma + beta  (or y = g)   [E, 2A]
    m_e   = sigmoid(y_e[:A]) * softplus(y_e[A:]) * edge_mask[e]
    out_i = sum over edges with senders == i of m_e    [N, A]

``P = v W_i``, ``Q = v W_j`` (node projections) and ``U = u W_u + b`` (edge projection) are
computed by the caller, so their gradients flow through ordinary matmuls.

Why a custom VJP: autodiff of the same expression makes XLA:CPU materialise several
edge-sized ([E, 2A]) intermediates and broadcasts in the backward pass (LayerNorm statistics,
the two halves of the gate, pads of slices); the hand-written backward keeps only
``xhat`` [E, 2A], ``rstd`` [E, 1] and the two gate factors [E, A] from the forward pass
(only ``sigmoid(core)`` is evaluated again). In an isolated micro-benchmark on a busy machine
this cut one convolution's forward+backward CPU time; in the full CGCNN training step on a quiet
machine the difference was within noise (see README, "Encoders"). Values and
gradients equal autodiff of the plain expression (tests/nn/test_edge_block.py).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from mmjax.nn.activations import sigmoid, softplus
from mmjax.nn.batch_norm import _psum, masked_moments

LN_EPS = 1e-5


def gather_rows(x, index):
    """``x[index]`` along axis 0 for indices known to be in range ([E] -> [E, ...]).

    Graph indices always point at a real node or the padding node, so bounds handling is
    not needed: ``mode="clip"`` lowers to a plain gather that XLA:CPU runs ~8x faster than
    the default fill-out-of-bounds form (same values and gradients for in-range indices)."""
    return jnp.take(x, index, axis=0, mode="clip")


def _segment_sum(x, index, n):
    return jax.ops.segment_sum(x, index, num_segments=n)


def _pre_activation(P, Q, U, senders, receivers):
    return gather_rows(P, senders) + gather_rows(Q, receivers) + U


def _normalise(g):
    """(xhat, rstd) of a row LayerNorm, statistics in float32."""
    gf = g.astype(jnp.float32)
    xc = gf - jnp.mean(gf, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + LN_EPS)
    return xc * rstd, rstd


def _gate(y, a: int):
    s = sigmoid(y[..., :a])
    return s, y[..., a:]


@partial(jax.custom_vjp, nondiff_argnums=(8,))
def gated_edge_sum(P, Q, U, gamma, beta, senders, receivers, edge_mask, layer_norm: bool = True):
    """The block above. Shapes: P, Q [N, 2A]; U [E, 2A]; gamma, beta [2A] (ignored when
    ``layer_norm`` is False); senders, receivers int32 [E]; edge_mask bool [E] -> [N, A].

    Output dtype is P's dtype; LayerNorm statistics are float32."""
    return _forward(P, Q, U, gamma, beta, senders, receivers, edge_mask, layer_norm)[0]


def _forward(P, Q, U, gamma, beta, senders, receivers, edge_mask, layer_norm):
    dtype = P.dtype
    a = P.shape[-1] // 2
    g = _pre_activation(P, Q, U, senders, receivers)
    if layer_norm:
        xhat, rstd = _normalise(g)
        y = (xhat * gamma.astype(jnp.float32) + beta.astype(jnp.float32)).astype(dtype)
        saved = (xhat.astype(dtype), rstd)
    else:
        y, saved = g, (g, None)
    s, core = _gate(y, a)
    sp = softplus(core)
    msg = jnp.where(edge_mask[:, None], s * sp, 0.0).astype(dtype)
    out = _segment_sum(msg, senders, P.shape[0])
    # The gate halves are kept for the backward pass (no transcendental recomputed there
    # except sigmoid(core)); xhat / y is kept for the LayerNorm backward and for `core`.
    return out, (saved, s, sp, gamma, beta, senders, receivers, edge_mask)


def _bwd(layer_norm, res, dout):
    (saved, s, sp, gamma, beta, senders, receivers, edge_mask) = res
    x, rstd = saved
    dtype = dout.dtype
    a = dout.shape[-1]
    n = dout.shape[0]
    if layer_norm:
        gf, bf = gamma.astype(jnp.float32), beta.astype(jnp.float32)
        core = (x[..., a:].astype(jnp.float32) * gf[a:] + bf[a:]).astype(dtype)
    else:
        core = x[..., a:]
    dm = jnp.where(edge_mask[:, None], gather_rows(dout, senders), 0.0)
    dy = jnp.concatenate([dm * sp * s * (1.0 - s), dm * s * sigmoid(core)], axis=-1)
    if layer_norm:
        dyf = dy.astype(jnp.float32)
        xf = x.astype(jnp.float32)
        dgamma = jnp.sum(dyf * xf, axis=0).astype(gamma.dtype)
        dbeta = jnp.sum(dyf, axis=0).astype(beta.dtype)
        dx = dyf * gf
        dg = rstd * (dx - jnp.mean(dx, axis=-1, keepdims=True)
                     - xf * jnp.mean(dx * xf, axis=-1, keepdims=True))
        dg = dg.astype(dtype)
    else:
        dg = dy
        dgamma, dbeta = jnp.zeros_like(gamma), jnp.zeros_like(beta)
    dP = _segment_sum(dg, senders, n)
    dQ = _segment_sum(dg, receivers, n)
    return dP, dQ, dg, dgamma, dbeta, None, None, None


gated_edge_sum.defvjp(_forward, _bwd)


def gated_edge_sum_reference(P, Q, U, gamma, beta, senders, receivers, edge_mask, layer_norm: bool = True):
    """Plain autodiff version of `gated_edge_sum` (tests, and a readable definition)."""
    a = P.shape[-1] // 2
    g = _pre_activation(P, Q, U, senders, receivers)
    if layer_norm:
        xhat, _ = _normalise(g)
        g = (xhat * gamma + beta).astype(P.dtype)
    msg = jnp.where(edge_mask[:, None], sigmoid(g[..., :a]) * softplus(g[..., a:]), 0.0)
    return _segment_sum(msg.astype(P.dtype), senders, P.shape[0])


# --------------------------------------------------------------------------------------------
# the same block with BatchNorm on the batch statistics (CGCNN's bn1, training mode)


@partial(jax.custom_vjp, nondiff_argnums=(8,))
def bn_gated_edge_sum(P, Q, U, scale, bias, senders, receivers, edge_mask, eps: float = 1e-5):
    """``g = P[i] + Q[j] + U``; BatchNorm of ``g`` over the real edges of the whole batch
    (``mmjax.nn.batch_norm.masked_moments``: psum over the graph-batch vmap axis), ``* scale +
    bias``; gate; sum onto the centre atoms. Shapes as `gated_edge_sum` (scale, bias [2A]).

    Returns ``(out [N, A], mean [2A], biased var [2A], n [])`` — the batch statistics for the
    running averages. The backward pass is BatchNorm's closed form through the global
    statistics, so the edge tensors are gathered and scattered once (autodiff of the plain
    expression scatters the statistics' gradient separately: ~2x the step time on XLA:CPU)."""
    return _bn_forward(P, Q, U, scale, bias, senders, receivers, edge_mask, eps)[0]


def _bn_forward(P, Q, U, scale, bias, senders, receivers, edge_mask, eps):
    dtype = P.dtype
    a = P.shape[-1] // 2
    g = _pre_activation(P, Q, U, senders, receivers)
    mean, var, n = masked_moments(g, edge_mask)
    rstd = jax.lax.rsqrt(var + eps)
    xhat = jnp.where(edge_mask[:, None], (g.astype(jnp.float32) - mean) * rstd, 0.0)
    y = (xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)
    s, core = _gate(y, a)
    sp = softplus(core)
    msg = jnp.where(edge_mask[:, None], s * sp, 0.0).astype(dtype)
    out = _segment_sum(msg, senders, P.shape[0])
    return (out, mean, var, n), (xhat.astype(dtype), rstd, n, s, sp, scale, bias, senders, receivers, edge_mask)


def _bn_bwd(eps, res, cotangents):
    dout, dmean, dvar, _ = cotangents
    xhat, rstd, n, s, sp, scale, bias, senders, receivers, edge_mask = res
    dtype, a, n_nodes = dout.dtype, dout.shape[-1], dout.shape[0]
    sf, bf = scale.astype(jnp.float32), bias.astype(jnp.float32)
    xf = xhat.astype(jnp.float32)
    core = (xf[..., a:] * sf[a:] + bf[a:]).astype(dtype)
    dm = jnp.where(edge_mask[:, None], gather_rows(dout, senders), 0.0)
    dy = jnp.concatenate([dm * sp * s * (1.0 - s), dm * s * sigmoid(core)], axis=-1).astype(jnp.float32)
    dy = jnp.where(edge_mask[:, None], dy, 0.0)
    dscale, dbias = jnp.sum(dy * xf, axis=0), jnp.sum(dy, axis=0)  # this slice's share (vmap sums them)
    dxhat = dy * sf
    inv_n = 1.0 / jnp.maximum(n, 1.0)
    # mean / var come out of a psum, so under the graph-batch vmap they are not batched and JAX
    # hands this rule their cotangents already summed over the slices: no psum here
    mean_dx = _psum(jnp.sum(dxhat, axis=0)) * inv_n
    mean_dxx = _psum(jnp.sum(dxhat * xf, axis=0)) * inv_n
    # d var / d g_e = 2 (g_e - mean) / n = 2 xhat_e / (rstd n); d mean / d g_e = 1 / n
    dg = rstd * (dxhat - mean_dx - xf * mean_dxx) + inv_n * (dmean + 2.0 * dvar * xf / rstd)
    dg = jnp.where(edge_mask[:, None], dg, 0.0).astype(dtype)
    dP = _segment_sum(dg, senders, n_nodes)
    dQ = _segment_sum(dg, receivers, n_nodes)
    return dP, dQ, dg, dscale.astype(scale.dtype), dbias.astype(bias.dtype), None, None, None


bn_gated_edge_sum.defvjp(_bn_forward, _bn_bwd)


def bn_gated_edge_sum_reference(P, Q, U, scale, bias, senders, receivers, edge_mask, eps: float = 1e-5):
    """Plain autodiff version of `bn_gated_edge_sum` (tests, and a readable definition)."""
    a = P.shape[-1] // 2
    g = _pre_activation(P, Q, U, senders, receivers)
    mean, var, n = masked_moments(g, edge_mask)
    y = ((g.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(P.dtype)
    msg = jnp.where(edge_mask[:, None], sigmoid(y[..., :a]) * softplus(y[..., a:]), 0.0)
    return _segment_sum(msg.astype(P.dtype), senders, P.shape[0]), mean, var, n
