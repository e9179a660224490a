"""Shared system helpers: device-axis layout, per-device graph encoding, masks, heads, temperature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from systems_helpers import first_batch, make_dataset, set_present

from mmjax.nn.graph import graph_masks, segment_mean_pool
from mmjax.systems import common, masks, supervised

N_REC = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("common_store"), N_REC, ("crystal", "xrd", "text"),
                        missing={"text": (2, 5), "crystal": (6,)}, seed=3)


def _records(dataset):
    return [dataset[i] for i in range(N_REC)]


def _mean_z_encoder(graph):
    """Per-graph mean atomic number [G - 1, 1] (a parameter-free 'encoder')."""
    node_mask, _, node_graph = graph_masks(graph)
    z = graph.nodes["atomic_numbers"].astype(jnp.float32)[:, None]
    return segment_mean_pool(z, node_mask, node_graph, graph.n_node.shape[0])[0]


@pytest.mark.parametrize("n_dev", [1, 4])
def test_graph_encoder_per_device_matches_records(dataset, n_dev):
    batch = first_batch(dataset, N_REC, n_dev)
    assert batch["crystal"].n_node.shape == (n_dev, N_REC // n_dev + 1)
    out = np.asarray(common.apply_graph_encoder(_mean_z_encoder, batch["crystal"]))
    assert out.shape == (N_REC, 1)
    for i, rec in enumerate(_records(dataset)):
        expected = rec["crystal/atomic_numbers"].mean() if "crystal/atomic_numbers" in rec else 0.0
        np.testing.assert_allclose(out[i, 0], expected, rtol=1e-6)


def test_graph_encoder_with_padding_row_is_dropped(dataset):
    batch = first_batch(dataset, N_REC, 2)

    def with_pad_row(g):  # returns [G, 1]: the padding graph's row too
        return jnp.concatenate([_mean_z_encoder(g), jnp.full((1, 1), -1.0)], axis=0)

    a = common.apply_graph_encoder(with_pad_row, batch["crystal"])
    b = common.apply_graph_encoder(_mean_z_encoder, batch["crystal"])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="n_node"):
        common.apply_graph_encoder(_mean_z_encoder, common.device_slice(batch["crystal"]))


def test_one_device_runs_outside_the_vmap_with_the_same_values_stats_and_grads(dataset):
    """n_dev = 1 skips the graph-batch vmap (a speed path); BatchNorm CGCNN outputs, updated running
    statistics and parameter gradients equal the vmapped form's."""
    from mmjax.nn import make_encoder
    from mmjax.nn.batch_norm import GRAPH_BATCH_AXIS

    graph = first_batch(dataset, N_REC, 1)["crystal"]
    model = make_encoder("cgcnn", small=True, norm="batch")
    variables = model.init(jax.random.key(0), common.device_slice(graph))

    def apply_fn(params):
        def f(g):
            out, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, g,
                                   deterministic=False, mutable=["batch_stats"])
            return out[:-1] if out.shape[0] == g.n_node.shape[0] else out, upd["batch_stats"]
        return f

    def loss_direct(params):
        rows, stats = common.apply_graph_encoder(apply_fn(params), graph)
        return jnp.sum(jnp.sin(rows)), (rows, stats)

    def loss_vmapped(params):
        rows, stats = jax.vmap(apply_fn(params), axis_name=GRAPH_BATCH_AXIS)(graph)
        return jnp.sum(jnp.sin(rows[0])), (rows[0], jax.tree.map(lambda x: x[0], stats))

    (la, (ra, sa)), ga = jax.value_and_grad(loss_direct, has_aux=True)(variables["params"])
    (lb, (rb, sb)), gb = jax.value_and_grad(loss_vmapped, has_aux=True)(variables["params"])
    assert ra.shape == (N_REC, rb.shape[-1])
    np.testing.assert_allclose(np.asarray(ra), np.asarray(rb), rtol=1e-5, atol=1e-6)
    for tree_a, tree_b in ((sa, sb), (ga, gb)):
        for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.asarray(jax.tree.leaves(sa)[0]), 0.0)  # the statistics did move


def test_dense_flatten_and_masks(dataset):
    batch = first_batch(dataset, N_REC, 4)
    xrd = np.asarray(common.modality_inputs(batch, "xrd")[0])
    assert xrd.shape == (N_REC, 32)
    for i, rec in enumerate(_records(dataset)):
        np.testing.assert_array_equal(xrd[i], rec["xrd"])
    np.testing.assert_array_equal(np.asarray(masks.modality_mask(batch, "text")),
                                  [i not in (2, 5) for i in range(N_REC)])
    np.testing.assert_array_equal(np.asarray(masks.modality_mask(batch, "crystal")), [i != 6 for i in range(N_REC)])
    # a padding slot is never "present": 6 records in 8 slots
    small = first_batch(dataset, 8, 2)
    small = dict(small, slot_valid=np.array(small["slot_valid"]))
    small["slot_valid"][1, 3] = False
    assert not bool(masks.modality_mask(small, "xrd")[7])
    assert int(masks.modality_mask(set_present(batch, "xrd", [0, 1]), "xrd").sum()) == N_REC - 2


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_supervised_loss_matches_numpy(dataset):
    batch = first_batch(dataset, N_REC, 2)
    rng = np.random.default_rng(0)
    preds = {"gap": rng.normal(size=N_REC).astype(np.float32),
             "crystal_system": rng.normal(size=(N_REC, 7)).astype(np.float32)}
    outputs = {"gap": 1, "crystal_system": 7}
    loss, metrics = supervised.supervised_loss({k: jnp.asarray(v) for k, v in preds.items()}, batch, outputs,
                                           weights={"gap": 2.0})
    recs = _records(dataset)
    gap = np.array([r["target/gap"] for r in recs])
    lab = np.isfinite(gap)
    assert lab.sum() == N_REC - 1  # record 3 (i % 5 == 3) has a NaN label: unlabelled
    mse = np.mean((preds["gap"][lab] - gap[lab]) ** 2)
    cls = np.array([r["label/crystal_system"] for r in recs])
    ce = -np.mean(_np_log_softmax(preds["crystal_system"])[np.arange(N_REC), cls])
    np.testing.assert_allclose(float(metrics["gap/mse"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["crystal_system/ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(loss), (2 * mse + ce) / 3, rtol=1e-5)
    acc = np.mean(preds["crystal_system"].argmax(-1) == cls)
    np.testing.assert_allclose(float(metrics["crystal_system/accuracy"]), acc)


def test_supervised_loss_without_labels_is_zero_with_finite_grads(dataset):
    batch = first_batch(dataset, N_REC, 1)
    batch = dict(batch, target_mask={k: np.zeros_like(v) for k, v in batch["target_mask"].items()})
    # NaN-free labels are required by the pipeline; an unlabelled row's label value must not matter
    batch["targets"] = dict(batch["targets"], gap=np.full_like(batch["targets"]["gap"], 1e30))

    def f(p):
        return supervised.supervised_loss({"gap": p}, batch, {"gap": 1})[0]

    p = jnp.ones(N_REC)
    assert float(f(p)) == 0.0
    assert np.all(np.isfinite(np.asarray(jax.grad(f)(p))))


def test_temperature_helpers():
    p = common.init_temperature(0.07)
    np.testing.assert_allclose(float(p["log_temperature"]), math.log(0.07), rtol=1e-6)
    np.testing.assert_allclose(float(common.temperature_value(p, 1.0)), 0.07, rtol=1e-6)
    assert float(common.temperature_value(None, 0.2)) == pytest.approx(0.2)
    # clipped below at 0.01 (logit scale <= 100), gradient 0 there
    low = {"log_temperature": jnp.asarray(math.log(1e-4))}
    assert float(common.temperature_value(low, 1.0)) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        common.init_temperature(0.0)


def test_heads_shapes_and_errors():
    heads = supervised.build_heads({"gap": 1, "crystal_system": 7})
    x = jnp.ones((5, 4))
    params = heads.init(jax.random.PRNGKey(0), x)["params"]
    out = supervised.head_outputs(heads.apply({"params": params}, x), {"gap": 1, "crystal_system": 7})
    assert out["gap"].shape == (5,) and out["crystal_system"].shape == (5, 7)
    with pytest.raises(ValueError, match="gap"):
        supervised.build_heads({"gap": 0})
