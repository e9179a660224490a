"""Schedules against their closed forms; frozen groups, multipliers and clipping against hand-computed Adam steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.train.optim import build_optimizer, build_schedule, optim_config, warmup_steps


def xxact_reference(step: int, total: int) -> float:
    """XxaCT-NN: linear 1e-6 -> 5e-4 over 10 % of the steps, then cosine to 1e-7 (plain Python)."""
    w = round(0.1 * total)
    if step < w:
        return 1e-6 + (5e-4 - 1e-6) * step / w
    t = min(step - w, total - w) / (total - w)
    return 1e-7 + (5e-4 - 1e-7) * 0.5 * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 101, 550, 999, 1000, 1200])
def test_xxact_schedule_matches_formula(step):
    cfg = optim_config("xxact")
    assert (cfg.b2, cfg.weight_decay) == (0.98, 0.01)
    sched = build_schedule(cfg, 1000)
    np.testing.assert_allclose(float(sched(step)), xxact_reference(step, 1000), rtol=1e-5, atol=5e-10)  # float32: atol = 1e-6 x peak


def test_schedule_key_points():
    sched = build_schedule(optim_config("xxact"), 1000)
    assert float(sched(0)) == pytest.approx(1e-6, rel=1e-5)
    assert float(sched(100)) == pytest.approx(5e-4, rel=1e-5)  # peak right after warm-up
    assert float(sched(1000)) == pytest.approx(1e-7, rel=1e-4)


def test_multimat_warmup_epochs_then_cosine():
    cfg = optim_config("multimat", steps_per_epoch=7)
    assert warmup_steps(cfg, 700) == 70
    sched = build_schedule(cfg, 700)
    assert float(sched(35)) == pytest.approx(0.5e-4, rel=1e-5)
    assert float(sched(70)) == pytest.approx(1e-4, rel=1e-5)
    assert float(sched(385)) == pytest.approx(0.5e-4, rel=1e-4)  # half-way through the cosine
    with pytest.raises(ValueError, match="steps_per_epoch"):
        warmup_steps(optim_config("multimat"), 700)


def test_constant_with_warmup():
    sched = build_schedule(optim_config(schedule="constant", peak_lr=2e-3, warmup_steps=4), 100)
    assert [round(float(sched(s)), 7) for s in (0, 2, 4, 90)] == [0.0, 1e-3, 2e-3, 2e-3]


PARAMS = {"encoder": {"w": jnp.array([1.0, -2.0, 3.0])}, "head": {"w": jnp.array([0.5, 0.25])}}
LABELS = {"encoder": {"w": "encoder"}, "head": {"w": "head"}}
GRADS = {"encoder": {"w": jnp.array([30.0, -40.0, 0.0])}, "head": {"w": jnp.array([0.3, -0.4])}}


def run_steps(cfg, n, grads=GRADS):
    tx, _ = build_optimizer(cfg, total_steps=10, labels=LABELS)
    params, state = PARAMS, tx.init(PARAMS)
    for _ in range(n):
        upd, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, upd)
    return params


def test_frozen_group_untouched_even_with_weight_decay():
    cfg = optim_config(peak_lr=0.1, weight_decay=0.5, groups={"encoder": 0.0})
    out = run_steps(cfg, 3)
    np.testing.assert_array_equal(out["encoder"]["w"], PARAMS["encoder"]["w"])
    assert np.all(np.abs(np.asarray(out["head"]["w"] - PARAMS["head"]["w"])) > 1e-3)


def test_lr_multiplier_scales_first_adam_step():
    # First AdamW step, no decay: update = -lr * m * g / (|g| + eps) (bias-corrected moments).
    eps = 1.0
    cfg = optim_config(peak_lr=0.1, eps=eps, groups={"head": 0.5})
    out = run_steps(cfg, 1)
    for name, m in (("encoder", 1.0), ("head", 0.5)):
        g = np.asarray(GRADS[name]["w"])
        expected = np.asarray(PARAMS[name]["w"]) - 0.1 * m * g / (np.abs(g) + eps)
        np.testing.assert_allclose(out[name]["w"], expected, rtol=1e-6)


def test_clipping_ignores_frozen_gradients():
    # Trainable grad norm 0.5 < clip 1: no clipping, although the frozen group's grad norm is 50.
    eps = 1.0
    cfg = optim_config(peak_lr=0.1, eps=eps, clip_norm=1.0, groups={"encoder": 0.0})
    out = run_steps(cfg, 1)
    g = np.asarray(GRADS["head"]["w"])
    np.testing.assert_allclose(out["head"]["w"], np.asarray(PARAMS["head"]["w"]) - 0.1 * g / (np.abs(g) + eps),
                               rtol=1e-6)
    # With a clip below the trainable norm, the head's gradient is scaled to norm 0.25.
    out = run_steps(optim_config(peak_lr=0.1, eps=eps, clip_norm=0.25, groups={"encoder": 0.0}), 1)
    gc = g * 0.25 / 0.5
    np.testing.assert_allclose(out["head"]["w"], np.asarray(PARAMS["head"]["w"]) - 0.1 * gc / (np.abs(gc) + eps),
                               rtol=1e-6)


def test_unknown_group_and_bad_schedule_rejected():
    with pytest.raises(ValueError, match="encodr"):
        build_optimizer(optim_config(groups={"encodr": 0.0}), 10, LABELS)
    with pytest.raises(ValueError, match="schedule"):
        build_schedule(optim_config(schedule="linear"), 10)
    with pytest.raises(ValueError, match="preset"):
        optim_config("adam-ish")


def test_default_labels_single_group():
    tx, sched = build_optimizer(optim_config(peak_lr=0.1), 10)
    state = tx.init(PARAMS)
    upd, _ = tx.update(GRADS, state, PARAMS)
    g = np.asarray(GRADS["head"]["w"])
    np.testing.assert_allclose(upd["head"]["w"], -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-5)
    assert float(sched(5)) == pytest.approx(0.1)
    assert jax.tree.structure(upd) == jax.tree.structure(PARAMS)
