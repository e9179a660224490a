"""The sharded train step: 8 devices give the same loss and parameters as 1 device."""

import jax
import numpy as np
import pytest

from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.data import SyntheticBatches
from mmjax.train.loop import build_engine
from mmjax.train.state import init_state
from mmjax.train.step import make_train_step


def run(config, mesh, host_batches):
    system = build_system(config)
    eng = build_engine(system, config, host_batches[0], mesh)
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    losses = []
    for hb in host_batches:
        state, metrics = step(state, mesh_lib.host_to_global(hb, mesh))
        losses.append(float(metrics["loss"]))
    return state, losses, eng


def test_eight_devices_equal_one_device(toy_config):
    assert jax.device_count() == 8
    toy_config.system.dropout = 0.2  # exercises the per-step key under sharding
    src = SyntheticBatches(n_devices=8, batch_per_device=2, length=8, seed=3)
    batches8 = [src.batch(k) for k in range(3)]
    # The same global rows on one device: [8, 2, L] -> [1, 16, L].
    batches1 = [jax.tree.map(lambda x: x.reshape((1, -1) + x.shape[2:]), b) for b in batches8]

    state1, losses1, _ = run(toy_config, mesh_lib.make_mesh(jax.devices()[:1]), batches1)
    toy_config.mesh.param_sharding = "fsdp"
    toy_config.mesh.fsdp_min_size = 64
    state8, losses8, eng8 = run(toy_config, mesh_lib.make_mesh(), batches8)

    # FSDP really sharded the 8x16 first-layer kernel over "data" (its 16-wide axis).
    kernel_sharding = eng8["shardings"].params["encoder"]["Dense_0"]["kernel"]
    assert kernel_sharding.spec == jax.sharding.PartitionSpec(None, "data")
    assert state8.params["encoder"]["Dense_0"]["kernel"].sharding.spec == kernel_sharding.spec

    assert losses1[0] > 0 and len(set(losses1)) == 3
    np.testing.assert_allclose(losses8, losses1, rtol=1e-6, atol=1e-6)
    flat1, flat8 = jax.tree.leaves(jax.device_get(state1)), jax.tree.leaves(jax.device_get(state8))
    assert len(flat1) == len(flat8)
    for a, b in zip(flat1, flat8):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    assert int(state8.step) == 3 and int(state8.bad_step) == -1


def test_host_to_global_rejects_missing_device_axis():
    mesh = mesh_lib.make_mesh()
    with pytest.raises(ValueError, match="local-device axis of size 8"):
        mesh_lib.host_to_global({"x": np.zeros((4, 3), np.float32)}, mesh)


def test_leaf_sharding_rules():
    mesh = mesh_lib.make_mesh()
    P = jax.sharding.PartitionSpec
    assert mesh_lib.leaf_sharding((512, 256), mesh, "replicate").spec == P()
    assert mesh_lib.leaf_sharding((512, 256), mesh, "fsdp", 1024).spec == P("data", None)
    assert mesh_lib.leaf_sharding((10, 24), mesh, "fsdp", 16).spec == P(None, "data")
    assert mesh_lib.leaf_sharding((10, 7), mesh, "fsdp", 16).spec == P()  # nothing divisible by 8
    assert mesh_lib.leaf_sharding((128, 256), mesh, "fsdp").spec == P()  # below the default 2**16
    with pytest.raises(ValueError, match="param_sharding"):
        mesh_lib.leaf_sharding((8,), mesh, "zero3")


def test_bf16_compute_keeps_fp32_master_weights(toy_config):
    toy_config.train.compute_dtype = "bfloat16"
    system = build_system(toy_config)
    src = SyntheticBatches(n_devices=8, batch_per_device=2, length=8)
    eng = build_engine(system, toy_config, next(src), mesh_lib.make_mesh())
    dtypes = {x.dtype for x in jax.tree.leaves(eng["abstract"].params)}
    assert dtypes == {np.dtype("float32")}
    # Activations really run in bf16: the encoder output (embedding) is computed in bf16.
    hidden = jax.eval_shape(lambda p, b: system.net.apply({"params": p}, b["xrd"].reshape(16, 8), False,
                                                          method=lambda m, x, t: m.encoder(x, t)),
                            eng["abstract"].params, eng["example"])
    assert hidden.dtype == np.dtype("bfloat16")
    loss, _ = jax.eval_shape(lambda p, b: system.loss(p, b, jax.random.PRNGKey(0), True), eng["abstract"].params,
                             eng["example"])
    assert loss.dtype == np.dtype("float32")
