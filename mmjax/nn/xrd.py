"""XRD pattern encoders (SPEC M2). Input: float [B, L] smeared powder pattern (L = 4250 on the
default 5-90 deg / 0.02 deg grid, intensities in [0, 100]).

* :class:`XrdCNN` — X-MoPA 1-D CNN: one conv layer, max-pool, two dense layers.
* :class:`XrdTransformer` — XxaCT-NN: pattern reshaped to T tokens x P points (17 x 250),
  Dense(P -> d), learnable [CLS] + learned positions, pre-LN transformer, optional [MASK]
  replacement of tokens for masked XRD modelling, per-token outputs.
* :class:`XrdResNet1D` — MatBind 1-D ResNet (basic blocks, GroupNorm, global average pool).
* :class:`XrdFCN` — fully convolutional baseline (PXRDPIAYN-style: strided convs, no dense
  layer before the global pool).

All return float32 [B, d]. ``input_scale`` (default 1/100) maps [0, 100] intensities to [0, 1].
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.transformer import TransformerEncoder, get_activation

Dtype = Any


class XrdCNN(nn.Module):
    """X-MoPA XRD encoder: Conv1D(filters, kernel) -> ReLU -> MaxPool(pool, stride pool) ->
    flatten -> Dense(hidden) -> ReLU -> Dense(embed_dim).

    The paper gives only the layer types; widths here are our choice (kept small so the
    trainable part of X-MoPA stays ~1 M parameters as the paper's 111 M total implies).

    Call: xrd [B, L] -> float32 [B, embed_dim].
    """

    filters: int = 16
    kernel_size: int = 9
    pool: int = 10
    hidden: int = 128
    embed_dim: int = 128
    input_scale: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xrd):
        x = (xrd.astype(jnp.float32) * self.input_scale)[..., None].astype(self.dtype)
        x = nn.relu(nn.Conv(self.filters, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                            param_dtype=self.param_dtype, name="conv")(x))
        x = nn.max_pool(x, (self.pool,), strides=(self.pool,), padding="VALID")
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x))
        return nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(x).astype(jnp.float32)


class XrdTransformer(nn.Module):
    """XxaCT-NN XRD transformer.

    ``xrd [B, T * P] -> [B, T, P] -> Dense(d_model)``; tokens where ``token_mask`` is True are
    replaced by a learned [MASK] embedding (MXM); a learned [CLS] is prepended and learned
    positions [T + 1, d] added; ``num_layers`` pre-LN blocks (``num_heads``, FFN ``mlp_dim``);
    final LayerNorm; optional ``Dense(out_dim)`` projection of every token (XxaCT projects to
    the 768-d fusion width, which is how its XRD encoder reaches 6.8 M parameters).

    Call:
      xrd float [B, T * P]; token_mask bool [B, T] or None (True = replace by [MASK]);
      return_tokens: if True return ``(cls [B, d_out], tokens [B, T, d_out])`` where tokens
      excludes the [CLS] position; else ``cls`` only. ``d_out = out_dim or d_model``. float32.
    """

    num_tokens: int = 17
    patch_size: int = 250
    d_model: int = 512
    num_layers: int = 3
    num_heads: int = 4
    mlp_dim: int = 1024
    out_dim: int | None = None
    dropout_rate: float = 0.0
    input_scale: float = 0.01
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xrd, token_mask=None, deterministic: bool = True, return_tokens: bool = False):
        b, length = xrd.shape
        if length != self.num_tokens * self.patch_size:
            raise ValueError(f"XRD length {length} != num_tokens * patch_size = "
                             f"{self.num_tokens} * {self.patch_size}")
        x = (xrd.astype(jnp.float32) * self.input_scale).reshape(b, self.num_tokens, self.patch_size)
        x = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="patch_embed")(x.astype(self.dtype))
        if token_mask is not None:
            mask_emb = self.param("mask_token", nn.initializers.normal(0.02), (self.d_model,), self.param_dtype)
            x = jnp.where(token_mask[..., None], mask_emb.astype(x.dtype), x)
        cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.d_model), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.d_model)), x], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, self.num_tokens + 1, self.d_model),
                         self.param_dtype)
        x = x + pos.astype(x.dtype)
        x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, dropout_rate=self.dropout_rate,
                               remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype,
                               name="encoder")(x, None, deterministic)
        if self.out_dim is not None:
            x = nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="out_proj")(x)
        x = x.astype(jnp.float32)
        if return_tokens:
            return x[:, 0], x[:, 1:]
        return x[:, 0]


class _BasicBlock1D(nn.Module):
    """ResNet basic block: conv-norm-relu-conv-norm + shortcut (1x1 conv + norm projection when
    ``project``, as MatBind does for the first block of every group), relu.
    [B, L, C_in] -> [B, ceil(L / stride), channels]."""

    channels: int
    kernel_size: int
    stride: int
    groups: int
    project: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda c, k, s, name: nn.Conv(c, (k,), strides=(s,), padding="SAME", use_bias=False,  # noqa: E731
                                             dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        norm = lambda name: nn.GroupNorm(num_groups=min(self.groups, self.channels), dtype=self.dtype,  # noqa: E731
                                         param_dtype=self.param_dtype, name=name)
        h = nn.relu(norm("norm1")(conv(self.channels, self.kernel_size, self.stride, "conv1")(x)))
        h = norm("norm2")(conv(self.channels, self.kernel_size, 1, "conv2")(h))
        if self.project or self.stride != 1 or x.shape[-1] != self.channels:
            x = norm("norm_proj")(conv(self.channels, 1, self.stride, "proj")(x))
        return nn.relu(h + x)


class XrdResNet1D(nn.Module):
    """MatBind 1-D ResNet (``model_id: 777`` by default).

    Stem: Conv(stem_channels, 7, stride 2, SAME) -> GroupNorm -> ReLU -> MaxPool(3, stride 2,
    SAME). Then groups ``(channels, n_blocks)`` of basic blocks with ``kernel_size``; the first
    block of every group uses a 1x1 projection shortcut and, after the first group, strides by
    ``group_stride``. Spec 777 with kernel 9 has ~114 M parameters (15 blocks of 512 channels). Global average pool -> [B, channels[-1]]. GroupNorm(32) as in MatBind.
    (MatBind's max-pool padding bug, padding computed from the channel count, is not copied.)

    Call: xrd [B, L] -> float32 [B, channels[-1]].
    """

    stem_channels: int = 64
    group_channels: Sequence[int] = (64, 128, 256, 256, 512, 512)
    group_blocks: Sequence[int] = (1, 15, 15, 15, 15, 1)
    kernel_size: int = 9
    group_stride: int = 4
    groups: int = 32
    input_scale: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xrd):
        if len(self.group_channels) != len(self.group_blocks):
            raise ValueError("group_channels and group_blocks must have the same length")
        x = (xrd.astype(jnp.float32) * self.input_scale)[..., None].astype(self.dtype)
        x = nn.Conv(self.stem_channels, (7,), strides=(2,), padding="SAME", use_bias=False, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="stem")(x)
        x = nn.relu(nn.GroupNorm(num_groups=min(self.groups, self.stem_channels), dtype=self.dtype,
                                 param_dtype=self.param_dtype, name="stem_norm")(x))
        x = nn.max_pool(x, (3,), strides=(2,), padding="SAME")
        for g, (c, n) in enumerate(zip(self.group_channels, self.group_blocks)):
            for i in range(n):
                stride = self.group_stride if (i == 0 and g > 0) else 1
                x = _BasicBlock1D(c, self.kernel_size, stride, self.groups, i == 0, self.dtype, self.param_dtype,
                                  name=f"group{g}_block{i}")(x)
        return jnp.mean(x.astype(jnp.float32), axis=1)


class XrdFCN(nn.Module):
    """Fully convolutional XRD baseline (PXRDPIAYN "FCN"-style, adapted; the exact published
    layer table is not available offline, so widths here are documented choices).

    ``len(channels)`` x (Conv(c, kernel, stride) -> activation), then global average pool and a
    Dense(embed_dim). No dense layer sees the raw length, so any L works.

    Call: xrd [B, L] -> float32 [B, embed_dim].
    """

    channels: Sequence[int] = (16, 32, 64, 128, 128, 256)
    kernel_size: int = 5
    stride: int = 2
    embed_dim: int = 128
    activation: str = "relu"
    input_scale: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xrd):
        act = get_activation(self.activation)
        x = (xrd.astype(jnp.float32) * self.input_scale)[..., None].astype(self.dtype)
        for i, c in enumerate(self.channels):
            x = act(nn.Conv(c, (self.kernel_size,), strides=(self.stride,), padding="SAME", dtype=self.dtype,
                            param_dtype=self.param_dtype, name=f"conv_{i}")(x))
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x).astype(jnp.float32)
