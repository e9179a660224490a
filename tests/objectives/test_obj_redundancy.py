"""Barlow Twins (2-D, 3-D, n-D) and VICReg against NumPy loops and hand-computed cases."""

import jax
import numpy as np
import pytest

import objectives_reference as ref
from mmjax.objectives import barlow_twins, barlow_twins_3d, barlow_twins_nd, vicreg
from mmjax.objectives.barlow import barlow_loss_from_correlation

B, D, LAMBD = 9, 4, 0.3
MASK = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], bool)


def _z(seed, n=B, d=D):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_barlow_2d_matches_numpy_and_mask_equals_deleting_rows():
    z1, z2 = _z(0), _z(1)
    f = jax.jit(barlow_twins)
    np.testing.assert_allclose(f(z1, z2, LAMBD), ref.barlow_twins(z1, z2, LAMBD), rtol=1e-5)
    np.testing.assert_allclose(f(z1, z2, LAMBD, MASK), ref.barlow_twins(z1, z2, LAMBD, MASK),
                               rtol=1e-5)
    # masked rows may hold anything (here huge values): they must not change the result
    z1_bad = z1.copy()
    z1_bad[~MASK] = 1e6
    np.testing.assert_allclose(f(z1_bad, z2, LAMBD, MASK), f(z1[MASK], z2[MASK], LAMBD, None),
                               rtol=1e-5)


def test_barlow_2d_identical_views_hit_the_target():
    # z1 = z2 with decorrelated (orthogonal, zero-mean) columns: C = I, loss exactly 0.
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], np.float32)
    z = h[:, 1:] * np.array([1.0, 5.0, 0.2], np.float32)  # column scale must not matter
    np.testing.assert_allclose(barlow_twins(z, z, LAMBD), 0.0, atol=1e-6)
    # z2 = -z1: C = -I, loss = sum (1 - (-1))^2 = 4 D
    np.testing.assert_allclose(barlow_twins(z, -z, LAMBD), 4.0 * 3, rtol=1e-6)


@pytest.mark.parametrize("half_targets", [True, False])
def test_barlow_3d_matches_numpy_loops(half_targets):
    z1, z2, z3 = _z(2), _z(3), _z(4)
    got = jax.jit(barlow_twins_3d, static_argnames="half_targets")(
        z1, z2, z3, LAMBD, half_targets=half_targets, mask=MASK)
    np.testing.assert_allclose(got, ref.barlow_twins_3d(z1, z2, z3, LAMBD, half_targets, MASK),
                               rtol=1e-5)


def test_barlow_nd_and_grads():
    z1, z2, z3 = _z(5), _z(6), _z(7)
    np.testing.assert_allclose(jax.jit(barlow_twins_nd)([z1, z2, z3], LAMBD, MASK),
                               ref.barlow_twins_3d(z1, z2, z3, LAMBD, False, MASK), rtol=1e-5)
    value_and_grads = jax.jit(jax.value_and_grad(barlow_twins, argnums=(0, 1)))
    g = np.asarray(value_and_grads(z1, z2, LAMBD, MASK)[1][0], np.float64)
    num, eps = np.zeros_like(g), 1e-5
    for idx in np.ndindex(*g.shape):
        up, dn = z1.astype(np.float64), z1.astype(np.float64)
        up[idx] += eps
        dn[idx] -= eps
        num[idx] = (ref.barlow_twins(up, z2, LAMBD, MASK) - ref.barlow_twins(dn, z2, LAMBD, MASK)) / (2 * eps)
    np.testing.assert_allclose(g, num, atol=5e-4)
    assert np.all(g[~MASK] == 0.0)
    val, grads = value_and_grads(z1, z2, LAMBD, np.zeros(B, bool))
    assert float(val) == 0.0 and all(np.all(np.isfinite(x)) for x in grads)
    with pytest.raises(ValueError, match="half_targets is defined for 3"):
        barlow_loss_from_correlation(np.eye(D, dtype=np.float32), 0.1, half_targets=True)


@pytest.mark.parametrize("use_std", [False, True])
def test_vicreg_matches_numpy(use_std):
    z, z2 = _z(8), _z(9)
    f = jax.jit(vicreg, static_argnames="use_std")
    kw = dict(gamma=1.5, lambda_var=2.0, lambda_cov=0.5, lambda_inv=3.0)
    np.testing.assert_allclose(f(z, mask=MASK, use_std=use_std, **kw),
                               ref.vicreg(z, None, mask=MASK, use_std=use_std, **kw), rtol=1e-5)
    np.testing.assert_allclose(f(z, z_other=z2, mask=MASK, use_std=use_std, **kw),
                               ref.vicreg(z, z2, mask=MASK, use_std=use_std, **kw), rtol=1e-5)


def test_vicreg_hand_case():
    # columns with variance 4 and 1/3 (ddof=1), uncorrelated: variance hinge = max(0, 1 - 1/3),
    # covariance 0.
    z = np.array([[2, 1], [-2, 1], [2, -1], [-2, -1]], np.float32) * np.array([1.0, 0.5], np.float32)
    np.testing.assert_allclose(vicreg(z, 1.0), 1 - 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(vicreg(z, 2.0, 0.5), 0.5 * (2 - 1 / 3), rtol=1e-6)
    assert float(vicreg(z, mask=np.array([1, 0, 0, 0], bool))) == 0.0  # < 2 valid rows
