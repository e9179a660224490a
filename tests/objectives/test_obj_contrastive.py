"""InfoNCE / AllPairsCLIP / AnchoredCLIP against the NumPy reference and hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import objectives_reference as ref
from mmjax.objectives import (
    LearnableTemperature,
    all_pairs_clip,
    anchored_clip,
    info_nce,
    temperature_from_log,
)

B, D = 6, 4
MASK = np.array([True, False, True, True, False, True])


def _emb(seed, n=B, d=D):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_info_nce_matches_numpy_with_and_without_mask():
    a, b = _emb(0), _emb(1)
    loss = jax.jit(info_nce)
    np.testing.assert_allclose(loss(a, b, 0.3), ref.info_nce(a, b, 0.3), rtol=1e-5)
    np.testing.assert_allclose(loss(a, b, 0.3, MASK), ref.info_nce(a, b, 0.3, MASK), rtol=1e-5)


def test_info_nce_one_hot_closed_form():
    # â = b̂ = I: diagonal logit 1/tau, B-1 zeros -> log(1 + (B-1) e^{-1/tau}) per row and column.
    tau = 0.25
    eye = np.eye(B, D + 2, dtype=np.float32) * 3.0  # scale must not matter
    expected = math.log(1 + (B - 1) * math.exp(-1 / tau))
    np.testing.assert_allclose(info_nce(eye, eye, tau), expected, rtol=1e-6)


def test_info_nce_mask_equals_deleting_rows():
    a, b = _emb(2), _emb(3)
    np.testing.assert_allclose(info_nce(a, b, 0.1, MASK), info_nce(a[MASK], b[MASK], 0.1), rtol=1e-6)


def test_info_nce_all_masked_is_exactly_zero_with_finite_grads():
    a, b = _emb(4), _emb(5)
    none = np.zeros(B, bool)
    val, grads = jax.jit(jax.value_and_grad(info_nce, argnums=(0, 1, 2)))(a, b, 0.1, none)
    assert float(val) == 0.0
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0.0)


def test_info_nce_grad_matches_finite_differences():
    a, b = _emb(6), _emb(7)
    grad = np.asarray(jax.grad(info_nce)(a, b, 0.5, MASK), np.float64)
    a64, eps = a.astype(np.float64), 1e-5
    num = np.zeros_like(a64)
    for idx in np.ndindex(*a64.shape):
        up, dn = a64.copy(), a64.copy()
        up[idx] += eps
        dn[idx] -= eps
        num[idx] = (ref.info_nce(up, b, 0.5, MASK) - ref.info_nce(dn, b, 0.5, MASK)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=2e-4)
    assert np.all(grad[~MASK] == 0.0)  # masked rows get no gradient


def test_traced_learnable_temperature():
    a, b = _emb(8), _emb(9)
    f = jax.jit(lambda log_t: info_nce(a, b, temperature_from_log(log_t), MASK))
    log_t = jnp.log(0.2)
    np.testing.assert_allclose(f(log_t), ref.info_nce(a, b, 0.2, MASK), rtol=1e-5)
    g = jax.grad(f)(log_t)
    eps = 1e-3
    num = (ref.info_nce(a, b, math.exp(math.log(0.2) + eps), MASK)
           - ref.info_nce(a, b, math.exp(math.log(0.2) - eps), MASK)) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-3)
    # clipped outside the bounds, with zero gradient there
    assert float(temperature_from_log(jnp.log(1e-4))) == pytest.approx(0.01)
    assert float(jax.grad(temperature_from_log)(jnp.log(1e-4))) == 0.0
    with pytest.raises(ValueError, match="min_temperature"):
        temperature_from_log(0.0, 1.0, 0.5)


def test_learnable_temperature_module():
    module = LearnableTemperature(init_value=0.07)
    params = module.init(jax.random.key(0))
    np.testing.assert_allclose(params["params"]["log_temperature"], math.log(0.07), rtol=1e-6)
    np.testing.assert_allclose(module.apply(params), 0.07, rtol=1e-6)
    fixed = LearnableTemperature(init_value=0.2, learnable=False)
    assert fixed.init(jax.random.key(0)) == {}


def _three_modalities():
    emb = {"crystal": _emb(10), "dos": _emb(11), "text": _emb(12)}
    present = {
        "crystal": np.ones(B, bool),
        "dos": np.array([1, 1, 0, 1, 0, 1], bool),
        "text": np.array([0, 1, 1, 1, 1, 0], bool),
    }
    return emb, present


def test_all_pairs_and_anchored_match_numpy():
    emb, present = _three_modalities()
    got_all = jax.jit(all_pairs_clip)(emb, present, 0.2)
    pairs_all = [("crystal", "dos"), ("crystal", "text"), ("dos", "text")]
    np.testing.assert_allclose(got_all, ref.pairwise_clip(emb, present, 0.2, pairs_all), rtol=1e-5)
    got = anchored_clip(emb, present, 0.2, anchor="text")
    np.testing.assert_allclose(
        got, ref.pairwise_clip(emb, present, 0.2, [("text", "crystal"), ("text", "dos")]), rtol=1e-5)
    with pytest.raises(ValueError, match="anchor modality 'xrd'"):
        anchored_clip(emb, present, 0.2, anchor="xrd")


def test_pair_without_rows_is_left_out_of_the_mean():
    emb, present = _three_modalities()
    present = dict(present, text=np.zeros(B, bool))  # both text pairs have no valid row
    f = jax.jit(jax.value_and_grad(all_pairs_clip))
    val, grads = f(emb, present, 0.2)
    np.testing.assert_allclose(val, ref.info_nce(emb["crystal"], emb["dos"], 0.2, present["dos"]),
                               rtol=1e-5)
    assert np.all(np.asarray(grads["text"]) == 0.0)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    nothing = {k: np.zeros(B, bool) for k in emb}
    val, grads = f(emb, nothing, 0.2)
    assert float(val) == 0.0 and all(np.all(np.isfinite(g)) for g in grads.values())
