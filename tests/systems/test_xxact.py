"""XxaCT-NN system: objective wiring against NumPy, overfitting a fixed batch, 1 vs 8 devices, groups."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from xxact_helpers import (first_batch, make_dataset, numpy_info_nce, numpy_log_softmax, reshape_devices,
                           tiny_xxact_config)

MODS = ("composition", "xrd")
TARGETS = ("y", "crystal_system", "space_group")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("xxact_ds"), n=32)


@pytest.fixture(scope="module")
def batch8(dataset):
    """16 slots on 8 devices (2 each); record 3 has no label for y."""
    return first_batch(dataset, 16, 8, MODS, TARGETS)


def flat_np(x):
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])


def test_space_group_labels_are_zero_based(dataset, batch8):
    raw = np.array([dataset.record(i, ["label/space_group"])["label/space_group"] for i in range(16)])
    np.testing.assert_array_equal(flat_np(batch8["targets"]["space_group"]), raw - 1)


def test_clip_and_supervised_terms_match_numpy(batch8):
    """With dropout off, the CLIP term is NumPy InfoNCE of embed()'s [CLS]s at tau = 0.07, and the
    all-task supervised term is the pooled MSE / CE of predict()'s outputs."""
    config = tiny_xxact_config({"clip": 1.0})
    system = build_system(config)
    params = jax.jit(system.init)(jax.random.PRNGKey(0), batch8)
    loss, metrics = jax.jit(system.loss, static_argnums=3)(params, batch8, jax.random.PRNGKey(1), False)
    emb = jax.tree.map(np.asarray, jax.jit(system.embed)(params, batch8))
    assert emb["composition"].shape == (16, 16) and emb["fused"].shape == (16, 16)
    ref = numpy_info_nce(emb["composition"].astype(np.float64), emb["xrd"].astype(np.float64), 0.07)
    assert float(loss) == pytest.approx(ref, rel=1e-4)
    assert float(metrics["temperature"]) == pytest.approx(0.07, rel=1e-6)

    config = tiny_xxact_config({"supervised": 1.0})
    config.system.task_sampling = "all"
    system = build_system(config)
    loss, metrics = jax.jit(system.loss, static_argnums=3)(params, batch8, jax.random.PRNGKey(1), False)
    pred = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.jit(system.predict)(params, batch8))
    assert pred["y"].shape == (16,) and pred["crystal_system"].shape == (16, 7)
    assert pred["space_group"].shape == (16, 230)
    terms = []
    for name in TARGETS:
        mask = flat_np(batch8["target_mask"][name]) & flat_np(batch8["slot_valid"])
        y = flat_np(batch8["targets"][name])[mask]
        if name == "y":
            terms.append((pred[name][mask] - y) ** 2)
        else:
            terms.append(-numpy_log_softmax(pred[name][mask])[np.arange(len(y)), y])
    assert float(loss) == pytest.approx(float(np.mean(np.concatenate(terms))), rel=1e-4)
    assert float(metrics["y/n"]) == 13  # 16 slots, records 3 and 8 have no y label (i % 5 == 3)


def test_overfits_a_fixed_batch_with_all_terms(dataset):
    batch = first_batch(dataset, 8, 1, MODS, TARGETS)
    config = tiny_xxact_config({"supervised": 1.0, "mxm": 1.0, "clip": 0.5})
    system = build_system(config)
    params = system.init(jax.random.PRNGKey(0), batch)
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    rng = jax.random.PRNGKey(3)  # fixed: same masks / sampled tasks every step -> a fixed objective

    @jax.jit
    def step(params, opt):
        (loss, metrics), grads = jax.value_and_grad(system.loss, has_aux=True)(params, batch, rng, True)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss, metrics, grads

    losses = []
    for i in range(25):
        params, opt, loss, metrics, grads = step(params, opt)
        if i == 0:
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
            assert float(optax.global_norm(grads)) > 0
            assert {"supervised", "mxm", "clip", "temperature"} <= set(metrics)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


def test_loss_and_grads_equal_on_one_and_eight_devices(batch8):
    """Same global batch and key: the jitted loss/grads on 8 devices (batch sharded over "data",
    global CLIP negatives) equal those on 1 device; masking and task sampling included."""
    config = tiny_xxact_config({"supervised": 1.0, "mxm": 1.0, "clip": 1.0})
    system = build_system(config)
    params = system.init(jax.random.PRNGKey(0), batch8)
    rng = jax.random.PRNGKey(7)

    def run(batch, devices):
        mesh = mesh_lib.make_mesh(devices)
        gb = mesh_lib.host_to_global(batch, mesh)
        fn = jax.jit(jax.value_and_grad(lambda p, b: system.loss(p, b, rng, True), has_aux=True))
        (loss, metrics), grads = fn(params, gb)
        return jax.device_get((loss, metrics, grads))

    loss8, m8, g8 = run(batch8, jax.devices()[:8])
    loss1, m1, g1 = run(reshape_devices(batch8, 1), jax.devices()[:1])
    assert float(m8["mxm"]) > 0 and float(m8["clip"]) > 0
    np.testing.assert_allclose(loss8, loss1, rtol=2e-5)
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_padding_slots_do_not_change_the_loss(dataset):
    """8 real slots vs the same 8 plus 8 padding slots: equal loss (eval mode, all terms)."""
    config = tiny_xxact_config({"supervised": 1.0, "mxm": 1.0, "clip": 1.0})
    config.system.task_sampling = "all"
    system = build_system(config)
    small = first_batch(dataset.subset(np.arange(8)), 8, 1, MODS, TARGETS)
    padded = first_batch(dataset.subset(np.arange(8)), 16, 1, MODS, TARGETS)
    assert padded["slot_valid"].sum() == 8 and padded["slot_valid"].shape == (1, 16)
    params = system.init(jax.random.PRNGKey(0), small)
    # MXM masks are drawn per row: use a mask ratio of 1 so both layouts score every token.
    system.mask_ratio = 1.0
    a, _ = system.loss(params, small, jax.random.PRNGKey(2), False)
    b, _ = system.loss(params, padded, jax.random.PRNGKey(2), False)
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_param_groups_and_config_errors(batch8):
    config = tiny_xxact_config({"supervised": 1.0})
    system = build_system(config)
    params = jax.eval_shape(system.init, jax.random.PRNGKey(0), batch8)
    labels = set(jax.tree.leaves(system.param_labels(params)))
    assert labels == {"encoder_composition", "encoder_xrd", "fusion", "head", "mxm_head", "temperature"}
    bad = tiny_xxact_config({"supervised": 1.0})
    bad.objective.terms.supervised = 0.0
    with pytest.raises(ValueError, match="positive weight"):
        build_system(bad)
    with pytest.raises(KeyError, match="'xrd'"):
        system.loss(params, {k: v for k, v in batch8.items() if k != "xrd"}, jax.random.PRNGKey(0), False)
