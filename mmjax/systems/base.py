"""The one interface `mmjax.train` knows systems by.

A *system* is a plain Python object holding Flax modules and hyperparameters. It owns every
modelling decision (encoders, heads, which loss terms, mixed precision); the training engine
only calls the five methods below, always inside `jax.jit`, on Batches that follow
`mmjax.data.schema` (every leaf has a leading device axis ``[n_dev, B_dev, ...]`` and
``batch["slot_valid"]`` masks padding slots).

Contract (all methods are pure functions of their arguments):

``init(rng, batch) -> params``
    Parameter pytree, float32 master weights. `batch` is a real or abstract Batch with the
    shapes training will use (global shapes; called under `jax.jit`/`jax.eval_shape`).

``loss(params, batch, rng, train) -> (loss, metrics)``
    `loss` a float32 scalar (the quantity minimised); `metrics` a flat ``dict[str, scalar]``
    (names without a split prefix; the loop adds ``train/`` or ``eval/``). `rng` is already
    folded by the step number; use it for dropout / masking when `train` is True. Padding
    slots (``slot_valid == False``) must not change the loss.

    Non-trainable state (BatchNorm running statistics) lives in ``params[BATCH_STATS]``: the
    optimiser never changes it; in training the system returns its new value as
    ``metrics[STATE_UPDATES] = {BATCH_STATS: ...}`` (a pytree, the only non-scalar metric) and
    the train step puts it in place after the update. Evaluation uses the stored statistics.

``predict(params, batch) -> dict[str, array]``
    Per-target outputs ``[n_dev * B_dev]`` (regression) or ``[n_dev * B_dev, C]`` (logits).

``embed(params, batch) -> dict[str, array]``
    Per-modality embeddings ``[n_dev * B_dev, d]``.

``param_labels(params) -> pytree of str``
    Same structure as `params`; each leaf names its module group (e.g. ``"encoder/xrd"``,
    ``"head"``). The optimiser maps groups to learning-rate multipliers or freezes them
    (``config.optim.groups``). Default: every leaf is ``"all"``.

Mixed precision: a system reads ``config.train.compute_dtype`` ("float32" | "bfloat16") in its
factory and casts activations itself; parameters and optimiser state stay float32.

Systems are built by factories ``factory(config) -> System`` registered in
`mmjax.systems.SYSTEMS` under ``config.system.name``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

BATCH_STATS = "batch_stats"  # params entry holding non-trainable running statistics
STATE_UPDATES = "_state_updates"  # metrics entry: {BATCH_STATS: new statistics} from a training loss


class System:
    """Base class of all systems; subclasses override `init`, `loss` and usually `predict`/`embed`."""

    name: str = "system"
    modalities: tuple[str, ...] = ()

    def init(self, rng: jax.Array, batch: PyTree) -> PyTree:
        raise NotImplementedError(f"system {self.name!r} does not implement init()")

    def loss(self, params: PyTree, batch: PyTree, rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        raise NotImplementedError(f"system {self.name!r} does not implement loss()")

    def predict(self, params: PyTree, batch: PyTree) -> dict[str, jax.Array]:
        raise NotImplementedError(f"system {self.name!r} has no prediction heads (predict())")

    def embed(self, params: PyTree, batch: PyTree) -> dict[str, jax.Array]:
        raise NotImplementedError(f"system {self.name!r} does not implement embed()")

    def param_labels(self, params: PyTree) -> PyTree:
        """Module-group name of every parameter leaf; the default puts everything in ``"all"``."""
        return jax.tree.map(lambda _: "all", params)


def labels_from_top_level(params: PyTree) -> PyTree:
    """Label each leaf by the first key of its path (``params["encoder"][...] -> "encoder"``).

    A convenience for systems whose top-level parameter dict is already one entry per module
    group (Flax ``{"params": {...}}`` wrappers are looked through).
    """
    tree = params["params"] if isinstance(params, dict) and set(params) == {"params"} else params

    def label(path, _leaf):
        return str(getattr(path[0], "key", getattr(path[0], "name", path[0])))

    labelled = jax.tree_util.tree_map_with_path(label, tree)
    return {"params": labelled} if tree is not params else labelled


def flatten_device_axis(x: jax.Array) -> jax.Array:
    """``[n_dev, B_dev, ...] -> [n_dev * B_dev, ...]`` (the layout losses and heads use)."""
    return jnp.reshape(x, (x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))
