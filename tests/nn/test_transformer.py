"""Attention and transformer blocks: NumPy reference, masks, bf16, remat."""

import jax
import jax.numpy as jnp
import numpy as np

from nn_helpers import init_params

from mmjax.nn.transformer import CrossAttentionBlock, MultiHeadAttention, TransformerEncoder


def _numpy_mha(p, xq, xkv, key_mask, num_heads):
    """Plain-NumPy multi-head softmax attention with a key-padding mask."""
    def proj(name, x):
        return np.einsum("btd,dhk->bthk", x, np.asarray(p[name]["kernel"])) + np.asarray(p[name]["bias"])
    q, k, v = proj("query", xq), proj("key", xkv), proj("value", xkv)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", w, v)
    return np.einsum("bqhd,hdo->bqo", out, np.asarray(p["out"]["kernel"])) + np.asarray(p["out"]["bias"])


def test_attention_matches_numpy_softmax_attention_with_mask():
    rng = np.random.default_rng(0)
    xq = rng.normal(size=(2, 3, 8)).astype(np.float32)
    xkv = rng.normal(size=(2, 5, 6)).astype(np.float32)
    key_mask = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], bool)
    mha = MultiHeadAttention(num_heads=2, qkv_features=8, out_features=4)
    params = init_params(mha, xq, xkv, key_mask)["params"]
    apply = jax.jit(mha.apply)
    got = apply({"params": params}, xq, xkv, key_mask)
    ref = _numpy_mha(params, xq.astype(np.float64), xkv.astype(np.float64), key_mask, 2)
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # Values under the mask never matter.
    xkv2 = xkv.copy()
    xkv2[~key_mask] = 1e3
    np.testing.assert_array_equal(apply({"params": params}, xq, xkv2, key_mask), got)


def test_fully_masked_keys_give_zero_attention_not_nan():
    x = jnp.ones((1, 2, 4))
    mha = MultiHeadAttention(num_heads=1, qkv_bias=False)
    params = init_params(mha, x, x)
    out = jax.jit(mha.apply)(params, x, x, jnp.zeros((1, 2), bool))
    np.testing.assert_array_equal(out, np.zeros((1, 2, 4)))


def test_encoder_remat_bf16_and_masks():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 5, 16)).astype(np.float32))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    enc = TransformerEncoder(num_layers=1, num_heads=2, mlp_dim=32)
    params = init_params(enc, x, mask)

    def loss(p, module):
        return jnp.sum(jnp.where(mask[..., None], module.apply(p, x, mask), 0.0) ** 2)

    apply = jax.jit(enc.apply)
    out = apply(params, x, mask)
    # Remat: same parameters tree, same values and gradients.
    enc_remat = TransformerEncoder(num_layers=1, num_heads=2, mlp_dim=32, remat=True)
    assert jax.tree.structure(jax.eval_shape(enc_remat.init, jax.random.key(0), x, mask)) == jax.tree.structure(params)
    g1 = jax.jit(jax.grad(loss), static_argnums=1)(params, enc)
    g2 = jax.jit(jax.grad(loss), static_argnums=1)(params, enc_remat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g2)
    # Changing padded tokens does not change real tokens.
    x2 = x.at[0, 3:].set(50.0)
    np.testing.assert_allclose(apply(params, x2, mask)[0, :3], out[0, :3], rtol=1e-5, atol=1e-6)
    # bf16 compute with fp32 params stays close to fp32.
    enc_bf16 = TransformerEncoder(num_layers=1, num_heads=2, mlp_dim=32, dtype=jnp.bfloat16)
    out_bf16 = jax.jit(enc_bf16.apply)(params, x, mask)
    assert out_bf16.dtype == jnp.bfloat16
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out_bf16, np.float32), out, atol=0.1)


def test_cross_attention_block_honours_context_mask_and_queries_only_see_context():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 3, 8)).astype(np.float32))
    ctx = jnp.asarray(rng.normal(size=(2, 4, 8)).astype(np.float32))
    ctx_mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    block = CrossAttentionBlock(num_heads=2, mlp_dim=16)
    params = init_params(block, x, ctx, None, ctx_mask)
    apply = jax.jit(block.apply)
    out = apply(params, x, ctx, None, ctx_mask)
    assert out.shape == (2, 3, 8)
    ctx2 = jnp.where(ctx_mask[..., None], ctx, -7.0)
    np.testing.assert_allclose(apply(params, x, ctx2, None, ctx_mask), out, rtol=1e-6, atol=1e-6)
    ctx3 = ctx.at[:, 0].add(1.0)  # a real context token changes the output
    assert not np.allclose(apply(params, x, ctx3, None, ctx_mask), out, atol=1e-4)
