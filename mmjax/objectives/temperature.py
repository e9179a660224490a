"""Contrastive temperature: fixed, or learnable through a clipped log-parameterisation.

CLIP (and XxaCT-NN, init 0.07) learn ``log tau`` and clip the result; MatBind's
``LearnableLogitScaling`` clips the inverse (logit scale <= 100, i.e. tau >= 0.01). Both are
``temperature_from_log(log_t, min_temperature=0.01, max_temperature=...)``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

DEFAULT_MIN_TEMPERATURE = 0.01  # logit scale <= 100, as CLIP / MatBind
DEFAULT_MAX_TEMPERATURE = 100.0


def temperature_from_log(
    log_t: jax.Array,
    min_temperature: float = DEFAULT_MIN_TEMPERATURE,
    max_temperature: float = DEFAULT_MAX_TEMPERATURE,
) -> jax.Array:
    """``clip(exp(log_t), min, max)``: a positive temperature from an unconstrained parameter.

    The gradient is ``exp(log_t)`` inside the bounds and 0 outside them (the clip saturates, as
    CLIP's clamp of the logit scale does). Shape: same as ``log_t`` (usually a scalar).
    """
    if not 0.0 < min_temperature <= max_temperature:
        raise ValueError(
            f"need 0 < min_temperature <= max_temperature, got {min_temperature}, {max_temperature}"
        )
    return jnp.clip(jnp.exp(log_t), min_temperature, max_temperature)


class LearnableTemperature(nn.Module):
    """Flax param helper: holds ``log_temperature`` (scalar) and returns the clipped temperature.

    Usage inside a system: ``tau = LearnableTemperature(init_value=0.07)()``; with ``learnable=False``
    it returns the constant ``init_value`` and creates no parameter.
    """

    init_value: float = 0.07
    learnable: bool = True
    min_temperature: float = DEFAULT_MIN_TEMPERATURE
    max_temperature: float = DEFAULT_MAX_TEMPERATURE

    @nn.compact
    def __call__(self) -> jax.Array:
        if not self.learnable:
            return jnp.asarray(self.init_value, jnp.float32)
        log_t = self.param(
            "log_temperature", lambda _: jnp.asarray(math.log(self.init_value), jnp.float32)
        )
        return temperature_from_log(log_t, self.min_temperature, self.max_temperature)
