"""Per-graph pooling variants (segment_sum, sorted segment_sum, one-hot matmul): same values and
gradients, padding rows contribute nothing, and the CGCNN switch gives the same encoder output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.nn.graph import POOLING_METHODS, pool_sum, segment_mean_pool


def _case():
    rng = np.random.default_rng(0)
    index = np.sort(rng.integers(0, 5, 40)).astype(np.int32)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    mask = rng.random(40) > 0.2
    return jnp.asarray(x), jnp.asarray(index), jnp.asarray(mask)


@pytest.mark.parametrize("method", POOLING_METHODS)
def test_pool_sum_matches_numpy_and_gradients_agree(method):
    x, index, mask = _case()
    ref = np.zeros((6, 6))
    np.add.at(ref, np.asarray(index), np.asarray(x, np.float64))
    np.testing.assert_allclose(np.asarray(pool_sum(x, index, 6, method)), ref, rtol=1e-5, atol=1e-5)
    f = lambda x_: jnp.sum(segment_mean_pool(x_, mask, index, 6, method)[0] ** 2)  # noqa: E731
    g = jax.grad(f)(x)
    g_ref = jax.grad(lambda x_: jnp.sum(segment_mean_pool(x_, mask, index, 6, "segment")[0] ** 2))(x)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=1e-6)
    assert not np.asarray(g)[~np.asarray(mask)].any()  # masked (padding) nodes get no gradient
    means, has = segment_mean_pool(x, mask, index, 6, method)
    assert means.shape == (5, 6) and has.shape == (5,)


def test_unknown_method_is_rejected():
    x, index, _ = _case()
    with pytest.raises(ValueError, match="unknown pooling method 'dense'"):
        pool_sum(x, index, 6, "dense")


def test_cgcnn_pooling_switch_same_output():
    from mmjax.nn import CGCNN
    from nn_helpers import pad_batch, random_graph

    rng = np.random.default_rng(1)
    g = pad_batch([random_graph(rng, 3, 4), random_graph(rng, 5, 4)], n_node=12, n_edge=40, n_graph=4, rng=rng)
    outs = []
    for method in POOLING_METHODS:
        enc = CGCNN(atom_fea_len=8, n_conv=1, h_fea_len=8, pooling=method)
        v = enc.init(jax.random.PRNGKey(0), g)
        outs.append(np.asarray(enc.apply(v, g)))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)
