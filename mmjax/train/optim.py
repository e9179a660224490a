"""Optax optimisers and learning-rate schedules built from ``config.optim``.

Schedules (``config.optim.schedule``), with W warm-up steps and T total steps; the warm-up is
linear from ``init_lr`` to ``peak_lr`` over steps [0, W):

* ``"constant"``: ``peak_lr`` after the warm-up.
* ``"cosine"``: ``end_lr + (peak_lr - end_lr) * ½(1 + cos(π (s - W) / (T - W)))`` for s ≥ W,
  ``end_lr`` from T on (optax.warmup_cosine_decay_schedule).

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

from typing import Any, Callable

import jax
import ml_collections
import optax

PyTree = Any

SCHEDULES = ("constant", "cosine")


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


def build_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Learning rate (float32 scalar) as a function of the optimiser step count."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={cfg.schedule!r}; expected one of {SCHEDULES}")
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
    if cfg.name != "adamw":
        raise ValueError(f"config.optim.name={cfg.name!r}; only 'adamw' is implemented")
    schedule = build_schedule(cfg, total_steps)
    groups = dict(cfg.groups.to_dict()) if cfg.groups is not None else {}
    present = sorted(set(jax.tree.leaves(labels))) if labels is not None else ["all"]
    unknown = sorted(set(groups) - set(present))
    if unknown:
        raise ValueError(f"config.optim.groups names {unknown}, which are not parameter groups of this system "
                         f"(groups: {present})")
    mult = {g: float(groups.get(g, 1.0)) for g in present}
    for g, m in mult.items():
        if m < 0:
            raise ValueError(f"config.optim.groups.{g}={m}: multipliers must be >= 0 (0 freezes the group)")

    decay_mask: Callable | None = None
    if cfg.decay_matrices_only:
        decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731

    def adamw(m: float) -> optax.GradientTransformation:
        return optax.adamw(_scaled(schedule, m), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask)

    label_fn = (lambda params: labels) if labels is not None else (lambda params: jax.tree.map(lambda _: "all", params))
    per_group = {g: (optax.set_to_zero() if m == 0.0 else adamw(m)) for g, m in mult.items()}
    tx = optax.multi_transform(per_group, label_fn)
    if cfg.clip_norm > 0:
        zero_frozen = optax.multi_transform(
            {g: (optax.set_to_zero() if m == 0.0 else optax.identity()) for g, m in mult.items()}, label_fn)
        tx = optax.chain(zero_frozen, optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx, schedule
