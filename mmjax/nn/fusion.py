"""XxaCT-NN multimodal fusion (SPEC M7): a cross-attention transformer decoder whose queries are
the XRD tokens and whose keys/values are the composition tokens."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.transformer import CrossAttentionDecoder

Dtype = Any


class CrossAttentionFusion(nn.Module):
    """XxaCT-NN fusion module: ``num_layers`` pre-LN decoder blocks (self-attention over the XRD
    tokens, cross-attention to the composition tokens, FFN), final LayerNorm. Paper size: 12
    layers, 768-d, 12 heads, FFN 2048 (94.5 M parameters). Inputs whose width differs from
    ``d_model`` are first mapped by a Dense layer.

    Call:
      xrd_tokens [B, Tx, d] with the XRD [CLS] first (XxaCT: Tx = 18);
      comp_tokens [B, Tc, d]; comp_mask bool [B, Tc] (True = real element / [CLS]);
      xrd_mask bool [B, Tx] or None.
      Returns ``(pooled [B, d_model], tokens [B, Tx - 1, d_model])``: the fused [CLS] (input to
      the prediction heads) and the fused per-XRD-token outputs (for MXM), float32.
    """

    num_layers: int = 12
    d_model: int = 768
    num_heads: int = 12
    mlp_dim: int = 2048
    activation: str = "gelu"
    dropout_rate: float = 0.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xrd_tokens, comp_tokens, comp_mask, xrd_mask=None, deterministic: bool = True):
        if xrd_tokens.shape[-1] != self.d_model:
            xrd_tokens = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="xrd_in")(xrd_tokens)
        if comp_tokens.shape[-1] != self.d_model:
            comp_tokens = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="comp_in")(comp_tokens)
        x = CrossAttentionDecoder(self.num_layers, self.num_heads, self.mlp_dim, self.activation, self.dropout_rate,
                                  self.remat, self.dtype, self.param_dtype, name="decoder")(
                                      xrd_tokens, comp_tokens, xrd_mask, comp_mask.astype(bool), deterministic)
        x = x.astype(jnp.float32)
        return x[:, 0], x[:, 1:]
