"""Masked BatchNorm over the rows of a padded graph batch (CGCNN's ``bn1`` / ``bn2``).

PyTorch's ``BatchNorm1d`` semantics (what the reference CGCNN uses), restricted to real rows:

* training: ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with ``mean`` / ``var`` (biased)
  over the real rows of the **whole** batch; the running statistics move by ``momentum``:
  ``running_mean <- (1 - m) running_mean + m mean``,
  ``running_var  <- (1 - m) running_var  + m var * n / (n - 1)`` (unbiased, as torch);
* evaluation: the same affine map with the running statistics (initially 0 and 1).

Padding rows (``mask == False``) enter no statistic, so padding never changes a result.
Graph encoders run per device micro-batch under ``jax.vmap(..., axis_name=GRAPH_BATCH_AXIS)``
(`mmjax.systems.common.apply_graph_encoder`); the sums are ``psum``-ed over that axis, so the
statistics are those of the global batch whatever the device count (sharded == unsharded).
Outside such a vmap the statistics are those of the rows given.

The statistics live in the Flax ``"batch_stats"`` collection (``mean``, ``var``: float32 [D]).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

GRAPH_BATCH_AXIS = "graph_batch"
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _psum(x):
    try:
        return jax.lax.psum(x, GRAPH_BATCH_AXIS)
    except NameError:  # not under the graph-batch vmap: the rows given are the batch
        return x


def masked_moments(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(mean [D], biased var [D], n [])`` of the rows of ``x`` [R, D] where ``mask`` [R] is True
    (over the global batch under the graph-batch vmap); float32, two passes."""
    xf = jnp.where(mask[:, None], x.astype(jnp.float32), 0.0)
    n = _psum(jnp.sum(mask.astype(jnp.float32)))
    mean = _psum(jnp.sum(xf, axis=0)) / jnp.maximum(n, 1.0)
    xc = jnp.where(mask[:, None], xf - mean, 0.0)
    var = _psum(jnp.sum(xc * xc, axis=0)) / jnp.maximum(n, 1.0)
    return mean, var, n


class BatchNormVars(nn.Module):
    """The variables of one BatchNorm: parameters ``scale`` / ``bias`` and the ``batch_stats``
    ``mean`` / ``var`` (float32 [features], initially 0 and 1).

    ``__call__(moments=None) -> (scale, bias, running_mean, running_var)``; with the batch's
    ``moments = (mean, biased var, n)`` and ``batch_stats`` mutable, the running statistics move
    first: ``r_mean <- (1 - m) r_mean + m mean``, ``r_var <- (1 - m) r_var + m var n / (n - 1)``.
    Call the same instance twice (once for the parameters, once with the moments) when the
    moments are computed from the parameters' output (`mmjax.nn.edge_block.bn_gated_edge_sum`)."""

    features: int
    momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, moments=None):
        d = self.features
        scale = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
        r_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((d,), jnp.float32))
        r_var = self.variable("batch_stats", "var", lambda: jnp.ones((d,), jnp.float32))
        if moments is not None and self.is_mutable_collection("batch_stats") and not self.is_initializing():
            mean, var, n = moments
            m = self.momentum
            r_mean.value = (1.0 - m) * r_mean.value + m * jax.lax.stop_gradient(mean)
            r_var.value = (1.0 - m) * r_var.value + m * jax.lax.stop_gradient(var * n / jnp.maximum(n - 1.0, 1.0))
        return scale, bias, r_mean.value, r_var.value


def normalise_affine(scale, bias, mean, var, eps: float = BN_EPS) -> tuple[jax.Array, jax.Array]:
    """``(a, c)`` with ``(x - mean) / sqrt(var + eps) * scale + bias = x * a + c`` (float32 [D])."""
    a = scale * jax.lax.rsqrt(var + eps)
    return a, bias - mean * a


def apply_affine(x: jax.Array, a: jax.Array, c) -> jax.Array:
    """``x * a + c`` in float32, cast back to ``x``'s dtype."""
    return (x.astype(jnp.float32) * a + c).astype(x.dtype)
