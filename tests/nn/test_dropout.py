"""mmjax.nn.dropout: the 16-bit keep mask against a NumPy reading of the same random bits, its
drop rate, scaling and gradient, and the module's switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.dropout import Dropout, drop_threshold, dropout, keep_mask


def test_threshold_hand_computed_and_range():
    assert drop_threshold(0.1) == 6554 and drop_threshold(0.0) == 0 and drop_threshold(1.0) == 65536
    assert drop_threshold(0.5) == 32768
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout rate"):
            drop_threshold(bad)


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 7), (9,)])
def test_mask_is_the_low_and_high_halves_of_the_bits(shape):
    rng = jax.random.PRNGKey(3)
    half = (shape[-1] + 1) // 2
    bits = np.asarray(jax.random.bits(rng, shape[:-1] + (half,), jnp.uint32))
    u = np.stack([bits & 0xFFFF, bits >> 16], axis=-1).reshape(shape[:-1] + (2 * half,))[..., :shape[-1]]
    np.testing.assert_array_equal(np.asarray(keep_mask(rng, 0.3, shape)), u >= drop_threshold(0.3))


def test_drop_rate_and_unbiased_scaling():
    rng = jax.random.PRNGKey(0)
    x = jnp.full((512, 2048), 2.0)
    out = np.asarray(dropout(rng, x, 0.1))
    dropped = out == 0.0
    p = drop_threshold(0.1) / 65536
    n = out.size
    assert abs(dropped.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[~dropped], 2.0 / (1 - p), rtol=1e-6)
    assert abs(out.mean() - 2.0) < 0.01  # E[out] = x
    # a different key gives a different mask; the same key the same one
    assert not np.array_equal(out, np.asarray(dropout(jax.random.PRNGKey(1), x, 0.1)))
    np.testing.assert_array_equal(out, np.asarray(dropout(rng, x, 0.1)))


def test_bf16_scaling_is_rounded_once_per_value():
    """bf16 kept values are bf16(x / keep) computed in float32 (not x * bf16(1 / keep), which biases
    every kept value by the same -0.16 % at rate 0.1); float32 values are x / keep (to XLA's division)."""
    rng = jax.random.PRNGKey(5)
    x = jax.random.uniform(jax.random.PRNGKey(6), (1024, 1024), minval=1.0, maxval=2.0).astype(jnp.bfloat16)
    out = np.asarray(dropout(rng, x, 0.1).astype(jnp.float32))
    keep = np.asarray(keep_mask(rng, 0.1, x.shape))
    k = 1 - drop_threshold(0.1) / 65536
    expect = np.asarray((x.astype(jnp.float32) / k).astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(out, np.where(keep, expect, 0.0))
    biased = np.asarray((x * jnp.asarray(1 / k, jnp.bfloat16)).astype(jnp.float32))[keep]
    xs = np.asarray(x.astype(jnp.float32))[keep]
    assert abs(biased.sum() / xs.sum() * k - 1) > 1e-3  # what the rounded scale would give
    assert abs(out[keep].sum() / xs.sum() * k - 1) < 2e-4  # rounding once per value: no bias
    x32 = jnp.asarray(np.linspace(-3, 3, 4096, dtype=np.float32))
    np.testing.assert_allclose(np.asarray(dropout(rng, x32, 0.1)),
                               np.where(np.asarray(keep_mask(rng, 0.1, (4096,))), np.asarray(x32) / np.float32(k), 0),
                               rtol=2e-7, atol=0)


def test_gradient_is_mask_over_keep_and_edge_rates():
    rng, x = jax.random.PRNGKey(5), jnp.arange(1.0, 13.0).reshape(3, 4)
    g = np.asarray(jax.grad(lambda v: jnp.sum(dropout(rng, v, 0.25)))(x))
    mask = np.asarray(keep_mask(rng, 0.25, x.shape))
    np.testing.assert_allclose(g, mask / (1 - 0.25), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(dropout(rng, x, 0.0)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(dropout(rng, x, 1.0)), np.zeros((3, 4)))


def test_module_switches_and_rng_stream():
    x = jnp.ones((8, 16))
    m = Dropout(0.5)
    assert np.array_equal(np.asarray(m.apply({}, x, deterministic=True)), np.asarray(x))
    assert np.array_equal(np.asarray(Dropout(0.0).apply({}, x, deterministic=False)), np.asarray(x))
    out = np.asarray(m.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)}))
    assert set(np.unique(out)) <= {0.0, 2.0} and 0 < (out == 0).sum() < out.size
    with pytest.raises(Exception):  # no dropout rng given
        m.apply({}, x, deterministic=False)

    class Two(nn.Module):  # two layers draw different masks from the one stream
        @nn.compact
        def __call__(self, x):
            return Dropout(0.5)(x, deterministic=False), Dropout(0.5)(x, deterministic=False)

    a, b = Two().apply({}, x, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.array_equal(np.asarray(a), np.asarray(b))
