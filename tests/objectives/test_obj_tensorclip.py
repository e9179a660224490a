"""TensorCLIP: both variants vs NumPy triple loops; chunked == naive; masks; n-modal form."""

import jax
import numpy as np
import pytest

import objectives_reference as ref
from mmjax.objectives import info_nce, tensor_clip, tensor_clip_nd

B, D, TAU = 5, 4, 0.4
PRESENT = np.array([True, True, False, True, True])
STATIC = ("chunk_size", "variant")
LOSS = jax.jit(tensor_clip, static_argnames=STATIC)
LOSS_AND_GRADS = jax.jit(jax.value_and_grad(tensor_clip, argnums=(0, 1, 2, 3)), static_argnames=STATIC)


def _abc(seed, n=B):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("variant", ["paper", "multimat_code"])
def test_naive_matches_numpy_triple_loop(variant):
    a, b, c = _abc(0)
    f = LOSS
    np.testing.assert_allclose(f(a, b, c, TAU, variant=variant),
                               ref.tensor_clip(a, b, c, TAU, variant=variant), rtol=1e-5)
    np.testing.assert_allclose(f(a, b, c, TAU, PRESENT, variant=variant),
                               ref.tensor_clip(a, b, c, TAU, PRESENT, variant=variant), rtol=1e-5)


def test_chunked_equals_naive_values_and_grads():
    a, b, c = _abc(1, n=7)
    present = np.array([1, 1, 0, 1, 1, 0, 1], bool)
    # chunk 3 and 4 do not divide 7; chunk 1 is the longest scan
    for variant, grad_chunk, value_chunks in (("paper", 3, (1, 4)), ("multimat_code", 4, ())):
        want_val, want_grads = LOSS_AND_GRADS(a, b, c, TAU, present, variant=variant)
        val, grads = LOSS_AND_GRADS(a, b, c, TAU, present, chunk_size=grad_chunk, variant=variant)
        np.testing.assert_allclose(val, want_val, rtol=1e-5)
        for g, w in zip(grads, want_grads):  # a, b, c and the temperature
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        assert np.all(np.asarray(want_grads[0])[~present] == 0.0)
        for chunk in value_chunks:
            np.testing.assert_allclose(LOSS(a, b, c, TAU, present, chunk_size=chunk, variant=variant),
                                       want_val, rtol=1e-5)


def test_mask_equals_deleting_rows_and_all_false_is_zero():
    a, b, c = _abc(2)
    for variant in ("paper", "multimat_code"):
        np.testing.assert_allclose(
            LOSS(a, b, c, TAU, PRESENT, variant=variant),
            LOSS(a[PRESENT], b[PRESENT], c[PRESENT], TAU, np.ones(4, bool), variant=variant),
            rtol=1e-5)
        none = np.zeros(B, bool)
        val, grads = LOSS_AND_GRADS(a, b, c, TAU, none, variant=variant)
        assert float(val) == 0.0
        assert all(np.all(np.asarray(g) == 0.0) for g in grads)
    # the code variant needs three valid rows for a fully mismatched negative
    two = np.array([True, True, False, False, False])
    assert float(LOSS(a, b, c, TAU, two, variant="multimat_code")) == 0.0


def test_paper_variant_one_hot_closed_form():
    # â = b̂ = ĉ = e_i: s_iii = 1/tau and every other entry 0, so each axis gives
    # log(1 + (B^2 - 1) e^{-1/tau}).
    eye = np.eye(B, dtype=np.float32)
    expected = np.log(1 + (B * B - 1) * np.exp(-1 / TAU))
    np.testing.assert_allclose(LOSS(eye, eye, eye, TAU, np.ones(B, bool)), expected, rtol=1e-6)


def test_grad_matches_finite_differences():
    a, b, c = _abc(3, n=4)
    present = np.array([1, 1, 0, 1], bool)
    g = np.asarray(jax.jit(jax.grad(tensor_clip), static_argnames=STATIC)(
        a, b, c, TAU, present, chunk_size=3), np.float64)
    num = np.zeros_like(g)
    eps = 1e-5
    for idx in np.ndindex(*a.shape):
        up, dn = a.astype(np.float64), a.astype(np.float64)
        up[idx] += eps
        dn[idx] -= eps
        num[idx] = (ref.tensor_clip(up, b, c, TAU, present)
                    - ref.tensor_clip(dn, b, c, TAU, present)) / (2 * eps)
    np.testing.assert_allclose(g, num, atol=3e-4)


def test_nd_form_reduces_to_tensor_clip_and_info_nce():
    a, b, c = _abc(4)
    np.testing.assert_allclose(jax.jit(tensor_clip_nd)([a, b, c], TAU, PRESENT),
                               LOSS(a, b, c, TAU, PRESENT), rtol=1e-5)
    np.testing.assert_allclose(tensor_clip_nd([a, b], TAU, PRESENT), info_nce(a, b, TAU, PRESENT),
                               rtol=1e-5)


def test_bad_arguments_are_named():
    a, b, c = _abc(5)
    with pytest.raises(ValueError, match="unknown TensorCLIP variant"):
        tensor_clip(a, b, c, TAU, variant="nope")
    with pytest.raises(ValueError, match="batch sizes differ"):
        tensor_clip(a, b[:3], c, TAU)
