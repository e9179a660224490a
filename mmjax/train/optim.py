"""Optax optimisers and learning-rate schedules built from ``config.optim``.

Schedules (``config.optim.schedule``), with W warm-up steps and T total steps; the warm-up is
linear from ``init_lr`` to ``peak_lr`` over steps [0, W):

* ``"constant"``: ``peak_lr`` after the warm-up.
* ``"cosine"``: ``end_lr + (peak_lr - end_lr) * ½(1 + cos(π (s - W) / (T - W)))`` for s ≥ W,
  ``end_lr`` from T on (optax.warmup_cosine_decay_schedule).
* ``"cyclic"``: PyTorch's triangular ``CyclicLR`` (CrabNet: 1e-4 ↔ 6e-3, half-cycle one epoch):
  with S = ``cycle_half_steps`` (or ``cycle_half_epochs * steps_per_epoch``),
  ``c = floor(1 + s / 2S)``, ``x = |s / S - 2c + 1|``,
  ``lr = cyclic_base_lr + (peak_lr - cyclic_base_lr) * max(0, 1 - x)`` (no warm-up).
* ``"step"``: ``peak_lr * gamma ** (number of milestones <= s)`` (PyTorch MultiStepLR; CGCNN:
  milestones [100] epochs, gamma 0.1), ``milestones`` in steps (or ``milestone_epochs``).

Optimisers (``config.optim.name``): ``"adamw"``; ``"lamb"`` (optax.lamb); ``"crabnet_lamb"``
(the Lamb of CrabNet's utils: Adam moments without bias correction, eps 1e-6 inside, trust ratio
``clip(||w||, 0, 10) / ||adam step||`` per parameter tensor, 1 where either norm is 0; with
``lamb_trust_groups="torch_packed_qkv"`` (the ``"crabnet"`` preset) one ratio over each attention
layer's q/k/v kernels and one over their biases, as over PyTorch's packed ``in_proj_weight`` /
``in_proj_bias``);
``"sgd"`` (PyTorch SGD: L2 ``weight_decay`` added to the gradient, then momentum ``b1``).
``lookahead_k > 0`` wraps any of them in Lookahead (CrabNet's: every k-th step the slow weights
move ``lookahead_alpha`` of the way to the fast ones and the fast ones are reset to them; the slow
weights start as the fast weights at the first sync, k = 6, alpha = 0.5).

W is ``warmup_steps`` if > 0, else ``round(warmup_fraction * T)``, else
``warmup_epochs * steps_per_epoch``. Presets (`optim_config`) give the papers' settings:

* ``"xxact"`` (XxaCT-NN): AdamW, warm-up over 10 % of steps from 1e-6 to 5e-4, cosine to 1e-7,
  b2 = 0.98, weight decay 0.01.
* ``"multimat"`` (MultiMat paper): AdamW lr 1e-4, betas (0.9, 0.95), wd 0.05, 10 warm-up epochs
  (set ``steps_per_epoch``), cosine to 0.
* ``"multimat_code"``: the public code's effective schedule (its second scheduler overwrites the
  first): peak ``1e-4 * 128 / 256 = 5e-5``, cosine to ``0.001 * peak``.
* ``"generic"``: AdamW 1e-3, constant, no decay.

Module groups: ``config.optim.groups`` maps a label from `System.param_labels` to a
learning-rate multiplier; 0 freezes the group (its updates are exactly zero, so neither Adam
nor weight decay touches it). Unlisted labels get multiplier 1. Optional global-norm clipping
(``clip_norm > 0``) is computed over the trainable parameters only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mmjax.systems.base import BATCH_STATS

PyTree = Any

SCHEDULES = ("constant", "cosine", "cyclic", "step")
OPTIMIZERS = ("adamw", "lamb", "crabnet_lamb", "sgd")


def optim_config(preset: str = "generic", **overrides) -> ml_collections.ConfigDict:
    """The ``config.optim`` section for a preset, with keyword overrides applied.

    Every key the builder reads exists here, so a locked config rejects typos.
    """
    cfg = ml_collections.ConfigDict(
        dict(
            name="adamw",
            schedule="constant",
            peak_lr=1e-3,
            init_lr=0.0,
            end_lr=0.0,
            warmup_steps=0,
            warmup_fraction=0.0,
            warmup_epochs=0,
            steps_per_epoch=0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            decay_matrices_only=False,
            clip_norm=0.0,
            cyclic_base_lr=1e-4,
            cycle_half_steps=0,
            cycle_half_epochs=0,
            milestones=(),
            milestone_epochs=(),
            gamma=0.1,
            lookahead_k=0,
            lookahead_alpha=0.5,
            lamb_trust_groups="tensor",
            groups=ml_collections.ConfigDict({}, type_safe=False),
        )
    )
    presets = {
        "generic": {},
        "xxact": dict(schedule="cosine", peak_lr=5e-4, init_lr=1e-6, end_lr=1e-7, warmup_fraction=0.1,
                      b1=0.9, b2=0.98, weight_decay=0.01),
        "multimat": dict(schedule="cosine", peak_lr=1e-4, init_lr=0.0, end_lr=0.0, warmup_epochs=10,
                         b1=0.9, b2=0.95, weight_decay=0.05),
        "multimat_code": dict(schedule="cosine", peak_lr=5e-5, init_lr=0.0, end_lr=5e-8, warmup_epochs=10,
                              b1=0.9, b2=0.95, weight_decay=0.05),
        # CrabNet (model.py fit defaults): Lamb + Lookahead(k 6, alpha 0.5), CyclicLR 1e-4..6e-3 over
        # one epoch up and one down (set steps_per_epoch; `mmjax.eval.crabnet_protocol` sets the
        # half-cycle to its epochs_step, 10 for Table 2), betas (0.9, 0.999), eps 1e-6, no decay;
        # trust ratios over PyTorch's packed attention in-projections
        "crabnet": dict(name="crabnet_lamb", schedule="cyclic", peak_lr=6e-3, cyclic_base_lr=1e-4,
                        cycle_half_epochs=1, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0,
                        lookahead_k=6, lookahead_alpha=0.5, lamb_trust_groups="torch_packed_qkv"),
        # CGCNN (main.py defaults): SGD lr 0.01, momentum 0.9, no decay, MultiStepLR [100] epochs, 0.1
        "cgcnn": dict(name="sgd", schedule="step", peak_lr=0.01, b1=0.9, weight_decay=0.0,
                      milestone_epochs=(100,), gamma=0.1),
    }
    if preset not in presets:
        raise ValueError(f"unknown optimiser preset {preset!r}; known: {sorted(presets)}")
    cfg.update(presets[preset])
    cfg.update(overrides)
    return cfg


def warmup_steps(cfg: ml_collections.ConfigDict, total_steps: int) -> int:
    """Number of linear warm-up steps W implied by ``cfg`` for a run of ``total_steps``."""
    if cfg.warmup_steps > 0:
        return int(cfg.warmup_steps)
    if cfg.warmup_fraction > 0:
        return int(round(cfg.warmup_fraction * total_steps))
    if cfg.warmup_epochs > 0:
        if cfg.steps_per_epoch <= 0:
            raise ValueError("config.optim.warmup_epochs needs config.optim.steps_per_epoch > 0")
        return int(cfg.warmup_epochs * cfg.steps_per_epoch)
    return 0


def _epochs_to_steps(cfg, steps_key: str, epochs_key: str):
    value = cfg.get(steps_key)
    if value:
        return value
    epochs = cfg.get(epochs_key)
    if epochs:
        if cfg.steps_per_epoch <= 0:
            raise ValueError(f"config.optim.{epochs_key} needs config.optim.steps_per_epoch > 0")
        if isinstance(epochs, (tuple, list)):
            return tuple(int(round(e * cfg.steps_per_epoch)) for e in epochs)
        return int(round(epochs * cfg.steps_per_epoch))
    return value


def cyclic_schedule(base_lr: float, max_lr: float, half_cycle_steps: int) -> optax.Schedule:
    """PyTorch ``CyclicLR(mode="triangular")``: base -> max over ``half_cycle_steps``, back down
    over as many, repeated; the rate at step 0 is ``base_lr``."""
    if half_cycle_steps < 1:
        raise ValueError(f"cyclic schedule needs a half-cycle of >= 1 step, got {half_cycle_steps}")

    def schedule(count):
        s = jnp.asarray(count, jnp.float32)
        cycle = jnp.floor(1.0 + s / (2.0 * half_cycle_steps))
        x = jnp.abs(s / half_cycle_steps - 2.0 * cycle + 1.0)
        return base_lr + (max_lr - base_lr) * jnp.maximum(0.0, 1.0 - x)

    return schedule


def build_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Learning rate (float32 scalar) as a function of the optimiser step count."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={cfg.schedule!r}; expected one of {SCHEDULES}")
    if cfg.schedule == "cyclic":
        half = _epochs_to_steps(cfg, "cycle_half_steps", "cycle_half_epochs")
        if not half:
            raise ValueError("config.optim.schedule='cyclic' needs cycle_half_steps or cycle_half_epochs > 0")
        return cyclic_schedule(cfg.cyclic_base_lr, cfg.peak_lr, int(half))
    if cfg.schedule == "step":
        marks = tuple(int(m) for m in (_epochs_to_steps(cfg, "milestones", "milestone_epochs") or ()))
        if any(m < 1 for m in marks) or list(marks) != sorted(marks):
            raise ValueError(f"config.optim.milestones must be increasing positive steps, got {marks}")
        if not marks:
            return optax.constant_schedule(cfg.peak_lr)
        return optax.piecewise_constant_schedule(cfg.peak_lr, {m: cfg.gamma for m in marks})
    w = warmup_steps(cfg, total_steps)
    if w >= total_steps and cfg.schedule == "cosine":
        raise ValueError(f"warm-up ({w} steps) must be shorter than the run ({total_steps} steps)")
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=cfg.init_lr, peak_value=cfg.peak_lr, warmup_steps=w,
            decay_steps=total_steps, end_value=cfg.end_lr)
    if w == 0:
        return optax.constant_schedule(cfg.peak_lr)
    return optax.join_schedules(
        [optax.linear_schedule(cfg.init_lr, cfg.peak_lr, w), optax.constant_schedule(cfg.peak_lr)], [w])


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
    return lambda count: factor * schedule(count)


def build_optimizer(
    cfg: ml_collections.ConfigDict, total_steps: int, labels: PyTree | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (per-group multipliers, frozen groups, optional clipping) and its base schedule.

    Args:
      cfg: ``config.optim``.
      total_steps: run length T (sets the schedule's horizon).
      labels: pytree of str with the structure of the parameters (`System.param_labels`),
        or None to treat all parameters as one group ``"all"``.
    Returns:
      ``(tx, schedule)``; ``schedule(step)`` is the multiplier-1 learning rate.
    """
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"config.optim.name={cfg.name!r}; expected one of {OPTIMIZERS}")
    rates = ("peak_lr", "init_lr", "end_lr") + (("cyclic_base_lr",) if cfg.schedule == "cyclic" else ())
    bad = next((k for k in rates if not (math.isfinite(float(cfg[k])) and cfg[k] >= 0)), None)  # NaN fails too
    if bad is not None:
        raise ValueError(f"config.optim.{bad}={cfg[bad]}: learning rates must be finite and >= 0")
    if not (math.isfinite(float(cfg.get("weight_decay", 0.0))) and cfg.get("weight_decay", 0.0) >= 0):
        raise ValueError(f"config.optim.weight_decay={cfg.weight_decay}: must be finite and >= 0")
    if cfg.get("lookahead_k", 0) < 0 or not 0.0 <= cfg.get("lookahead_alpha", 0.5) <= 1.0:
        raise ValueError(f"config.optim.lookahead_k={cfg.lookahead_k} must be >= 0 and lookahead_alpha="
                         f"{cfg.lookahead_alpha} in [0, 1]")
    schedule = build_schedule(cfg, total_steps)
    groups = dict(cfg.groups.to_dict()) if cfg.groups is not None else {}
    present = sorted(set(jax.tree.leaves(labels))) if labels is not None else ["all"]
    unknown = sorted(set(groups) - set(present))
    if unknown:
        raise ValueError(f"config.optim.groups names {unknown}, which are not parameter groups of this system "
                         f"(groups: {present})")
    if BATCH_STATS in groups:
        raise ValueError(f"config.optim.groups.{BATCH_STATS}: BatchNorm running statistics are not trained "
                         "(the forward pass sets them); remove the entry")
    # running statistics: never moved by the optimiser (the train step writes them)
    mult = {g: 0.0 if g == BATCH_STATS else float(groups.get(g, 1.0)) for g in present}
    for g, m in mult.items():
        if m < 0:
            raise ValueError(f"config.optim.groups.{g}={m}: multipliers must be >= 0 (0 freezes the group)")

    decay_mask: Callable | None = None
    if cfg.decay_matrices_only:
        decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731

    def base(m: float) -> optax.GradientTransformation:
        lr = _scaled(schedule, m)
        if cfg.name == "lamb":
            return optax.lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
        if cfg.name == "crabnet_lamb":
            return crabnet_lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                trust_groups=cfg.get("lamb_trust_groups", "tensor"))
        if cfg.name == "sgd":
            return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                               optax.sgd(lr, momentum=cfg.b1 if cfg.b1 > 0 else None))
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)

    label_fn = (lambda params: labels) if labels is not None else (lambda params: jax.tree.map(lambda _: "all", params))
    per_group = {g: (optax.set_to_zero() if m == 0.0 else base(m)) for g, m in mult.items()}
    tx = optax.multi_transform(per_group, label_fn)
    if cfg.clip_norm > 0:
        zero_frozen = optax.multi_transform(
            {g: (optax.set_to_zero() if m == 0.0 else optax.identity()) for g, m in mult.items()}, label_fn)
        tx = optax.chain(zero_frozen, optax.clip_by_global_norm(cfg.clip_norm), tx)
    if cfg.get("lookahead_k", 0) > 0:
        tx = lookahead(tx, int(cfg.lookahead_k), float(cfg.lookahead_alpha))
    return tx, schedule


class CrabNetLambState(NamedTuple):
    count: jax.Array
    mu: PyTree
    nu: PyTree


TRUST_GROUPS = ("tensor", "torch_packed_qkv")


def trust_group(path, mode: str = "tensor") -> str:
    """The tensor group a Lamb trust ratio is computed over, for the parameter at ``path``.

    ``"tensor"``: every parameter array alone. ``"torch_packed_qkv"``: as PyTorch holds a
    self-attention layer (``nn.MultiheadAttention``: one ``in_proj_weight`` [3D, D] and one
    ``in_proj_bias`` [3D] for the query, key and value projections), the ``query`` / ``key`` /
    ``value`` kernels of one attention module form one group and their biases another; every
    other array is alone. CrabNet's Lamb sees the packed tensors, so its trust ratio is shared.
    """
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if mode == "torch_packed_qkv" and len(names) >= 2 and names[-2] in ("query", "key", "value"):
        return "/".join(names[:-2] + [f"in_proj_{names[-1]}"])
    if mode not in TRUST_GROUPS:
        raise ValueError(f"config.optim.lamb_trust_groups={mode!r}; expected one of {TRUST_GROUPS}")
    return "/".join(names)


def crabnet_lamb(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                 weight_decay: float = 0.0, trust_groups: str = "tensor") -> optax.GradientTransformation:
    """Lamb exactly as CrabNet's ``utils.Lamb.step`` (see the module docstring); per leaf:
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``, ``a = m / (√v + eps) + wd·w``,
    ``update = -lr · r · a`` with ``r = clip(‖w‖, 0, 10) / ‖a‖`` (1 if either norm is 0), the
    norms taken over the leaf's `trust_group` (``trust_groups``: "tensor" = the leaf alone;
    "torch_packed_qkv" = a self-attention layer's q/k/v projections together, as PyTorch packs
    them)."""
    trust_group("", trust_groups)  # an unknown mode fails here, when the optimiser is built

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return CrabNetLambState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("crabnet_lamb needs the parameters (trust ratio)")
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        steps = jax.tree.map(lambda m, v, w: m / (jnp.sqrt(v) + eps) + weight_decay * w, mu, nu, params)
        with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
        labels = [trust_group(path, trust_groups) for path, _ in with_path]
        ws, steps_l = [w for _, w in with_path], treedef.flatten_up_to(steps)
        wsq: dict[str, Any] = {}
        asq: dict[str, Any] = {}
        for lab, w, a in zip(labels, ws, steps_l):
            wsq[lab] = wsq[lab] + jnp.sum(w * w) if lab in wsq else jnp.sum(w * w)
            asq[lab] = asq[lab] + jnp.sum(a * a) if lab in asq else jnp.sum(a * a)
        ratio = {}
        for lab in wsq:
            wn, an = jnp.clip(jnp.sqrt(wsq[lab]), 0.0, 10.0), jnp.sqrt(asq[lab])
            ratio[lab] = jnp.where((wn == 0) | (an == 0), 1.0, wn / jnp.where(an == 0, 1.0, an))
        updates = treedef.unflatten([(-lr * ratio[lab] * a).astype(w.dtype) for lab, w, a in zip(labels, ws, steps_l)])
        return updates, CrabNetLambState(state.count + 1, mu, nu)

    return optax.GradientTransformation(init, update)


class LookaheadState(NamedTuple):
    inner: Any
    slow: PyTree
    step: jax.Array
    has_slow: jax.Array


def lookahead(inner: optax.GradientTransformation, k: int = 6, alpha: float = 0.5) -> optax.GradientTransformation:
    """CrabNet's ``Lookahead`` around ``inner``: after every k-th inner step the slow weights move
    ``slow += alpha (fast - slow)`` and the fast weights are set to them; the slow weights are
    created (as a copy of the fast ones) at the first sync, so that sync leaves the weights as
    they are. The returned update is ``target - params``. State: inner state, slow weights,
    step counter, whether the slow weights exist."""
    if k < 1:
        raise ValueError(f"lookahead k must be >= 1, got {k}")

    def init(params):
        return LookaheadState(inner.init(params), jax.tree.map(jnp.array, params), jnp.zeros([], jnp.int32),
                              jnp.zeros([], bool))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("lookahead needs the parameters")
        u, inner_state = inner.update(grads, state.inner, params)
        step = state.step + 1
        sync = (step % k) == 0
        first = sync & ~state.has_slow

        def leaf(p, du, slow):
            fast = p + du
            base = jnp.where(first, fast, slow)
            new_slow = base + alpha * (fast - base)
            target = jnp.where(sync, new_slow, fast)
            return (target - p).astype(p.dtype), jnp.where(sync, new_slow, slow).astype(slow.dtype)

        pairs = jax.tree.map(leaf, params, u, state.slow)
        treedef = jax.tree.structure(params)
        flat = treedef.flatten_up_to(pairs)
        updates = treedef.unflatten([a for a, _ in flat])
        slow = treedef.unflatten([b for _, b in flat])
        return updates, LookaheadState(inner_state, slow, step, state.has_slow | sync)

    return optax.GradientTransformation(init, update)
