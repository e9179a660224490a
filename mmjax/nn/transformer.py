"""Shared transformer blocks: multi-head attention, pre-LN (or post-LN) encoder blocks and the
cross-attention decoder block, with key-padding masks, bf16 compute and optional remat.

Conventions (all modules):
  * ``x``: float [B, T, D] token features; ``key_mask``: bool [B, T] True = real token.
  * ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``), ``param_dtype`` the parameter
    dtype (keep float32: fp32 master weights). Softmax and LayerNorm statistics run in float32.
  * Dropout is active only when ``deterministic=False`` and needs a ``"dropout"`` rng.
  * A query whose keys are all masked attends to nothing and receives a zero attention output
    (no NaN), so fully padded rows stay finite.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.nn.dropout import Dropout
from mmjax.nn.packing import pack, unpack

Dtype = Any

ACTIVATIONS: dict[str, Callable] = {
    "gelu": nn.gelu,
    "relu": nn.relu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "softplus": nn.softplus,
}


def get_activation(name: str) -> Callable:
    """Activation by name (gelu, relu, silu, leaky_relu, softplus)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def uniform_init(bound: float):
    """U(-bound, bound) initialiser (PyTorch's default layer initialisations are of this form)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _zeros(key, shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention.

    ``softmax(q k^T / sqrt(d_head) + mask) v`` per head, then an output projection.

    Attributes:
      num_heads: H.
      qkv_features: total width of q/k/v (H * d_head); defaults to the query input width.
        MultiMat's DOS transformer uses 512 (8 x 64) on 128-d tokens.
      out_features: output width; defaults to the query input width.
      qkv_bias: whether the q/k/v projections have a bias (MultiMat: False).
      torch_init: PyTorch ``nn.MultiheadAttention`` initialisation (in-projection Xavier-uniform
        over the stacked [3D, D] matrix, bound sqrt(6 / 4D); out-projection U(+-1/sqrt(D));
        biases 0) instead of Flax's lecun-normal (CrabNet).

    Call:
      inputs_q: [B, Tq, Dq]; inputs_kv: [B, Tk, Dk]; key_mask: bool [B, Tk] or None.
      Returns [B, Tq, out_features].
      Packed self-attention (`mmjax.nn.packing`): ``token_index`` [T] given, inputs_q =
      inputs_kv = the packed tokens [T, D] and key_mask the batch's mask [B, S] (required); the
      projections run on the T tokens, the attention core on [B, S]; returns [T, out_features].
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    torch_init: bool = False

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, key_mask=None, deterministic: bool = True, token_index=None):
        if token_index is not None and (key_mask is None or inputs_q is not inputs_kv):
            raise ValueError("packed attention (token_index) is self-attention with the batch's key_mask [B, S]")
        features = self.qkv_features or inputs_q.shape[-1]
        if features % self.num_heads:
            raise ValueError(f"qkv_features={features} not divisible by num_heads={self.num_heads}")
        head_dim = features // self.num_heads
        init = {}
        if self.torch_init:
            init = dict(kernel_init=uniform_init((6.0 / (inputs_q.shape[-1] + 3 * features)) ** 0.5), bias_init=_zeros)
        dense = lambda name, bias: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim), use_bias=bias, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name, **init)
        q = dense("query", self.qkv_bias)(inputs_q)
        k = dense("key", self.qkv_bias)(inputs_kv)
        v = dense("value", self.qkv_bias)(inputs_kv)
        if token_index is not None:  # [T, H, d] -> [B, S, H, d] for the core
            q, k, v = (unpack(t, token_index, *key_mask.shape) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits / jnp.sqrt(jnp.float32(head_dim))
        if key_mask is not None:
            m = key_mask[:, None, None, :]
            logits = jnp.where(m, logits, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(logits, axis=-1) * m
        else:
            weights = jax.nn.softmax(logits, axis=-1)
        if self.dropout_rate > 0.0 and not deterministic:
            weights = Dropout(self.dropout_rate)(weights, deterministic=False)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v)
        if token_index is not None:
            out = pack(out, token_index)
        out_init = dict(kernel_init=uniform_init(features ** -0.5), bias_init=_zeros) if self.torch_init else {}
        return nn.DenseGeneral(self.out_features or inputs_q.shape[-1], axis=(-2, -1),
                               dtype=self.dtype, param_dtype=self.param_dtype, name="out", **out_init)(out)


class FeedForward(nn.Module):
    """Position-wise MLP ``Dense(hidden) -> act -> dropout -> Dense(D)``. [..., D] -> [..., D].
    ``torch_init``: PyTorch ``nn.Linear`` initialisation (kernel and bias U(+-1/sqrt(fan_in)))."""

    hidden: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    torch_init: bool = False

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        d = x.shape[-1]

        def init(fan_in):
            return dict(kernel_init=uniform_init(fan_in ** -0.5), bias_init=uniform_init(fan_in ** -0.5)) \
                if self.torch_init else {}

        h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1", **init(d))(x)
        h = get_activation(self.activation)(h)
        h = Dropout(self.dropout_rate)(h, deterministic=deterministic or self.dropout_rate == 0.0)
        return nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2", **init(self.hidden))(h)


def _layer_norm(name, dtype, param_dtype):
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name)


class TransformerBlock(nn.Module):
    """Self-attention encoder block.

    Pre-LN (default): ``x += MHA(LN(x)); x += FFN(LN(x))``.
    Post-LN (``pre_norm=False``, PyTorch ``nn.TransformerEncoderLayer`` default as used by
    CrabNet and MatBind's DOS encoder): ``x = LN(x + MHA(x)); x = LN(x + FFN(x))``.

    Call: x [B, T, D], key_mask bool [B, T] or None -> [B, T, D] (in ``dtype``); packed
    (``token_index`` [T'], `mmjax.nn.packing`): x [T', D], key_mask [B, T] -> [T', D].
    """

    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    qkv_bias: bool = True
    activation: str = "gelu"
    pre_norm: bool = True
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    torch_init: bool = False

    @nn.compact
    def __call__(self, x, key_mask=None, deterministic: bool = True, token_index=None):
        drop = lambda y: Dropout(self.dropout_rate)(  # noqa: E731
            y, deterministic=deterministic or self.dropout_rate == 0.0)
        attn = MultiHeadAttention(self.num_heads, self.qkv_features, qkv_bias=self.qkv_bias,
                                  dropout_rate=self.dropout_rate, dtype=self.dtype,
                                  param_dtype=self.param_dtype, torch_init=self.torch_init, name="attn")
        ffn = FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                          self.param_dtype, self.torch_init, name="ffn")
        ln1 = _layer_norm("ln1", self.dtype, self.param_dtype)
        ln2 = _layer_norm("ln2", self.dtype, self.param_dtype)
        if self.pre_norm:
            h = ln1(x)
            x = x + drop(attn(h, h, key_mask, deterministic, token_index))
            x = x + drop(ffn(ln2(x), deterministic))
        else:
            x = ln1(x + drop(attn(x, x, key_mask, deterministic, token_index)))
            x = ln2(x + drop(ffn(x, deterministic)))
        return x


class CrossAttentionBlock(nn.Module):
    """Pre-LN transformer decoder block (XxaCT-NN fusion layer).

    ``x += SelfMHA(LN(x)); x += CrossMHA(LN(x), context); x += FFN(LN(x))`` — queries come
    from ``x`` (XRD tokens), keys/values from ``context`` (composition tokens).

    Call: x [B, Tq, D], context [B, Tk, D], query_mask bool [B, Tq] | None (masks keys of the
    self-attention), context_mask bool [B, Tk] | None -> [B, Tq, D].
    """

    num_heads: int
    mlp_dim: int
    activation: str = "gelu"
    self_attention: bool = True
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, query_mask=None, context_mask=None, deterministic: bool = True):
        drop = lambda y: Dropout(self.dropout_rate)(  # noqa: E731
            y, deterministic=deterministic or self.dropout_rate == 0.0)
        mha = lambda name: MultiHeadAttention(  # noqa: E731
            self.num_heads, dropout_rate=self.dropout_rate, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name)
        if self.self_attention:
            h = _layer_norm("ln_self", self.dtype, self.param_dtype)(x)
            x = x + drop(mha("self_attn")(h, h, query_mask, deterministic))
        h = _layer_norm("ln_cross", self.dtype, self.param_dtype)(x)
        x = x + drop(mha("cross_attn")(h, context, context_mask, deterministic))
        h = _layer_norm("ln_ffn", self.dtype, self.param_dtype)(x)
        return x + drop(FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                                    self.param_dtype, name="ffn")(h, deterministic))


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` :class:`TransformerBlock`, optional final LayerNorm (pre-LN).

    ``remat=True`` wraps each block in ``nn.remat`` (activations recomputed in the backward
    pass: less memory, ~1/3 more compute).

    Call: x [B, T, D], key_mask bool [B, T] | None -> [B, T, D]; packed (``token_index``
    [T'], `mmjax.nn.packing`): x [T', D], key_mask [B, T] -> [T', D].
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    qkv_bias: bool = True
    activation: str = "gelu"
    pre_norm: bool = True
    final_norm: bool = True
    dropout_rate: float = 0.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    torch_init: bool = False

    @nn.compact
    def __call__(self, x, key_mask=None, deterministic: bool = True, token_index=None):
        block_cls = nn.remat(TransformerBlock, static_argnums=(3,)) if self.remat else TransformerBlock
        x = x.astype(self.dtype)
        for i in range(self.num_layers):
            x = block_cls(self.num_heads, self.mlp_dim, self.qkv_features, self.qkv_bias,
                          self.activation, self.pre_norm, self.dropout_rate, self.dtype,
                          self.param_dtype, self.torch_init, name=f"block_{i}")(x, key_mask, deterministic, token_index)
        if self.pre_norm and self.final_norm:
            x = _layer_norm("ln_final", self.dtype, self.param_dtype)(x)
        return x


class CrossAttentionDecoder(nn.Module):
    """A stack of :class:`CrossAttentionBlock` plus a final LayerNorm.

    Call: x [B, Tq, D], context [B, Tk, D], masks as in the block -> [B, Tq, D].
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, query_mask=None, context_mask=None, deterministic: bool = True):
        block_cls = nn.remat(CrossAttentionBlock, static_argnums=(5,)) if self.remat else CrossAttentionBlock
        x = x.astype(self.dtype)
        context = context.astype(self.dtype)
        for i in range(self.num_layers):
            x = block_cls(self.num_heads, self.mlp_dim, self.activation, True, self.dropout_rate,
                          self.dtype, self.param_dtype, name=f"block_{i}")(
                              x, context, query_mask, context_mask, deterministic)
        return _layer_norm("ln_final", self.dtype, self.param_dtype)(x)


def masked_mean(x, mask, axis: int = 1):
    """Mean of ``x`` [B, T, D] over ``axis`` where ``mask`` [B, T] is True -> float32 [B, D].

    Uses ``where`` (not multiplication) so NaN/inf under the mask cannot leak; rows with no
    valid entry give 0.
    """
    m = mask[..., None]
    total = jnp.sum(jnp.where(m, x.astype(jnp.float32), 0.0), axis=axis)
    count = jnp.maximum(jnp.sum(m, axis=axis, dtype=jnp.float32), 1.0)
    return total / count
