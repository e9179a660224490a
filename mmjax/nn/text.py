"""Text projection over frozen, precomputed text embeddings (SPEC M6).

Input: float [B, D] (D = 768 for BERT-base CLS or mean-pooled MatSciBERT/MatBERT outputs).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.transformer import get_activation

Dtype = Any


class TextMLP(nn.Module):
    """MLP over a frozen text embedding.

    ``depth`` Dense layers: ``depth - 1`` x (Dense(hidden) -> activation) then Dense(out_dim).
    MultiMat: depth 3, hidden 512, ReLU, out 128 (its code really has 3 linear layers).
    X-MoPA: depth 1, out 150 (a linear projection of the [CLS] embedding).

    Call: text [B, D] -> float32 [B, out_dim].
    """

    out_dim: int = 128
    hidden: int = 512
    depth: int = 3
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, text):
        if self.depth < 1:
            raise ValueError(f"TextMLP depth must be >= 1, got {self.depth}")
        x = text.astype(self.dtype)
        act = get_activation(self.activation)
        for i in range(self.depth - 1):
            x = act(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc_{i}")(x))
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                        name=f"fc_{self.depth - 1}")(x).astype(jnp.float32)
