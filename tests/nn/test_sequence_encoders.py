"""XRD, composition, DOS, charge-density and text encoders: shapes, masks, padding invariance,
traces, determinism, bf16."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import init_and_apply

from mmjax.nn import SMALL, make_encoder

B = 3
XRD_LEN = SMALL["xrd_transformer"]["num_tokens"] * SMALL["xrd_transformer"]["patch_size"]  # 32


def _xrd(seed=0, length=XRD_LEN):
    return np.random.default_rng(seed).uniform(0, 100, (B, length)).astype(np.float32)


def _close_bf16(name, args, out32, params):
    out16 = jax.jit(make_encoder(name, small=True, dtype=jnp.bfloat16).apply)(params, *args)
    assert out16.dtype == jnp.float32 and out16.shape == out32.shape
    np.testing.assert_allclose(out16, out32, atol=0.05 * float(np.abs(out32).max()) + 0.05)


@pytest.mark.parametrize("name,length", [("xrd_cnn", 64), ("xrd_resnet", 64), ("xrd_fcn", 64)])
def test_conv_xrd_encoders(name, length):
    x = _xrd(1, length)
    out, params = init_and_apply(make_encoder(name, small=True), x)
    d = {"xrd_cnn": "embed_dim", "xrd_fcn": "embed_dim"}.get(name)
    width = SMALL[name][d] if d else SMALL[name]["group_channels"][-1]
    assert out.shape == (B, width) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    # Rows are independent (no cross-sample mixing) and the pattern matters.
    x2 = x.copy()
    x2[1] = x2[1][::-1]
    out2 = jax.jit(make_encoder(name, small=True).apply)(params, x2)
    out2, out_np = np.asarray(out2), np.asarray(out)
    np.testing.assert_allclose(out2[[0, 2]], out_np[[0, 2]], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out2[1], out[1], atol=1e-6)
    _close_bf16(name, (x,), out, params)


def test_xrd_transformer_tokens_mask_and_traces():
    model = make_encoder("xrd_transformer", small=True)
    cfg = SMALL["xrd_transformer"]
    x = _xrd(2)
    token_mask = np.zeros((B, cfg["num_tokens"]), bool)
    token_mask[0, 1] = token_mask[2, 3] = True
    (cls, tokens), params = init_and_apply(model, x, token_mask, return_tokens=True)
    assert cls.shape == (B, cfg["d_model"]) and tokens.shape == (B, cfg["num_tokens"], cfg["d_model"])
    assert "mask_token" in params["params"] and "cls_token" in params["params"]
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(p, x, m):
        return model.apply(p, x, m, return_tokens=True)

    # Values inside a [MASK]ed token never matter; outputs are deterministic; one trace.
    x2 = x.reshape(B, cfg["num_tokens"], -1).copy()
    x2[token_mask] = 0.0
    cls2, tokens2 = apply(params, x2.reshape(B, -1), token_mask)
    np.testing.assert_allclose(cls2, cls, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tokens2, tokens, rtol=1e-5, atol=1e-5)
    # Masking a token changes that sample's outputs but not the others'.
    cls3, _ = apply(params, x, np.zeros_like(token_mask))
    np.testing.assert_allclose(cls3[1], cls[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(cls3[0], cls[0], atol=1e-5)
    with pytest.raises(ValueError, match="num_tokens"):
        model.apply(params, x[:, :-1])
    out16 = jax.jit(make_encoder("xrd_transformer", small=True, dtype=jnp.bfloat16).apply)(params, x, token_mask)
    np.testing.assert_allclose(out16, cls, atol=0.1)


def _composition(m_pad):
    z = np.array([[8, 22, 38, 0, 0], [3, 9, 0, 0, 0], [26, 8, 0, 0, 0]], np.int32)
    f = np.array([[0.6, 0.2, 0.2, 0, 0], [0.5, 0.5, 0, 0, 0], [0.4, 0.6, 0, 0, 0]], np.float32)
    mask = z > 0
    if m_pad > 5:  # extra masked columns with garbage values
        extra = m_pad - 5
        z = np.concatenate([z, np.full((B, extra), 57, np.int32)], 1)
        f = np.concatenate([f, np.full((B, extra), 0.3, np.float32)], 1)
        mask = np.concatenate([mask, np.zeros((B, extra), bool)], 1)
    return z, f, mask


def test_crabnet_padding_invariance_cls_tokens_and_bf16():
    model = make_encoder("crabnet", small=True)
    z, f, mask = _composition(5)
    out, params = init_and_apply(model, z, f, mask)
    assert out.shape == (B, SMALL["crabnet"]["d_model"])
    z8, f8, mask8 = _composition(8)
    z8[~mask8] = 57  # garbage under the mask
    np.testing.assert_allclose(jax.jit(model.apply)(params, z8, f8, mask8), out, rtol=1e-5, atol=1e-6)
    # Fractions matter (the fractional encodings are wired in).
    f2 = f.copy()
    f2[0, :3] = [0.2, 0.2, 0.6]
    assert not np.allclose(jax.jit(model.apply)(params, z, f2, mask)[0], out[0], atol=1e-5)
    _close_bf16("crabnet", (z, f, mask), out, params)
    # XxaCT variant: [CLS] first, tokens for the fusion keys/values, padded tokens zeroed.
    cls_model = make_encoder("crabnet", small=True, use_cls_token=True, out_dim=24)
    (pooled, tokens, token_mask), _ = init_and_apply(cls_model, z, f, mask, return_tokens=True)
    assert pooled.shape == (B, 24) and tokens.shape == (B, 6, 24)
    np.testing.assert_array_equal(token_mask[:, 0], True)
    np.testing.assert_array_equal(token_mask[:, 1:], mask)
    np.testing.assert_array_equal(tokens[~token_mask], 0.0)
    np.testing.assert_allclose(pooled, tokens[:, 0])


@pytest.mark.parametrize("variant", [{}, dict(merge="sum", positional="sinusoidal", pre_norm=False,
                                               activation="relu")])
def test_dos_transformer_masked_points_do_not_matter(variant):
    rng = np.random.default_rng(3)
    L = 12
    energies = np.tile(np.linspace(-5, 5, L, dtype=np.float32), (B, 1))
    dens = rng.uniform(0, 3, (B, L)).astype(np.float32)
    mask = np.ones((B, L), bool)
    mask[0, 8:] = False
    mask[2, :3] = False
    model = make_encoder("dos_transformer", small=True, **variant)
    out, params = init_and_apply(model, energies, dens, mask)
    assert out.shape == (B, SMALL["dos_transformer"]["d_model"])
    dens2 = np.where(mask, dens, np.nan).astype(np.float32)  # NaN under the mask must not leak
    energies2 = np.where(mask, energies, 99.0).astype(np.float32)
    out2 = jax.jit(model.apply)(params, energies2, dens2, mask)
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-6)
    if not variant:  # no positional encoding: extra masked points appended change nothing
        pad = lambda a, v: np.concatenate([a, np.full((B, 4), v, a.dtype)], 1)  # noqa: E731
        out3 = jax.jit(model.apply)(params, pad(energies, 7.0), pad(dens, 1.0), pad(mask, False))
        np.testing.assert_allclose(out3, out, rtol=1e-5, atol=1e-6)
        _close_bf16("dos_transformer", (energies, dens, mask), out, params)


def test_resnext3d_small_grid_grouped_convs_and_bf16():
    rng = np.random.default_rng(4)
    rho = rng.uniform(0, 1, (2, 8, 8, 8)).astype(np.float32)
    model = make_encoder("resnext3d", small=True)
    out, params = init_and_apply(model, rho)
    assert out.shape == (2, SMALL["resnext3d"]["embed_dim"]) and np.all(np.isfinite(out))
    # conv2 is grouped: mid = cardinality * planes // 32 = 2 * 64 // 32 = 4 channels in 2 groups,
    # so its kernel has mid / cardinality = 2 input features; output = planes * expansion.
    k = params["params"]["stage1_block0"]["conv2"]["kernel"]
    assert k.shape == (3, 3, 3, 2, 4)
    assert params["params"]["stage1_block0"]["conv3"]["kernel"].shape == (1, 1, 1, 4, 128)
    assert not np.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="X, Y, Z"):
        model.apply(params, rho[0])
    _close_bf16("resnext3d", (rho,), out, params)


def test_text_mlp_depth_and_xmopa_projection():
    x = np.random.default_rng(5).normal(size=(B, 24)).astype(np.float32)
    out, params = init_and_apply(make_encoder("text_mlp", small=True), x)
    assert out.shape == (B, 16) and sorted(params["params"]) == ["fc_0", "fc_1"]
    xmopa = make_encoder("xmopa_text")
    shapes = jax.eval_shape(xmopa.init, jax.random.key(0), np.zeros((1, 768), np.float32))
    assert list(shapes["params"]) == ["fc_0"] and shapes["params"]["fc_0"]["kernel"].shape == (768, 150)
    # depth 1 is exactly a linear map: f(a + b) - f(b) = f(a) - f(0).
    lin = make_encoder("text_mlp", depth=1, out_dim=5)
    _, p = init_and_apply(lin, x)
    f = jax.jit(lin.apply)
    np.testing.assert_allclose(f(p, x + 1.0) - f(p, np.ones_like(x)), f(p, x) - f(p, np.zeros_like(x)), atol=1e-5)
