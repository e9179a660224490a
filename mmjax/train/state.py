"""TrainState: everything that changes during training, as one pytree (checkpointed whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Training state, a plain pytree of arrays.

    Attributes:
      params: parameter pytree (float32).
      opt_state: optax state (NamedTuples survive checkpoints: restore against a target).
      step: int32 [], number of optimiser updates applied.
      rng: uint32 [2], base PRNG key; step s uses ``fold_in(rng, s)``.
      bad_step: int32 [], -1, or the first step (1-based update index) whose loss or gradient
        was NaN/Inf. From then on updates are skipped, so `params` stay the last good ones.
    """

    params: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array
    bad_step: jax.Array


def create_state(system, tx: optax.GradientTransformation, rng: jax.Array, batch: PyTree) -> TrainState:
    """Fresh state; `rng` is split into the init key and the training key. Pure (jit it)."""
    init_rng, train_rng = jax.random.split(rng)
    params = system.init(init_rng, batch)
    return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                      rng=train_rng, bad_step=jnp.full((), -1, jnp.int32))


def abstract_state(system, tx, rng, batch) -> TrainState:
    """Shapes and dtypes of `create_state` (no computation, no memory)."""
    return jax.eval_shape(lambda r, b: create_state(system, tx, r, b), rng, batch)


def init_state(system, tx, rng, batch, shardings: TrainState) -> TrainState:
    """`create_state` compiled with `shardings` as output layout (parameters never pass through the host)."""
    return jax.jit(lambda r, b: create_state(system, tx, r, b), out_shardings=shardings)(rng, batch)
