"""Helpers every multimodal system shares: device-axis layout, encoder application, masks,
temperature parameters, and a generic system skeleton (heads and the supervised loss:
`mmjax.systems.supervised`).

Layout (see `mmjax.data.schema`): every Batch leaf carries a leading device axis
``[n_dev, B_dev, ...]``. Systems work on the flattened layout ``[N, ...]`` with
``N = n_dev * B_dev`` (row ``d * B_dev + b`` is slot b of device d). Dense modalities are
reshaped (`flatten_device_axis`); graph encoders run once per device micro-batch (`jax.vmap`
over the device axis of the stacked ``GraphsTuple``) and their per-graph rows are flattened the
same way, the trailing padding graph of each micro-batch dropped (`apply_graph_encoder`).

Masks: ``slot_mask(batch)`` is ``slot_valid`` ``[N]``; ``modality_mask(batch, m)`` is
``slot_valid & present[m]`` ``[N]`` (a modality missing from ``present`` counts as present on
every valid slot). Every loss here and in the systems honours them.

Parameters: a `MultimodalSystem` keeps one flat dict of Flax parameter trees,
``{"encoder_<m>", "projection_<m>", "head", <extra modules>, "temperature"}``; its
`param_labels` are those top-level keys, so ``config.optim.groups`` can freeze e.g.
``encoder_crystal`` (probe) or scale ``encoder_text``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import ml_collections

from mmjax.data import modalities
from mmjax.objectives.temperature import DEFAULT_MAX_TEMPERATURE, DEFAULT_MIN_TEMPERATURE, temperature_from_log
from mmjax.nn import make_encoder
from mmjax.nn.batch_norm import GRAPH_BATCH_AXIS
from mmjax.systems.base import BATCH_STATS, STATE_UPDATES, System, flatten_device_axis, labels_from_top_level
from mmjax.systems.masks import modality_mask, modality_masks
from mmjax.systems.supervised import (build_heads, canonical_outputs, check_losses, head_outputs, head_widths,
                                     supervised_loss)

PyTree = Any

STAGES = ("pretrain", "finetune")

# --------------------------------------------------------------------------------------------
# layout


def flatten_tree(tree: PyTree) -> PyTree:
    """`flatten_device_axis` on every leaf: ``[n_dev, B, ...] -> [n_dev * B, ...]``."""
    return jax.tree.map(flatten_device_axis, tree)


def device_slice(tree: PyTree, index: int = 0) -> PyTree:
    """Leaf-wise ``x[index]``: one device's micro-batch (e.g. to initialise a graph encoder)."""
    return jax.tree.map(lambda x: x[index], tree)


def apply_graph_encoder(apply_fn: Callable[[jraph.GraphsTuple], jax.Array], graph: jraph.GraphsTuple) -> jax.Array:
    """Run a per-micro-batch graph encoder on a device-stacked ``GraphsTuple``.

    Args:
      apply_fn: ``GraphsTuple (one device: n_node [B + 1]) -> [B, d]`` (or ``[B + 1, d]``, in which
        case the last row, the padding graph, is dropped here).
      graph: leaves with a leading device axis, ``n_node`` int32 ``[n_dev, B + 1]``.
    Returns:
      float ``[n_dev * B, d]``, row ``d * B + b`` = slot b of device d; where ``apply_fn`` returns
      ``(rows, aux)`` (a Flax apply with mutable ``batch_stats``), ``(that, aux)``.

    The device axis is vmapped as `mmjax.nn.batch_norm.GRAPH_BATCH_AXIS`, so BatchNorm statistics
    are those of the whole batch. With one device (one slice) the encoder runs on that slice
    directly, outside any vmap (BatchNorm's statistics are then the slice's, the same numbers):
    vmapping a size-1 axis turns every gather and segment sum into a batched one, which XLA:CPU
    runs ~3x slower (paper CGCNN training step, batch 256 on 5-atom perovskites: 195 -> 67 ms on a
    2-core Xeon; README, "Training command against the original code").
    """
    if graph.n_node.ndim != 2:
        raise ValueError(f"expected a device-stacked GraphsTuple with n_node [n_dev, B + 1], got n_node "
                         f"shape {graph.n_node.shape}")
    n_graph = graph.n_node.shape[1]
    if graph.n_node.shape[0] == 1:
        out = jax.tree.map(lambda x: x[None], apply_fn(device_slice(graph)))
    else:
        out = jax.vmap(apply_fn, axis_name=GRAPH_BATCH_AXIS)(graph)
    if isinstance(out, tuple):  # (rows, updated batch_stats): identical on every device slice (psum-ed)
        rows, aux = out
        return _trim_graph_rows(rows, n_graph), jax.tree.map(lambda x: x[0], aux)
    return _trim_graph_rows(out, n_graph)


def _trim_graph_rows(out: jax.Array, n_graph: int) -> jax.Array:
    if out.ndim != 3:
        raise ValueError(f"graph encoder must return [graphs, d] per device, got {out.shape[1:]}")
    if out.shape[1] == n_graph:
        out = out[:, :-1]
    elif out.shape[1] != n_graph - 1:
        raise ValueError(f"graph encoder returned {out.shape[1]} rows for {n_graph} graphs (B + 1 with padding)")
    return flatten_device_axis(out)


# --------------------------------------------------------------------------------------------
# applying encoders to a Batch


def _accepts(module: nn.Module, arg: str) -> bool:
    return arg in inspect.signature(type(module).__call__).parameters


def modality_inputs(batch: Mapping[str, Any], modality: str) -> tuple:
    """Positional encoder inputs for ``modality``, flattened to ``[N, ...]`` (graphs stay stacked).

    crystal -> (GraphsTuple [n_dev, ...],); composition -> (atomic_numbers [N, M], fractions
    [N, M], mask [N, M]); dos -> (energies [N, L], densities [N, L], mask [N, L]);
    xrd [N, L], text [N, D], charge_density [N, X, Y, Z] -> (array,).
    """
    if modality not in batch:
        raise KeyError(f"modality {modality!r} is not in the batch (it has {sorted(k for k in batch if k not in ('slot_valid', 'present', 'targets', 'target_mask'))})")
    x = batch[modality]
    if _is_graph(modality):
        return (x,)
    keys = _modality(modality).encoder_inputs if _modality(modality) is not None else ()
    if keys:
        return tuple(flatten_device_axis(x[k]) for k in keys)
    return (flatten_device_axis(x),)


def _modality(name: str):
    """The data layer's declaration of modality ``name`` (`mmjax.data.modalities`), or None for a
    name only a system's batch carries."""
    return modalities.get(name) if name in modalities.known() else None


def _is_graph(name: str) -> bool:
    m = _modality(name)
    return m is not None and m.graph_budget


def encode_modality(module: nn.Module | None, params: PyTree, modality: str, batch: Mapping[str, Any], *,
                    train: bool = False, rng: jax.Array | None = None, stats: PyTree | None = None,
                    stats_out: dict | None = None) -> jax.Array:
    """``module`` applied to ``batch[modality]`` -> float32 ``[N, d]``.

    ``module=None`` is the identity on a dense input (e.g. frozen, precomputed text embeddings).
    Modules whose ``__call__`` takes ``deterministic`` get ``deterministic=not train`` and a
    ``"dropout"`` rng when training. Graph encoders are vmapped over the device axis.
    ``stats``: the module's ``batch_stats`` collection (BatchNorm running statistics), if it has
    one; in training their updated values are written to ``stats_out[modality]``.
    """
    args = modality_inputs(batch, modality)
    if module is None:
        if _modality(modality) is not None and not _modality(modality).dense_key:
            raise ValueError(f"modality {modality!r} needs an encoder (it is not a dense vector)")
        return args[0].astype(jnp.float32)
    kwargs = {}
    if _accepts(module, "deterministic"):
        kwargs["deterministic"] = not train
    rngs = {"dropout": rng} if (train and rng is not None) else {}
    variables = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    mutable = ["batch_stats"] if (stats is not None and train) else False

    def apply(*xs):
        out = module.apply(variables, *xs, rngs=rngs, mutable=mutable, **kwargs)
        return (out[0], out[1]["batch_stats"]) if mutable else out

    out = apply_graph_encoder(apply, args[0]) if _is_graph(modality) else apply(*args)
    if mutable:
        out, new_stats = out
        if stats_out is not None:
            stats_out[modality] = new_stats
    return out.astype(jnp.float32)


def init_modality_variables(module: nn.Module, rng: jax.Array, modality: str, batch: Mapping[str, Any]) -> dict:
    """All Flax variables of ``module`` for ``batch[modality]`` (``params``, and ``batch_stats``
    where it has BatchNorm); graphs are initialised on device 0's micro-batch."""
    args = modality_inputs(batch, modality)
    if _is_graph(modality):
        args = (device_slice(args[0]),)
    return dict(module.init({"params": rng, "dropout": rng}, *args))


def init_modality(module: nn.Module, rng: jax.Array, modality: str, batch: Mapping[str, Any]) -> PyTree:
    """Parameters of ``module`` for ``batch[modality]`` (graphs: initialised on device 0's micro-batch)."""
    return init_modality_variables(module, rng, modality, batch)["params"]


# --------------------------------------------------------------------------------------------
# temperature


def init_temperature(value: float) -> dict[str, jax.Array]:
    """``{"log_temperature": log(value)}`` (float32 scalar): the learnable-temperature parameter."""
    if not value > 0:
        raise ValueError(f"temperature must be > 0, got {value}")
    return {"log_temperature": jnp.asarray(math.log(value), jnp.float32)}


def temperature_value(params: Mapping[str, jax.Array] | None, fixed: float,
                      min_temperature: float = DEFAULT_MIN_TEMPERATURE,
                      max_temperature: float = DEFAULT_MAX_TEMPERATURE) -> jax.Array:
    """The contrastive temperature tau: ``clip(exp(log_temperature))`` if learnable (params given),
    else the constant ``fixed``. float32 scalar."""
    if params is None:
        return jnp.asarray(fixed, jnp.float32)
    return temperature_from_log(params["log_temperature"], min_temperature, max_temperature)


# --------------------------------------------------------------------------------------------
# generic multimodal system


def _zeros_like_output(fn: Callable, *args) -> jax.Array:
    """Zeros with the shape/dtype ``fn(*args)`` would return (evaluated abstractly, no compute)."""
    out = jax.eval_shape(fn, *args)
    return jnp.zeros(out.shape, out.dtype)


class MultimodalSystem(System):
    """Encoders (+ optional projections) per modality, optional heads, and a pretraining objective.

    Subclasses set ``name`` and implement ``pretrain_loss(params, latents, masks, rng, train)``
    returning ``(loss, metrics)``; they may add modules in ``extra_modules`` (initialised by
    ``init_extra``). ``latents`` are the projected per-modality embeddings ``{m: [N, d]}`` of the
    modalities that are both configured and in the batch; ``masks`` are
    `modality_mask` ``[N]``. A configured modality absent from a Batch counts as missing on every
    row (no parameters are created for it).

    Args:
      encoders: ``{modality: nn.Module or None}`` (None: identity on a dense, frozen input).
      projections: ``{modality: nn.Module}`` applied after the encoder (optional per modality).
      stage: ``"pretrain"`` (loss = the objective) or ``"finetune"`` (loss = `supervised_loss` of
        the heads; combine with ``config.optim.groups`` to freeze encoders for a probe).
      targets: ``{name: outputs}`` for the heads (needed for ``finetune`` and ``predict``): 1 for
        a scalar regression target, the class count, or ``(d,)`` for a d-component vector target.
      head_inputs: modalities whose representations are concatenated as the head input.
      head_source: ``"encoder"`` (encoder output) or ``"latent"`` (after the projection).
      head_hidden: hidden widths of each head MLP (``()`` = linear head).
      target_losses: ``{regression target: "mse" | "l1" | "huber" | "robust_l1"}`` (default
        MSE); a ``robust_l1`` head has two outputs (prediction, log sigma) and ``predict``
        returns ``name + "/log_sigma"`` beside ``name``.
    """

    name = "multimodal"

    def __init__(self, encoders: Mapping[str, nn.Module | None], projections: Mapping[str, nn.Module] | None = None,
                 *, stage: str = "pretrain", targets: Mapping[str, int] | None = None,
                 head_inputs: Sequence[str] = ("crystal",), head_source: str = "encoder",
                 head_hidden: Sequence[int] = (), target_weights: Mapping[str, float] | None = None,
                 target_losses: Mapping[str, str] | None = None):
        if stage not in STAGES:
            raise ValueError(f"config.system.stage={stage!r}; expected one of {STAGES}")
        if head_source not in ("encoder", "latent"):
            raise ValueError(f"head_source must be 'encoder' or 'latent', got {head_source!r}")
        self.encoders = dict(encoders)
        self.projections = dict(projections or {})
        unknown = sorted(set(self.projections) - set(self.encoders))
        if unknown:
            raise ValueError(f"projections for modalities without an encoder: {unknown}")
        self.modalities = tuple(self.encoders)
        self.stage = stage
        self.targets = canonical_outputs(targets)
        self.head_inputs = tuple(head_inputs)
        missing = [m for m in self.head_inputs if m not in self.encoders]
        if missing:
            raise ValueError(f"head_inputs {missing} are not modalities of this system {self.modalities}")
        self.head_source = head_source
        self.losses = check_losses(target_losses, self.targets)
        self.head = build_heads(head_widths(self.targets, self.losses), head_hidden) if self.targets else None
        self.target_weights = dict(target_weights or {})
        if stage == "finetune" and not self.targets:
            raise ValueError("stage 'finetune' needs config.system.targets ({name: outputs})")

    # -- which modalities a batch has
    def active_modalities(self, batch: Mapping[str, Any]) -> tuple[str, ...]:
        """Configured modalities that the batch carries (static: depends on the pytree structure)."""
        return tuple(m for m in self.modalities if m in batch)

    # -- init
    def init_extra(self, rng: jax.Array, latents: Mapping[str, jax.Array]) -> dict[str, PyTree]:
        """Parameters of subclass modules (predictors, temperature ...), given example latents."""
        return {}

    def init(self, rng, batch):
        params: dict[str, PyTree] = {}
        reps, latents = {}, {}
        keys = iter(jax.random.split(rng, 4 * len(self.modalities) + 4))
        for m in self.active_modalities(batch):
            enc = self.encoders[m]
            if enc is not None:
                variables = init_modality_variables(enc, next(keys), m, batch)
                params[f"encoder_{m}"] = variables["params"]
                if "batch_stats" in variables:
                    params.setdefault(BATCH_STATS, {})[f"encoder_{m}"] = variables["batch_stats"]
            # Later modules are initialised on zeros of the right shape: no second forward pass.
            reps[m] = _zeros_like_output(lambda p, b, e=enc, m=m: encode_modality(e, p, m, b, stats=_stats(params, m)),
                                         params.get(f"encoder_{m}"), batch)
            if m in self.projections:
                params[f"projection_{m}"] = self.projections[m].init(next(keys), reps[m])["params"]
                latents[m] = _zeros_like_output(
                    lambda p, x, m=m: self.projections[m].apply({"params": p}, x), params[f"projection_{m}"], reps[m])
            else:
                latents[m] = reps[m]
        if self.head is not None:
            params["head"] = self.head.init(next(keys), self._head_input(reps, latents, batch))["params"]
        params.update(self.init_extra(next(keys), latents))
        return params

    # -- forward
    def represent(self, params, batch, *, train: bool = False, rng=None, stats_out: dict | None = None):
        """``(encoder outputs {m: [N, d_enc]}, latents {m: [N, d]})`` for the active modalities.
        In training, encoders with BatchNorm write their updated statistics to ``stats_out[m]``."""
        reps, latents = {}, {}
        active = self.active_modalities(batch)
        rngs = jax.random.split(rng, max(len(active), 1)) if rng is not None else [None] * len(active)
        for m, r in zip(active, rngs):
            reps[m] = encode_modality(self.encoders[m], params.get(f"encoder_{m}"), m, batch, train=train, rng=r,
                                      stats=_stats(params, m), stats_out=stats_out)
            if m in self.projections:
                latents[m] = self.projections[m].apply({"params": params[f"projection_{m}"]}, reps[m])
            else:
                latents[m] = reps[m]
        return reps, latents

    def _head_input(self, reps, latents, batch):
        source = reps if self.head_source == "encoder" else latents
        missing = [m for m in self.head_inputs if m not in source]
        if missing:
            raise KeyError(f"{self.name}: head inputs {missing} are not in the batch")
        parts = []
        for m in self.head_inputs:
            # a missing modality contributes zeros (its encoder output on an empty slot is arbitrary)
            parts.append(jnp.where(modality_mask(batch, m)[:, None], source[m], 0.0))
        return jnp.concatenate(parts, axis=-1)

    def head_rows(self, batch) -> jax.Array:
        """bool ``[N]``: slots where at least one head input modality is present. Only these rows
        count in the supervised loss and metrics, and `predict` gives NaN elsewhere (a material
        lacking every modality its head reads has no prediction, not the head's bias)."""
        rows = modality_mask(batch, self.head_inputs[0])
        for m in self.head_inputs[1:]:
            rows = rows | modality_mask(batch, m)
        return rows

    def embed(self, params, batch):
        """Per-modality latents ``{m: [N, d]}`` (the shared space used by the objective)."""
        return self.represent(params, batch)[1]

    def predict(self, params, batch):
        """``{target: [N] or [N, C]}`` from the heads."""
        if self.head is None:
            raise NotImplementedError(f"system {self.name!r} has no heads: set config.system.targets")
        reps, latents = self.represent(params, batch)
        raw = self.head.apply({"params": params["head"]}, self._head_input(reps, latents, batch))
        rows = self.head_rows(batch)
        return {k: jnp.where(rows.reshape(rows.shape + (1,) * (v.ndim - 1)), v, jnp.nan)
                for k, v in head_outputs(raw, self.targets, self.losses).items()}

    def pretrain_loss(self, params, latents, masks, rng, train):
        raise NotImplementedError

    def loss(self, params, batch, rng, train):
        rng_enc, rng_obj = jax.random.split(rng)
        new_stats: dict = {}
        reps, latents = self.represent(params, batch, train=train, rng=rng_enc, stats_out=new_stats)
        if self.stage == "finetune":
            raw = self.head.apply({"params": params["head"]}, self._head_input(reps, latents, batch))
            loss, metrics = supervised_loss(head_outputs(raw, self.targets, self.losses), batch, self.targets,
                                            self.target_weights, self.losses, rows=self.head_rows(batch))
        else:
            masks = modality_masks(batch, tuple(latents))
            loss, metrics = self.pretrain_loss(params, latents, masks, rng_obj, train)
            for m, mask in masks.items():
                metrics[f"present/{m}"] = jnp.sum(mask).astype(jnp.float32)
        if new_stats:
            # the train step puts these in place of params[BATCH_STATS] (`mmjax.systems.base`)
            metrics = dict(metrics, **{STATE_UPDATES: {BATCH_STATS: {
                f"encoder_{m}": new_stats.get(m, params[BATCH_STATS][f"encoder_{m}"])
                for m in (k.removeprefix("encoder_") for k in params[BATCH_STATS])}}})
        return loss, metrics

    def param_labels(self, params):
        return labels_from_top_level(params)


def _stats(params: Mapping[str, Any], modality: str) -> PyTree | None:
    """The ``batch_stats`` of ``modality``'s encoder in a system's params, or None."""
    return params.get(BATCH_STATS, {}).get(f"encoder_{modality}")


def config_dict(value: Any) -> dict:
    """A plain dict from a ConfigDict / mapping / None (for ``config.system.targets`` etc.)."""
    if value is None:
        return {}
    if isinstance(value, ml_collections.ConfigDict):
        return value.to_dict()
    return dict(value)


def encoder_overrides(system_config: ml_collections.ConfigDict, modality: str) -> dict:
    """``config.system.encoder_overrides[modality]`` as a dict of encoder keyword arguments
    (e.g. ``{"xrd": {"group_blocks": (1, 1)}}``); empty when not set."""
    table = config_dict(system_config.get("encoder_overrides", None))
    out = table.get(modality, {}) or {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(out).items()}


def configured_encoder(system_config: ml_collections.ConfigDict, modality: str, default: str, small: bool,
                       dtype, **defaults):
    """The encoder of ``modality``, named by the config: ``encoder_overrides[modality]["name"]`` (a
    `mmjax.nn.ENCODERS` or ``PAPER_CONFIGS`` key) replaces the system's ``default``; the other
    override keys are its keyword arguments. ``defaults`` (the system's wiring of its default
    encoder, e.g. MultiMat's ``out_dim=latent_dim``) apply to the default encoder only: a named
    one gets ``dtype``, the ``small`` preset and the overrides, and must produce what the system
    consumes (e.g. the latent width where a system has no projection)."""
    over = encoder_overrides(system_config, modality)
    name = over.pop("name", default)
    kwargs = {"dtype": dtype, **(defaults if name == default else {}), **over}
    try:
        return make_encoder(name, small, **kwargs)
    except KeyError as err:
        raise ValueError(f"config.system.encoder_overrides.{modality}.name={name!r}: {err.args[0]}") from None


def compute_dtype(config: ml_collections.ConfigDict):
    """``config.train.compute_dtype`` as a jnp dtype (float32 when absent)."""
    train = config.get("train", None)
    return jnp.dtype(train.get("compute_dtype", "float32") if train is not None else "float32")
