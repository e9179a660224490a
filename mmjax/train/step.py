"""The jit-compiled train and eval steps (one program each, sharded, state donated)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mmjax.systems.base import STATE_UPDATES
from mmjax.train import mesh as mesh_lib
from mmjax.train.state import TrainState

PyTree = Any


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_step_fn(system, tx: optax.GradientTransformation, schedule: optax.Schedule) -> Callable:
    """Un-jitted ``(state, batch) -> (state, metrics)`` for one optimiser update.

    The step's key is ``fold_in(state.rng, state.step)``, so results do not depend on how the
    run was split into restarts. A non-finite loss or gradient leaves params and optimiser
    state unchanged and records the step in ``state.bad_step`` (sticky). A system's
    ``metrics[STATE_UPDATES]`` (BatchNorm statistics) replace those entries of the params. Metrics are float32
    scalars: the system's metrics plus ``loss``, ``grad_norm``, ``lr`` (multiplier-1 rate) and
    ``bad_step``.
    """

    def step(state: TrainState, batch: PyTree) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            return system.loss(params, batch, rng, True)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state_updates = metrics.pop(STATE_UPDATES, {})
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if state_updates:  # BatchNorm running statistics: set by the forward pass, not the optimiser
            params = dict(params, **state_updates)
        good = jnp.isfinite(loss) & _all_finite(grads) & (state.bad_step < 0)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(good, n, o), new, old)  # noqa: E731
        new_step = state.step + 1
        bad_step = jnp.where((state.bad_step < 0) & ~good, new_step, state.bad_step)
        new_state = state.replace(params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
                                  step=new_step, bad_step=bad_step)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        metrics.update(loss=jnp.asarray(loss, jnp.float32), grad_norm=optax.global_norm(grads),
                       lr=jnp.asarray(schedule(state.step), jnp.float32), bad_step=bad_step.astype(jnp.float32))
        return new_state, metrics

    return step


def make_train_step(system, tx, schedule, state_shardings: TrainState, mesh: Mesh, store=None) -> Callable:
    """`train_step_fn` under `jax.jit` with explicit shardings; the input state is donated.

    Call as ``state, metrics = step(state, batch)`` with a global batch (`mesh.host_to_global`).
    Metrics come back replicated, as device arrays: fetch them only when logging.

    store: a `mmjax.data.device_store.DeviceStore` (device-resident data): the step then also takes
    ``batch = {"record_index": int32 [n_dev, B_dev]}`` and gathers the Batch from the store inside
    the same program (one dispatch per step; the store is placed on the devices here). Full
    Batches still go to the plain program.
    """
    body = train_step_fn(system, tx, schedule)
    plain = jax.jit(body, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
                    out_shardings=(state_shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))
    if store is None:
        return plain
    arrays, gather = store.placed(mesh)
    fused = jax.jit(lambda state, arrays, idx: body(state, gather(arrays, idx)),
                    in_shardings=(state_shardings, mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)),
                    out_shardings=(state_shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))
    return StoreFedStep(plain, fused, arrays)


class StoreFedStep:
    """``step(state, batch)``: ``{"record_index": ...}`` batches run the fused gather + step program
    on the device-resident store, full Batches the plain program (see `make_train_step`)."""

    def __init__(self, plain, fused, arrays):
        self.plain, self.fused, self.arrays = plain, fused, arrays

    def __call__(self, state, batch):
        if "record_index" in batch:
            return self.fused(state, self.arrays, batch["record_index"])
        return self.plain(state, batch)

    def lower(self, state, batch):
        return self.plain.lower(state, batch)

    def _cache_size(self) -> int:
        return self.plain._cache_size() + self.fused._cache_size()


def make_eval_step(system, params_shardings: PyTree, mesh: Mesh) -> Callable:
    """Jitted ``(params, batch, rng) -> metrics`` (``loss`` + system metrics, no gradient)."""

    def step(params, batch, rng):
        loss, metrics = system.loss(params, batch, rng, False)
        metrics = {k: v for k, v in metrics.items() if k != STATE_UPDATES}
        out = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        out["loss"] = jnp.asarray(loss, jnp.float32)
        return out

    return jax.jit(step, in_shardings=(params_shardings, mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)),
                   out_shardings=mesh_lib.replicated(mesh))


def make_apply_fn(fn: Callable, params_shardings: PyTree, mesh: Mesh) -> Callable:
    """Jitted ``(params, batch) -> fn(params, batch)`` (for `System.predict` / `System.embed`);
    outputs keep the batch sharding over ``"data"``."""
    return jax.jit(fn, in_shardings=(params_shardings, mesh_lib.batch_sharding(mesh)),
                   out_shardings=mesh_lib.batch_sharding(mesh))
