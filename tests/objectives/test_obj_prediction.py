"""MXM, X-MoPA cross-modal prediction, and supervised / multi-task losses vs NumPy."""

import jax
import numpy as np
import pytest

from mmjax.objectives import (
    cross_modal_prediction,
    masked_cross_entropy,
    masked_mae,
    masked_mse,
    masked_xrd_loss,
    multitask_loss,
    sample_task,
    sample_token_mask,
)

RNG = np.random.default_rng(0)


def test_masked_xrd_loss_matches_numpy():
    pred, target = RNG.normal(size=(2, 4, 3, 5)).astype(np.float32)
    token_mask = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]], bool)
    per_sample = []
    for b in range(4):
        toks = [np.mean((pred[b, t] - target[b, t]) ** 2) for t in range(3) if token_mask[b, t]]
        if toks:
            per_sample.append(np.mean(toks))
    np.testing.assert_allclose(jax.jit(masked_xrd_loss)(pred, target, token_mask),
                               np.mean(per_sample), rtol=1e-6)
    sample_mask = np.array([1, 1, 0, 1], bool)
    np.testing.assert_allclose(masked_xrd_loss(pred, target, token_mask, sample_mask),
                               np.mean([per_sample[0], per_sample[2]]), rtol=1e-6)
    val, g = jax.value_and_grad(masked_xrd_loss)(pred, target, np.zeros((4, 3), bool))
    assert float(val) == 0.0 and np.all(np.asarray(g) == 0.0)
    with pytest.raises(ValueError, match="token_mask must be"):
        masked_xrd_loss(pred, target, token_mask[:, :2])


def test_sample_token_mask():
    sample = jax.jit(sample_token_mask, static_argnums=(1, 2, 3, 4))
    key = jax.random.key(3)
    m = sample(key, 64, 17)  # 5 % of 17 tokens -> exactly 1 per sample
    assert m.shape == (64, 17) and m.dtype == bool
    assert np.all(np.sum(m, axis=1) == 1)
    np.testing.assert_array_equal(m, sample(key, 64, 17))  # deterministic
    assert not np.array_equal(m, sample(jax.random.key(4), 64, 17))
    assert len(set(np.argmax(np.asarray(m), axis=1))) > 5  # positions vary over the batch
    m = sample(key, 8, 100, 0.2)
    assert np.all(np.sum(m, axis=1) == 20)
    m = sample(key, 256, 17, 0.05, False)
    counts = np.sum(np.asarray(m), axis=1)
    assert counts.min() >= 1 and counts.max() >= 2  # Bernoulli, forced to at least one


def test_cross_modal_prediction_matches_numpy_and_masks():
    names = ("graph", "text", "xrd")
    preds = {m: RNG.normal(size=(5, 3)).astype(np.float32) for m in names}
    tgts = {m: RNG.normal(size=(5, 3)).astype(np.float32) for m in names}
    present = {"graph": np.ones(5, bool), "text": np.array([1, 1, 0, 1, 1], bool),
               "xrd": np.array([1, 0, 1, 1, 1], bool)}
    valid = present["text"] & present["xrd"]
    want = sum(np.mean(np.sum((preds[m] - tgts[m]) ** 2, axis=1)[valid]) for m in names)
    np.testing.assert_allclose(jax.jit(cross_modal_prediction)(preds, tgts, present), want, rtol=1e-6)
    want_mean = sum(np.mean(np.mean((preds[m] - tgts[m]) ** 2, axis=1)[valid]) for m in names)
    np.testing.assert_allclose(cross_modal_prediction(preds, tgts, present, reduction="mean"),
                               want_mean, rtol=1e-6)
    # one sampled target per sample
    idx = np.array([0, 1, 2, 2, 0])
    want_idx = sum(np.mean(np.sum((preds[m] - tgts[m]) ** 2, axis=1)[valid & (idx == t)])
                   for t, m in enumerate(names) if np.any(valid & (idx == t)))
    np.testing.assert_allclose(cross_modal_prediction(preds, tgts, present, target_index=idx),
                               want_idx, rtol=1e-6)
    # stop-gradient on targets: no gradient to them; default: gradient flows (= -grad wrt preds)
    g_free = jax.grad(cross_modal_prediction, argnums=(0, 1))(preds, tgts, present)
    g_stop = jax.grad(lambda p, t: cross_modal_prediction(p, t, present, stop_gradient_targets=True),
                      argnums=(0, 1))(preds, tgts)
    np.testing.assert_allclose(g_free[1]["xrd"], -np.asarray(g_free[0]["xrd"]), rtol=1e-6)
    assert np.all(np.asarray(g_stop[1]["xrd"]) == 0.0) and np.any(np.asarray(g_stop[0]["xrd"]) != 0)


def test_supervised_losses_with_nan_labels():
    pred = RNG.normal(size=6).astype(np.float32)
    labels = RNG.normal(size=6).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    labels[~mask] = np.nan  # a missing label must not leak NaN into loss or gradient
    np.testing.assert_allclose(masked_mse(pred, labels, mask),
                               np.mean((pred[mask] - labels[mask]) ** 2), rtol=1e-6)
    np.testing.assert_allclose(masked_mae(pred, labels, mask),
                               np.mean(np.abs(pred[mask] - labels[mask])), rtol=1e-6)
    assert np.all(np.isfinite(jax.grad(masked_mse)(pred, labels, mask)))
    logits = RNG.normal(size=(6, 4)).astype(np.float32)
    cls = np.array([0, 3, 1, 2, 2, 1])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(masked_cross_entropy(logits, cls, mask),
                               -np.mean(logp[np.arange(6), cls][mask]), rtol=1e-6)
    assert float(masked_mse(pred, labels, np.zeros(6, bool))) == 0.0


def test_sample_task_and_multitask_loss():
    names = ("formation_energy", "crystal_system")
    idx = sample_task(jax.random.key(0), names, batch_size=4000)
    counts = np.bincount(np.asarray(idx), minlength=2)
    assert counts.sum() == 4000 and abs(counts[0] - 2000) < 150  # uniform (6 sigma ~ 190)
    assert sample_task(jax.random.key(0), names).shape == ()
    preds = {"formation_energy": RNG.normal(size=5).astype(np.float32),
             "crystal_system": RNG.normal(size=(5, 7)).astype(np.float32)}
    labels = {"formation_energy": RNG.normal(size=5).astype(np.float32),
              "crystal_system": np.array([0, 6, 2, 3, 1], np.int32)}
    lmask = {"formation_energy": np.array([1, 1, 1, 0, 1], bool), "crystal_system": np.ones(5, bool)}
    kinds = {"formation_energy": "mae", "crystal_system": "ce"}
    task = np.array([0, 1, 1, 0, 0])
    lp = preds["crystal_system"] - np.log(np.exp(preds["crystal_system"]).sum(1, keepdims=True))
    per = [abs(preds["formation_energy"][0] - labels["formation_energy"][0]),
           -lp[1, 6], -lp[2, 2],  # example 3's sampled label is missing: not counted
           abs(preds["formation_energy"][4] - labels["formation_energy"][4])]
    got = jax.jit(lambda p, y, m, t: multitask_loss(p, y, m, kinds, names, t))(preds, labels, lmask, task)
    np.testing.assert_allclose(got, np.mean(per), rtol=1e-6)
    with pytest.raises(ValueError, match="task 'band_gap' missing"):
        multitask_loss(preds, labels, lmask, kinds, ("band_gap",), task)
