"""Density-of-states encoder (SPEC M4).

Input: energies float [B, L] (E - E_F, eV), densities float [B, L], mask bool [B, L]
(True = the point exists; padded / missing points are False).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.basis import sinusoidal_positions
from mmjax.nn.transformer import TransformerEncoder, masked_mean

Dtype = Any


class DosTransformer(nn.Module):
    """DOS transformer with an energy-value embedding.

    ``merge="concat"`` (MultiMat, default): ``Dense(embed)(E)`` and ``Dense(embed)(DOS)`` (1 -> d
    each) are concatenated and mapped by ``Dense(d_model)``; no positional encoding (the energy
    value is the position). 4 pre-LN blocks, 8 heads x 64 (``qkv_features`` 512, no q/k/v bias),
    FFN 512 with GELU.
    ``merge="sum"`` (MatBind): bias-free ``Dense(d_model)`` of E and of DOS merged by a learned
    2 -> 1 linear map; ``positional="sinusoidal"`` adds Vaswani positions (MatBind: 2 post-LN
    layers, 8 heads, FFN 2048, ReLU, d 512 — see ``MATBIND_DOS`` in ``mmjax.nn``).

    Masked points are zeroed before embedding, masked as attention keys and left out of the
    mean pool, so their values never matter.

    Call: energies [B, L], densities [B, L], mask [B, L] -> float32 [B, d_model].
    """

    d_model: int = 128
    embed_dim: int = 128
    num_layers: int = 4
    num_heads: int = 8
    qkv_features: int | None = 512
    qkv_bias: bool = False
    mlp_dim: int = 512
    activation: str = "gelu"
    pre_norm: bool = True
    merge: str = "concat"
    positional: str = "none"
    dropout_rate: float = 0.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, energies, densities, mask, deterministic: bool = True):
        mask = mask.astype(bool)
        e = jnp.where(mask, energies.astype(jnp.float32), 0.0)[..., None].astype(self.dtype)
        d = jnp.where(mask, densities.astype(jnp.float32), 0.0)[..., None].astype(self.dtype)
        dense = lambda f, bias, name: nn.Dense(f, use_bias=bias, dtype=self.dtype,  # noqa: E731
                                               param_dtype=self.param_dtype, name=name)
        if self.merge == "concat":
            x = jnp.concatenate([dense(self.embed_dim, True, "energy_embed")(e),
                                 dense(self.embed_dim, True, "dos_embed")(d)], axis=-1)
            x = dense(self.d_model, True, "merge")(x)
        elif self.merge == "sum":
            stacked = jnp.stack([dense(self.d_model, False, "energy_embed")(e),
                                 dense(self.d_model, False, "dos_embed")(d)], axis=-1)
            x = dense(1, True, "merge")(stacked)[..., 0]
        else:
            raise ValueError(f"unknown merge {self.merge!r}; expected 'concat' or 'sum'")
        if self.positional == "sinusoidal":
            x = x + jnp.asarray(sinusoidal_positions(x.shape[1], self.d_model), x.dtype)
        elif self.positional != "none":
            raise ValueError(f"unknown positional {self.positional!r}; expected 'none' or 'sinusoidal'")
        x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, self.qkv_features, self.qkv_bias,
                               self.activation, self.pre_norm, dropout_rate=self.dropout_rate, remat=self.remat,
                               dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(x, mask, deterministic)
        return masked_mean(x, mask)
