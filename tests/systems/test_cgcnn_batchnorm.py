"""CGCNN with BatchNorm (the reference's norm) through the real train step: running statistics
set by the forward pass (never by the optimiser), 8 devices equal 1, evaluation on the running
statistics, a loss that still overfits."""

import jax
import numpy as np
import pytest
from xxact_helpers import first_batch, load_config, make_dataset

from mmjax.systems import build_system
from mmjax.systems.base import BATCH_STATS, STATE_UPDATES
from mmjax.train import mesh as mesh_lib
from mmjax.train.loop import build_engine
from mmjax.train.state import init_state
from mmjax.train.step import make_eval_step, make_train_step


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cgcnn_bn_ds"), n=16)


def bn_config():
    c = load_config("cgcnn")
    c.system.encoder.update(dict(atom_fea_len=8, n_conv=2, h_fea_len=8, element_table="", norm="batch"))
    c.system.head_hidden = ()
    c.data.targets = ("y",)
    # SGD, not Adam, for the equality of 8 devices and 1: the conv bias before BatchNorm has an
    # exactly-zero gradient in exact arithmetic (BatchNorm removes any shift), and Adam turns
    # its ~1e-9 rounding residue into +-lr steps that differ with the reduction order.
    c.optim.name, c.optim.b1, c.optim.decay_matrices_only = "sgd", 0.9, False
    c.optim.weight_decay = 0.1  # would shrink the statistics if the optimiser touched them
    return c


def run(config, mesh, host_batches):
    system = build_system(config)
    eng = build_engine(system, config, host_batches[0], mesh)
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    states, losses = [jax.device_get(state)], []
    for hb in host_batches:
        state, metrics = step(state, mesh_lib.host_to_global(hb, mesh))
        states.append(jax.device_get(state))
        losses.append(float(metrics["loss"]))
    return system, states, losses, eng


def test_running_statistics_come_from_the_forward_pass_and_eight_devices_equal_one(dataset):
    config = bn_config()
    b8 = first_batch(dataset, 16, 8, ("crystal",), ("y",))
    b1 = first_batch(dataset, 16, 1, ("crystal",), ("y",))
    system, s1, losses1, _ = run(config, mesh_lib.make_mesh(jax.devices()[:1]), [b1, b1, b1])
    _, s8, losses8, eng8 = run(config, mesh_lib.make_mesh(), [b8, b8, b8])

    assert set(s1[0].params[BATCH_STATS]) == {"encoder_crystal"}
    assert set(jax.tree.leaves(system.param_labels(s1[0].params))) == {"encoder_crystal", "head", BATCH_STATS}
    # each step's new statistics are exactly what the training loss computed from the step's
    # starting parameters (momentum update of the batch statistics), untouched by AdamW's decay
    for before, after in zip(s1[:-1], s1[1:]):
        _, metrics = jax.jit(system.loss, static_argnums=3)(before.params, b1, jax.random.key(0), True)
        for want, got in zip(jax.tree.leaves(metrics[STATE_UPDATES][BATCH_STATS]),
                             jax.tree.leaves(after.params[BATCH_STATS])):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    var0 = s1[0].params[BATCH_STATS]["encoder_crystal"]["conv_0"]["norm_edge"]["var"]
    var3 = s1[-1].params[BATCH_STATS]["encoder_crystal"]["conv_0"]["norm_edge"]["var"]
    np.testing.assert_array_equal(var0, 1.0)
    assert np.abs(var3 - 1.0).max() > 1e-3

    np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1[-1].params), jax.tree.leaves(s8[-1].params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    # evaluation uses the running statistics: not the training-mode loss of the same parameters
    mesh = mesh_lib.make_mesh()
    eval_step = make_eval_step(system, eng8["shardings"].params, mesh)
    ev = eval_step(s8[-1].params, mesh_lib.host_to_global(b8, mesh), jax.random.key(0))
    tr, _ = jax.jit(system.loss, static_argnums=3)(s8[-1].params, b8, jax.random.key(0), True)
    assert abs(float(ev["loss"]) - float(tr)) > 1e-4


def test_batchnorm_cgcnn_overfits_and_predicts_from_the_running_statistics(dataset):
    config = bn_config()
    config.optim.name, config.optim.peak_lr, config.optim.weight_decay = "adamw", 1e-2, 0.0
    config.train.steps = 60
    batch = first_batch(dataset, 16, 1, ("crystal",), ("y",))
    _, states, losses, _ = run(config, mesh_lib.make_mesh(jax.devices()[:1]), [batch] * 60)
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    system = build_system(config)
    pred = jax.jit(system.predict)(states[-1].params, batch)["y"]
    stale = dict(states[-1].params, **{BATCH_STATS: states[0].params[BATCH_STATS]})
    assert np.abs(np.asarray(jax.jit(system.predict)(stale, batch)["y"]) - np.asarray(pred)).max() > 1e-3
