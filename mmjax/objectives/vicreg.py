"""VICReg regulariser as in the X-MoPA appendix (Eq. 5), plus the optional invariance term (O5).

For embeddings ``Z`` ``[B, D]`` (valid rows only, unbiased batch statistics, ddof = 1)::

    variance   = sum_d max(0, gamma - Var(Z_:,d))          (X-MoPA Eq. 5)
                 or sum_d max(0, gamma - sqrt(Var + 1e-4))  with use_std=True (Bardes et al. 2021)
    covariance = sum_{i != j} Cov(Z_:,i, Z_:,j)^2
    invariance = mean over valid rows of mean_d (Z - Z')^2  (only when a second branch Z' is given)

    vicreg = lambda_inv * invariance + mean over branches (lambda_var * variance + lambda_cov * covariance)

X-MoPA states the sums of Eq. 5 but no weights; the defaults here are 1.0 and the system config
sets them (the paper's total is ``L_X-MoPA + lambda * L_VIC`` with ``lambda << 1``). The
statistics are row sums, so ``mmjax.objectives.sharded.vicreg_sharded`` psums them.
Needs at least 2 valid rows; otherwise returns 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.objectives._common import as_mask, at_least_float32, check_rows

STD_EPS = 1e-4


def variance_covariance_terms(cov: jax.Array, gamma, use_std: bool):
    """(variance hinge, off-diagonal covariance penalty) from a ``[D, D]`` covariance matrix."""
    var = jnp.diagonal(cov)
    spread = jnp.sqrt(var + STD_EPS) if use_std else var
    variance = jnp.sum(jax.nn.relu(gamma - spread))
    off = cov - jnp.diag(var)
    return variance, jnp.sum(jnp.square(off))


def covariance(z: jax.Array, mask: jax.Array) -> jax.Array:
    """Unbiased covariance ``[D, D]`` over valid rows (``/(n - 1)``, n >= 2 assumed by callers)."""
    z = at_least_float32(z)
    m = mask[:, None]
    n = jnp.sum(mask)
    mean = jnp.sum(jnp.where(m, z, 0.0), axis=0) / jnp.maximum(n, 1)
    zc = jnp.where(m, z - mean, 0.0)
    return zc.T @ zc / jnp.maximum(n - 1, 1)


def vicreg(
    z: jax.Array,
    gamma=1.0,
    lambda_var=1.0,
    lambda_cov=1.0,
    *,
    z_other: jax.Array | None = None,
    lambda_inv=1.0,
    mask: jax.Array | None = None,
    use_std: bool = False,
) -> jax.Array:
    """VICReg on ``z`` ``[B, D]`` (and keyword ``z_other`` ``[B, D]`` for the invariance term); 0-d.

    ``mask`` bool ``[B]`` drops rows (as if deleted). ``use_std`` switches to the original
    VICReg standard-deviation hinge.
    """
    branches = [z] if z_other is None else [z, z_other]
    n = check_rows("vicreg", *branches)
    mask = as_mask(mask, n)
    reg = 0.0
    for branch in branches:
        var_term, cov_term = variance_covariance_terms(covariance(branch, mask), gamma, use_std)
        reg = reg + lambda_var * var_term + lambda_cov * cov_term
    loss = reg / len(branches)
    if z_other is not None:
        per_row = jnp.mean(jnp.square(at_least_float32(z) - z_other), axis=-1)
        inv = jnp.sum(jnp.where(mask, per_row, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
        loss = loss + lambda_inv * inv
    return jnp.where(jnp.sum(mask) >= 2, loss, 0.0)
