"""A tiny regression system on the ``xrd`` modality, for engine tests and the throughput harness.

Model: ``encoder`` = Dense(hidden) -> gelu -> dropout -> Dense(hidden); ``head`` = Dense(1).
Input ``batch["xrd"]`` float32 [n_dev, B, L]; target ``batch["targets"]["y"]`` float32 [n_dev, B]
with ``batch["target_mask"]["y"]`` and ``batch["slot_valid"]`` bool [n_dev, B]. Loss: mean
squared error over slots that are valid and labelled (0 if none).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mmjax.systems.base import System, flatten_device_axis, labels_from_top_level


class _ToyNet(nn.Module):
    hidden: int
    dropout: float
    dtype: jnp.dtype

    def setup(self):
        self.encoder = _Encoder(self.hidden, self.dropout, self.dtype)
        self.head = nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32)

    def __call__(self, x, train: bool):
        return self.head(self.encoder(x, train))[..., 0].astype(jnp.float32)

    def embed(self, x):
        return self.encoder(x, False).astype(jnp.float32)


class _Encoder(nn.Module):
    hidden: int
    dropout: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32)(x.astype(self.dtype))
        x = nn.gelu(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32)(x)


class ToySystem(System):
    """Masked-MSE regression of ``targets/y`` from ``xrd``; groups ``encoder`` and ``head``."""

    name = "toy"
    modalities = ("xrd",)

    def __init__(self, hidden: int = 16, dropout: float = 0.0, compute_dtype: str = "float32"):
        self.net = _ToyNet(hidden, dropout, jnp.dtype(compute_dtype))

    def init(self, rng, batch):
        x = flatten_device_axis(batch["xrd"])
        return self.net.init({"params": rng}, x, False)["params"]

    def _forward(self, params, batch, rng, train):
        x = flatten_device_axis(batch["xrd"])
        return self.net.apply({"params": params}, x, train, rngs={"dropout": rng} if train else {})

    def loss(self, params, batch, rng, train):
        pred = self._forward(params, batch, rng, train)
        y = flatten_device_axis(batch["targets"]["y"])
        w = flatten_device_axis(batch["slot_valid"] & batch["target_mask"]["y"]).astype(jnp.float32)
        err = jnp.where(w > 0, pred - y, 0.0)
        n = jnp.sum(w)
        mse = jnp.sum(w * err**2) / jnp.maximum(n, 1.0)
        mae = jnp.sum(w * jnp.abs(err)) / jnp.maximum(n, 1.0)
        return mse, {"mse": mse, "mae": mae, "n_labelled": n}

    def predict(self, params, batch):
        return {"y": self._forward(params, batch, None, False)}

    def embed(self, params, batch):
        return {"xrd": self.net.apply({"params": params}, flatten_device_axis(batch["xrd"]), method=_ToyNet.embed)}

    def param_labels(self, params):
        return labels_from_top_level(params)


def make_toy(config: ml_collections.ConfigDict) -> ToySystem:
    """Factory: ``config.system.{hidden, dropout}``, ``config.train.compute_dtype``."""
    return ToySystem(hidden=config.system.get("hidden", 16), dropout=config.system.get("dropout", 0.0),
                     compute_dtype=config.train.compute_dtype)


def toy_system_config() -> ml_collections.ConfigDict:
    """The ``config.system`` section the toy factory reads."""
    return ml_collections.ConfigDict(dict(name="toy", hidden=16, dropout=0.1))
