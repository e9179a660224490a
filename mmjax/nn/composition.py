"""Composition encoder (SPEC M3): CrabNet-style transformer over the element-derived matrix.

Input (see ``mmjax.data.schema``): atomic_numbers int32 [B, M], fractions float32 [B, M]
(sum to 1 over valid entries), mask bool [B, M] (True = real element).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.nn.basis import fractional_encoding
from mmjax.nn.packing import pack, unpack
from mmjax.nn.transformer import TransformerEncoder, masked_mean, uniform_init

Dtype = Any


class CrabNet(nn.Module):
    """CrabNet encoder (Wang et al. 2021; the XxaCT-NN composition encoder).

    1. Element vectors: a fixed table ``element_features`` [Zmax + 1, F] (row = atomic number,
       e.g. mat2vec 200-d) or, by default, a learned table [num_elements, element_dim];
       then ``Dense(d_model)`` scaled by ``2 ** emb_scaler`` (learnable, init 1).
    2. Fractional encodings (table lookups, resolution 5000, base 50): the linear one fills the
       first d/2 channels, the log one (``0.0025 log2(f)^2``) the last d/2, each scaled by
       ``2 ** ((1 - s)^2)`` with a learnable s (init 1), and added to the element vectors.
    3. ``num_layers`` transformer blocks (``num_heads``, FFN ``mlp_dim``) with a key-padding mask;
       CrabNet uses PyTorch's post-LN ReLU layer, the default here (``pre_norm=False``).
    ``torch_init``: every Dense initialised as CrabNet's PyTorch layers are (`nn.Linear`, and
    ``nn.MultiheadAttention`` in the transformer) instead of Flax's lecun-normal.

    0. Training only (``deterministic=False``) with ``fraction_noise`` > 0: CrabNet's jitter
       ``f <- clip(f * (1 + fraction_noise * N(0, 1)), 0, 1)``, renormalised over the real
       elements (CrabNet: 0.02); draws from the ``"dropout"`` rng.
    4. Padded rows are zeroed; output = masked mean over elements, or the [CLS] token when
       ``use_cls_token`` (XxaCT-NN's ``c_cls``); optional ``Dense(out_dim)`` on every token.

    Call:
      atomic_numbers [B, M], fractions [B, M], mask [B, M];
      return_tokens: also return ``tokens [B, T, d_out]`` and ``token_mask bool [B, T]``
      (T = M, or M + 1 with the [CLS] first).
      Returns float32 [B, d_out] (or the 3-tuple). ``d_out = out_dim or d_model``.
      token_index [T] (`mmjax.nn.packing.pack_index` of ``mask``): the transformer and
      ``out_proj`` run on the T packed element tokens only (same values, less work where most
      slots are padding); ``return_tokens`` then gives the packed tokens ``[T, d_out]`` (zeros in
      unused entries) and ``mask``. Not with ``use_cls_token``.
    """

    d_model: int = 512
    num_layers: int = 3
    num_heads: int = 4
    mlp_dim: int = 2048
    element_dim: int = 200
    element_features: Any = None
    num_elements: int = 119
    resolution: int = 5000
    pre_norm: bool = False
    activation: str = "relu"
    use_cls_token: bool = False
    out_dim: int | None = None
    dropout_rate: float = 0.0
    fraction_noise: float = 0.0
    torch_init: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, atomic_numbers, fractions, mask, deterministic: bool = True,
                 return_tokens: bool = False, token_index=None):
        if token_index is not None and self.use_cls_token:
            raise ValueError("CrabNet: token packing (token_index) does not support use_cls_token")
        mask = mask.astype(bool)
        z = jnp.where(mask, atomic_numbers, 0)
        frac = jnp.where(mask, fractions.astype(jnp.float32), 0.0)
        if self.fraction_noise > 0 and not deterministic:
            noise = jax.random.normal(self.make_rng("dropout"), frac.shape, jnp.float32)
            frac = jnp.where(mask, jnp.clip(frac * (1.0 + self.fraction_noise * noise), 0.0, 1.0), 0.0)
            frac = frac / jnp.maximum(jnp.sum(frac, axis=-1, keepdims=True), 1e-12)
        if self.element_features is not None:
            table = jnp.asarray(np.asarray(self.element_features, np.float32))
            elem = table[jnp.clip(z, 0, table.shape[0] - 1)]
        else:
            elem = nn.Embed(self.num_elements, self.element_dim, param_dtype=self.param_dtype,
                            name="element_table")(z)
        init = dict(kernel_init=uniform_init(elem.shape[-1] ** -0.5), bias_init=uniform_init(elem.shape[-1] ** -0.5)) \
            if self.torch_init else {}
        x = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="embed", **init)(
            elem.astype(self.dtype))
        emb_scaler = self.param("emb_scaler", nn.initializers.ones, (), self.param_dtype)
        pos_scaler = self.param("pos_scaler", nn.initializers.ones, (), self.param_dtype)
        pos_scaler_log = self.param("pos_scaler_log", nn.initializers.ones, (), self.param_dtype)
        half = self.d_model // 2
        pe = fractional_encoding(frac, half, self.resolution, log=False) * 2.0 ** ((1.0 - pos_scaler) ** 2)
        ple = fractional_encoding(frac, self.d_model - half, self.resolution, log=True) * 2.0 ** ((1.0 - pos_scaler_log) ** 2)
        x = x * (2.0 ** emb_scaler).astype(x.dtype) + jnp.concatenate([pe, ple], axis=-1).astype(x.dtype)
        token_mask = mask
        if self.use_cls_token:
            cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.d_model), self.param_dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, self.d_model)), x], axis=1)
            token_mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], axis=1)
        if token_index is not None:
            x = pack(x, token_index)
        x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, activation=self.activation,
                               pre_norm=self.pre_norm, dropout_rate=self.dropout_rate, remat=self.remat,
                               dtype=self.dtype, param_dtype=self.param_dtype, torch_init=self.torch_init,
                               name="encoder")(x, token_mask, deterministic, token_index)
        if self.out_dim is not None:
            x = nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="out_proj")(x)
        if token_index is not None:
            valid = token_index < mask.size
            packed = jnp.where(valid[:, None], x.astype(jnp.float32), 0.0)
            pooled = masked_mean(unpack(packed, token_index, *mask.shape), mask)
            return (pooled, packed, mask) if return_tokens else pooled
        x = jnp.where(token_mask[..., None], x.astype(jnp.float32), 0.0)
        pooled = x[:, 0] if self.use_cls_token else masked_mean(x, mask)
        if return_tokens:
            return pooled, x, token_mask
        return pooled
