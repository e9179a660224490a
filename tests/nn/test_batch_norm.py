"""CGCNN's BatchNorm (masked, global over the batch): NumPy reference of torch's BatchNorm1d,
running statistics, padding invariance, device split of the batch."""

import jax
import jax.numpy as jnp
import numpy as np
from nn_helpers import pad_batch, random_graph

from mmjax.nn import make_encoder
from mmjax.nn.batch_norm import masked_moments
from mmjax.nn.graph import CGCNNConv
from mmjax.systems.common import encode_modality


def _softplus(x):
    return np.logaddexp(x, 0.0)


def _bn(x, mean, var, p, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def _numpy_bn_conv(p, stats, v, u, senders, receivers, edge_mask, node_mask, train):
    """CGCNN's ConvLayer (fc_full -> bn1 -> gate -> sum -> bn2 -> softplus) with torch BatchNorm1d
    semantics over the real edges / atoms; returns (out, new running stats)."""
    a = v.shape[1]
    W, b = np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)
    g = np.stack([np.concatenate([v[i], v[j], u[e]]) @ W + b for e, (i, j) in enumerate(zip(senders, receivers))])
    new = {}

    def norm(x, mask, name):
        if train:
            mean, var, n = x[mask].mean(0), x[mask].var(0), mask.sum()
            new[name] = {"mean": 0.9 * 0.0 + 0.1 * mean, "var": 0.9 * 1.0 + 0.1 * var * n / (n - 1)}
        else:
            mean, var = (np.asarray(stats[name][k], np.float64) for k in ("mean", "var"))
        return _bn(x, mean, var, p[name])

    y = norm(g, edge_mask, "norm_edge")
    s = np.zeros_like(v)
    for e in np.flatnonzero(edge_mask):
        s[senders[e]] += 1 / (1 + np.exp(-y[e, :a])) * _softplus(y[e, a:])
    return _softplus(v + norm(s, node_mask, "norm_node")), new


def test_batchnorm_conv_matches_torch_semantics_in_numpy():
    rng = np.random.default_rng(0)
    n, e, a, k = 7, 20, 4, 5
    v = rng.normal(size=(n, a)).astype(np.float32)
    u = rng.uniform(size=(e, k)).astype(np.float32)
    senders, receivers = rng.integers(0, n, e).astype(np.int32), rng.integers(0, n, e).astype(np.int32)
    edge_mask, node_mask = rng.uniform(size=e) > 0.25, np.arange(n) < n - 1
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    p = {"kernel": 0.3 * f32(2 * a + k, 2 * a), "bias": 0.1 * f32(2 * a),
         "norm_edge": {"scale": 1 + 0.1 * f32(2 * a), "bias": 0.1 * f32(2 * a)},
         "norm_node": {"scale": 1 + 0.1 * f32(a), "bias": 0.1 * f32(a)}}
    conv = CGCNNConv(norm="batch")
    args = (v, u, senders, receivers, edge_mask, node_mask)
    shapes = jax.eval_shape(conv.init, jax.random.key(0), *args)
    assert jax.tree.structure(shapes["params"]) == jax.tree.structure(p)
    init_stats = jax.tree.map(np.asarray, conv.init(jax.random.key(0), *args)["batch_stats"])
    np.testing.assert_array_equal(init_stats["norm_edge"]["mean"], 0.0)
    np.testing.assert_array_equal(init_stats["norm_node"]["var"], 1.0)

    got, upd = jax.jit(lambda p, s: conv.apply({"params": p, "batch_stats": s}, *args, True,
                                               mutable=["batch_stats"]))(p, init_stats)
    f64 = [x.astype(np.float64) for x in (v, u)]
    ref, ref_stats = _numpy_bn_conv(p, None, f64[0], f64[1], senders, receivers, edge_mask, node_mask, True)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    for name in ("norm_edge", "norm_node"):
        for key in ("mean", "var"):
            np.testing.assert_allclose(upd["batch_stats"][name][key], ref_stats[name][key], rtol=1e-4, atol=1e-6)

    # evaluation: the running statistics, not the batch's
    stats = jax.tree.map(np.asarray, upd["batch_stats"])
    got_eval = jax.jit(lambda p, s: conv.apply({"params": p, "batch_stats": s}, *args, False))(p, stats)
    ref_eval, _ = _numpy_bn_conv(p, stats, f64[0], f64[1], senders, receivers, edge_mask, node_mask, False)
    np.testing.assert_allclose(got_eval, ref_eval, rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(got_eval) - np.asarray(got)).max() > 1e-3

    # gradients: autodiff through the batch statistics and the fused gated sum agree with finite differences
    def loss(p):
        out, _ = conv.apply({"params": p, "batch_stats": init_stats}, *args, True, mutable=["batch_stats"])
        return jnp.sum(out[node_mask] ** 2)

    grad = jax.grad(loss)(p)["kernel"]
    h, d = 1e-2, np.zeros_like(p["kernel"])
    d[1, 2] = h
    fd = (loss(dict(p, kernel=p["kernel"] + d)) - loss(dict(p, kernel=p["kernel"] - d))) / (2 * h)
    np.testing.assert_allclose(grad[1, 2], fd, rtol=2e-2, atol=1e-3)


def test_masked_moments_ignore_padding_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1], bool)
    garbage = np.where(mask[:, None], x, 1e6).astype(np.float32)
    mean, var, n = masked_moments(garbage, mask)
    np.testing.assert_allclose(mean, x[mask].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x[mask].var(0), rtol=1e-5, atol=1e-6)
    assert float(n) == mask.sum()


def _cgcnn_bn():
    return make_encoder("cgcnn", small=True, norm="batch")


def _graphs(rng):
    return [random_graph(rng, n, 3) for n in (2, 4, 3, 5)]


def _stack(per_device):
    return jax.tree.map(lambda *xs: np.stack(xs), *per_device)


def _encode(model, variables, graph, train):
    """encode_modality on a device-stacked graph -> rows [N, d] (evaluation) or (rows, updated stats)."""
    def run(v, g):
        out = {}
        rows = encode_modality(model, v["params"], "crystal", {"crystal": g}, train=train,
                               stats=v["batch_stats"], stats_out=out)
        return (rows, out["crystal"]) if train else rows

    return jax.jit(run)(variables, jax.tree.map(jnp.asarray, graph))


def test_batch_statistics_ignore_padding_and_span_every_device_slice():
    """The same four materials as one device micro-batch (tight or loosely padded) or as two device
    slices of two: identical training outputs and identical updated running statistics — the
    statistics are those of the real atoms / edges of the whole batch."""
    rng = np.random.default_rng(3)
    graphs = _graphs(rng)
    n_node = sum(int(g.n_node.sum()) for g in graphs)
    n_edge = sum(int(g.n_edge.sum()) for g in graphs)
    model = _cgcnn_bn()
    tight = _stack([pad_batch(graphs, n_node + 1, n_edge, 5)])
    variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), jax.tree.map(lambda x: x[0], tight)))
    loose = _stack([pad_batch(graphs, n_node + 11, n_edge + 17, 5, rng=rng)])
    split = _stack([pad_batch(graphs[:2], n_node + 3, n_edge + 5, 3, rng=rng),
                    pad_batch(graphs[2:], n_node + 3, n_edge + 5, 3, rng=rng)])

    rows_t, stats_t = _encode(model, variables, tight, True)
    rows_l, stats_l = _encode(model, variables, loose, True)
    rows_s, stats_s = _encode(model, variables, split, True)
    assert rows_t.shape[0] == 4 and rows_s.shape[0] == 4
    np.testing.assert_allclose(rows_l, rows_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows_s, rows_t, rtol=1e-5, atol=1e-6)
    for a, b, c in zip(jax.tree.leaves(stats_t), jax.tree.leaves(stats_l), jax.tree.leaves(stats_s)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(stats_t)[0], jax.tree.leaves(variables["batch_stats"])[0])

    # in training a material's row depends on its batch-mates (the batch statistics); in evaluation not
    alone = _stack([pad_batch(graphs[1:2], n_node + 1, n_edge, 5)])
    assert np.abs(np.asarray(_encode(model, variables, alone, True)[0][0]) - np.asarray(rows_t[1])).max() > 1e-4
    in_batch = _encode(model, variables, tight, False)
    np.testing.assert_allclose(_encode(model, variables, alone, False)[0], in_batch[1], rtol=1e-5, atol=1e-6)


def test_fused_batchnorm_edge_block_equals_autodiff_across_device_slices():
    """`bn_gated_edge_sum` (closed-form BatchNorm backward) against autodiff of the plain
    expression, on two vmapped device slices sharing the statistics, with cotangents on every
    output (the running-statistics outputs included) and padding edges."""
    from mmjax.nn.batch_norm import GRAPH_BATCH_AXIS
    from mmjax.nn.edge_block import bn_gated_edge_sum, bn_gated_edge_sum_reference

    rng = np.random.default_rng(5)
    n, e, a = 6, 15, 3
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    P, Q, U = f(2, n, 2 * a), f(2, n, 2 * a), f(2, e, 2 * a)
    senders, receivers = rng.integers(0, n, (2, e)).astype(np.int32), rng.integers(0, n, (2, e)).astype(np.int32)
    mask = rng.uniform(size=(2, e)) > 0.3
    scale, bias = 1 + 0.2 * f(2 * a), 0.2 * f(2 * a)
    w_out, w_mean, w_var = f(2, n, a), f(2 * a), f(2 * a)

    def loss(fn):
        def total(P, Q, U, scale, bias):
            out, mean, var, _ = jax.vmap(fn, in_axes=(0, 0, 0, None, None, 0, 0, 0),
                                         axis_name=GRAPH_BATCH_AXIS)(P, Q, U, scale, bias, senders, receivers, mask)
            return jnp.sum(out * w_out) + jnp.sum(mean[0] * w_mean) + jnp.sum(var[1] * w_var)
        return jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3, 4)))(P, Q, U, scale, bias)

    (v_fused, g_fused), (v_ref, g_ref) = loss(bn_gated_edge_sum), loss(bn_gated_edge_sum_reference)
    np.testing.assert_allclose(v_fused, v_ref, rtol=1e-5, atol=1e-5)
    for name, x, y in zip(("P", "Q", "U", "scale", "bias"), g_fused, g_ref):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=name)
    assert np.abs(np.asarray(g_ref[2])).max() > 1e-2
