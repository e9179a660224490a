"""Graph encoders: CGCNN conv vs NumPy, padding invariance, traces, bf16, PotNet edges."""

import chex
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from nn_helpers import init_and_apply, init_params, pad_batch, random_graph

from mmjax.nn import make_encoder
from mmjax.nn.graph import CGCNNConv, graph_masks


def _softplus(x):
    return np.logaddexp(x, 0.0)


def _layer_norm(x, scale, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _numpy_cgcnn_conv(p, v, u, senders, receivers, edge_mask, norm):
    """CGCNN ConvLayer equations in plain NumPy with an explicit loop over edges."""
    a = v.shape[1]
    out_sum = np.zeros_like(v)
    W, b = np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)
    for e in range(len(senders)):
        if not edge_mask[e]:
            continue
        i, j = senders[e], receivers[e]
        g = np.concatenate([v[i], v[j], u[e]]) @ W + b
        if norm:
            g = _layer_norm(g, np.asarray(p["norm_edge"]["scale"]), np.asarray(p["norm_edge"]["bias"]))
        filt, core = g[:a], g[a:]
        out_sum[i] += 1 / (1 + np.exp(-filt)) * _softplus(core)
    if norm:
        out_sum = _layer_norm(out_sum, np.asarray(p["norm_node"]["scale"]), np.asarray(p["norm_node"]["bias"]))
    return _softplus(v + out_sum)


def test_cgcnn_conv_matches_numpy():
    rng = np.random.default_rng(0)
    n, e, a, k = 5, 12, 6, 7
    v = rng.normal(size=(n, a)).astype(np.float32)
    u = rng.uniform(size=(e, k)).astype(np.float32)
    senders = rng.integers(0, n, e).astype(np.int32)
    receivers = rng.integers(0, n, e).astype(np.int32)
    edge_mask = rng.uniform(size=e) > 0.2
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    p = {"kernel": 0.3 * f32(2 * a + k, 2 * a), "bias": 0.1 * f32(2 * a),
         "norm_edge": {"scale": 1 + 0.1 * f32(2 * a), "bias": 0.1 * f32(2 * a)},
         "norm_node": {"scale": 1 + 0.1 * f32(a), "bias": 0.1 * f32(a)}}
    for norm, form in (("layer", "factored"), ("none", "factored"), ("layer", "full"), ("none", "full")):
        conv = CGCNNConv(norm=norm, conv_form=form)
        pn = p if norm == "layer" else {"kernel": p["kernel"], "bias": p["bias"]}
        assert jax.tree.structure(jax.eval_shape(conv.init, jax.random.key(0), v, u, senders, receivers,
                                                 edge_mask)["params"]) == jax.tree.structure(pn)
        got = jax.jit(conv.apply)({"params": pn}, v, u, senders, receivers, edge_mask)
        ref = _numpy_cgcnn_conv(pn, v.astype(np.float64), u.astype(np.float64), senders, receivers, edge_mask,
                                norm == "layer")
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_full_and_factored_conv_forms_agree_in_batchnorm_training():
    """The paper CGCNN (BatchNorm, training mode) with z_ij @ W per edge ("full", as the reference
    computes it) equals the factored form: outputs, updated running statistics, gradients."""
    rng = np.random.default_rng(4)
    g = pad_batch([random_graph(rng, n, 3) for n in (2, 4, 3)], 12, 40, 4)
    enc = {f: make_encoder("cgcnn", small=True, norm="batch", conv_form=f) for f in ("factored", "full")}
    variables = enc["factored"].init(jax.random.key(0), g)
    res = {}
    for form, model in enc.items():
        def loss(params):
            out, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, g,
                                   deterministic=False, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), (out, upd)
        (_, (out, upd)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        res[form] = (out, upd, grads)
    for a, b in zip(jax.tree.leaves(res["factored"]), jax.tree.leaves(res["full"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-5)
    with pytest.raises(ValueError, match="conv_form"):
        make_encoder("cgcnn", small=True, conv_form="dense").init(jax.random.key(0), g)


def test_graph_masks_follow_atomic_numbers():
    rng = np.random.default_rng(1)
    g = pad_batch([random_graph(rng, 3, 2), random_graph(rng, 2, 2)], n_node=8, n_edge=12, n_graph=3)
    node_mask, edge_mask, node_graph = jax.jit(graph_masks)(g)
    np.testing.assert_array_equal(node_mask, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(edge_mask, [1] * 10 + [0, 0])
    np.testing.assert_array_equal(node_graph, [0, 0, 0, 1, 1, 2, 2, 2])


GRAPH_ENCODERS = ["cgcnn", "matbind_gcn", "potnet"]


@pytest.mark.parametrize("name", GRAPH_ENCODERS)
def test_graph_encoder_padding_invariance_traces_and_bf16(name):
    rng = np.random.default_rng(2)
    potnet = name == "potnet"
    graphs = [random_graph(rng, n, 3, potnet=potnet) for n in (2, 4, 3)]
    n_node = sum(int(g.n_node.sum()) for g in graphs)
    n_edge = sum(int(g.n_edge.sum()) for g in graphs)
    tight = pad_batch(graphs, n_node + 1, n_edge, 4)
    loose = pad_batch(graphs, n_node + 9, n_edge + 20, 6, rng=rng)  # extra nodes, garbage edges, empty graphs
    model = make_encoder(name, small=True)
    out_tight, params = init_and_apply(model, tight)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)  # compiled once for the loose shape, reused below
    def apply(p, g):
        return model.apply(p, g)

    out_loose = apply(params, loose)
    assert out_tight.shape[0] == 3 and out_loose.shape[0] == 5  # [G - 1, d]
    assert out_tight.dtype == jnp.float32
    np.testing.assert_allclose(out_loose[:3], out_tight, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out_loose[3:], 0.0)  # padding / empty graphs give zeros
    assert np.all(np.isfinite(out_tight))

    # Graphs are independent: graph 1 alone equals graph 1 inside the batch (same shape: no retrace).
    alone = pad_batch([graphs[1]], n_node + 9, n_edge + 20, 6)
    np.testing.assert_allclose(apply(params, alone)[0], out_tight[1], rtol=1e-5, atol=1e-6)
    # Determinism.
    np.testing.assert_array_equal(apply(params, loose), out_loose)

    # bf16 compute with fp32 parameters stays close.
    model_bf16 = make_encoder(name, small=True, dtype=jnp.bfloat16)
    out_bf16 = jax.jit(model_bf16.apply)(params, tight)
    scale = np.abs(out_tight).max()
    np.testing.assert_allclose(out_bf16, out_tight, atol=0.05 * scale + 0.05)


def test_cgcnn_element_table_and_potnet_gradients_finite():
    rng = np.random.default_rng(3)
    table = np.zeros((101, 92), np.float32)
    table[1:] = rng.uniform(size=(100, 92))
    g = pad_batch([random_graph(rng, 3, 2)], 5, 8, 2)
    model = make_encoder("cgcnn", small=True, element_features=table)
    params = jax.eval_shape(model.init, jax.random.key(0), g)
    assert params["params"]["embedding"]["proj"]["kernel"].shape == (92, 16)

    # PotNet: infinite edges have d = 0 and padding edges d = 0 -> gradients must stay finite.
    gp = pad_batch([random_graph(rng, 3, 2, potnet=True)], 5, 20, 2)
    potnet = make_encoder("potnet", small=True, num_layers=1)
    pp = init_params(potnet, gp)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(potnet.apply(p, gp) ** 2)))(pp)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(grads))
    # Infinite-edge features are used: changing a potential changes the embedding.
    edges = dict(gp.edges)
    pot = np.array(edges["potential"])
    pot[6] += 1.0  # first infinite edge (6 local edges precede it)
    edges["potential"] = pot
    apply = jax.jit(potnet.apply)
    out1, out2 = apply(pp, gp), apply(pp, gp._replace(edges=edges))
    assert not np.allclose(out1, out2, atol=1e-6)


def test_schema_layout_batch_of_slots_with_empty_slot():
    """Schema layout: n_node [B + 1], an empty (invalid) slot has 0 nodes -> zero row; output [B, d]."""
    rng = np.random.default_rng(4)
    g0, g2 = random_graph(rng, 2, 2), random_graph(rng, 3, 2)
    z = np.concatenate([g0.nodes["atomic_numbers"], g2.nodes["atomic_numbers"], np.zeros(3, np.int32)])
    senders = np.concatenate([g0.senders, g2.senders + 2, np.full(2, 5, np.int32)])
    receivers = np.concatenate([g0.receivers, g2.receivers + 2, np.full(2, 5, np.int32)])
    d = np.concatenate([g0.edges["distances"], g2.edges["distances"], np.zeros(2, np.float32)])
    graph = jraph.GraphsTuple(nodes={"atomic_numbers": z}, edges={"distances": d}, senders=senders,
                              receivers=receivers, n_node=np.array([2, 0, 3, 3], np.int32),
                              n_edge=np.array([4, 0, 6, 2], np.int32), globals=None)
    model = make_encoder("cgcnn", small=True)
    out, _ = init_and_apply(model, graph)
    assert out.shape == (3, 16)
    np.testing.assert_array_equal(out[1], np.zeros(16))
    assert np.all(np.abs(out[0]) > 0) and np.all(np.abs(out[2]) > 0)
