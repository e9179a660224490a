"""Graph encoders over ``jraph.GraphsTuple`` (SPEC M1): CGCNN, MatBind GCN, PotNet-style.

Input layout (see ``mmjax.data.schema``)::

    nodes = {"atomic_numbers": int32 [N]}          0 marks a padding node
    edges = {"distances": float32 [E] (Angstrom),
             optional "edge_kind": int8 [E] (0 local, 1 PotNet infinite edge),
             optional "potential": float32 [E] (PotNet summed potential, 0 on local edges)}
    senders: int32 [E]   centre atom of each edge;  receivers: int32 [E]   its neighbour
    n_node, n_edge: int32 [G]; the last graph is the padding graph.

Conventions:
  * Messages are aggregated onto the **centre** atom (``senders``), as in CGCNN where atom i
    sums over its (up to 12) nearest neighbours j. For symmetric edge sets (PotNet) the choice
    does not matter.
  * Padding is detected from the data, not trusted: a node is real iff its atomic number is
    > 0, an edge is real iff both endpoints are real nodes. Padding edges contribute nothing
    and padding nodes never enter a pool, so outputs do not depend on padding.
  * Every encoder returns float32 ``[G - 1, d]``: one row per graph except the last one (the
    schema's padding graph). A graph without real nodes (an empty material slot, or extra
    empty graphs left by ``jraph.pad_with_graphs``) gives a zero row.
  * Distance expansions (Gaussian / RBF) are computed inside the model, on device.
  * CGCNN uses BatchNorm in its paper: ``norm="batch"`` (masked to real edges / atoms, global
    over the batch, running statistics in the ``batch_stats`` collection), ``"layer"``
    (LayerNorm, stateless, the default) or ``"none"``. PotNet offers ``"layer"`` / ``"none"``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from mmjax.nn.activations import sigmoid, softplus
from mmjax.nn.basis import gaussian_expansion, rbf_expansion
from mmjax.nn.batch_norm import BN_EPS, BatchNormVars, apply_affine, masked_moments, normalise_affine
from mmjax.nn.edge_block import bn_gated_edge_sum, gated_edge_sum, gather_rows

Dtype = Any
NORMS = ("layer", "none", "batch")  # CGCNNConv


# --------------------------------------------------------------------------------------------
# layout helpers


def graph_masks(graph: jraph.GraphsTuple):
    """Real-node / real-edge masks and node -> graph segment ids.

    Returns:
      node_mask bool [N], edge_mask bool [E], node_graph int32 [N] (graph index of each node).
    """
    z = graph.nodes["atomic_numbers"]
    n_nodes = z.shape[0]
    n_graph = graph.n_node.shape[0]
    node_mask = z > 0
    edge_mask = gather_rows(node_mask, graph.senders) & gather_rows(node_mask, graph.receivers)
    node_graph = jnp.repeat(jnp.arange(n_graph, dtype=jnp.int32), graph.n_node,
                            total_repeat_length=n_nodes)
    return node_mask, edge_mask, node_graph


POOLING_METHODS = ("segment", "sorted", "onehot")
# Default per-graph pooling, the fastest on CPU: `python benchmarks/device_check.py --only segment_pooling`
# (2-core CPU, 2026-12-02, 5,120 nodes -> 1,024 graphs x 64, forward + gradient, two runs): segment
# 4.5 / 5.3 ms, sorted 3.3 / 4.5 ms, onehot 30 / 34 ms. The device check reports all three on a GPU,
# where float32 segment_sum into few segments is a known slow path in jaxlib 0.10.x (jax-ml/jax
# #39959) -- switch with the encoders' ``pooling`` field.
DEFAULT_POOLING = "sorted"


def pool_sum(x, index, num_segments: int, method: str = DEFAULT_POOLING):
    """``out[g] = sum_{i: index[i] == g} x[i]`` for x [N, ...] -> [num_segments, ...].

    method: "segment" (``jax.ops.segment_sum``), "sorted" (the same with
    ``indices_are_sorted=True``: ``index`` must be non-decreasing, as the node-to-graph index of a
    batched GraphsTuple is), "onehot" (``one_hot(index)^T @ x``, a matmul: O(N x num_segments)
    work, meant for few segments). All three give the same values and gradients.
    """
    if method == "segment":
        return jax.ops.segment_sum(x, index, num_segments=num_segments)
    if method == "sorted":
        return jax.ops.segment_sum(x, index, num_segments=num_segments, indices_are_sorted=True)
    if method == "onehot":
        onehot = jax.nn.one_hot(index, num_segments, dtype=x.dtype)
        return jnp.einsum("ng,n...->g...", onehot, x, precision=jax.lax.Precision.HIGHEST)
    raise ValueError(f"unknown pooling method {method!r}; choose one of {POOLING_METHODS}")


def segment_mean_pool(x, node_mask, node_graph, num_graphs: int, method: str = DEFAULT_POOLING):
    """Mean of node features per graph over real nodes, padding graph dropped.

    Args:
      x: [N, D]; node_mask bool [N]; node_graph int32 [N] (non-decreasing); num_graphs: G;
      method: `pool_sum` method.
    Returns:
      (float32 [G - 1, D] means — zero rows for graphs without real nodes,
       bool [G - 1] whether each graph has a real node).
    """
    x = jnp.where(node_mask[:, None], x.astype(jnp.float32), 0.0)
    total = pool_sum(x, node_graph, num_graphs, method)
    count = pool_sum(node_mask.astype(jnp.float32), node_graph, num_graphs, method)
    return (total / jnp.maximum(count, 1.0)[:, None])[:-1], (count > 0)[:-1]


def _zero_empty(h, has_nodes):
    """Zero the output rows of graphs without real nodes (after any post-pool layers)."""
    return jnp.where(has_nodes[:, None], h.astype(jnp.float32), 0.0)


class _LayerNorm(nn.Module):
    """Two-pass LayerNorm over the last axis (same maths as ``nn.LayerNorm``, eps 1e-5).

    Written out because flax's fused-statistics version has a much slower backward pass on
    XLA:CPU when applied to every edge ([E, 2A]); statistics in float32."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        xf = x.astype(jnp.float32)
        mu = jnp.mean(xf, axis=-1, keepdims=True)
        xc = xf - mu
        y = xc * jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + 1e-5)
        return (y * scale + bias).astype(self.dtype)


class _NormParams(nn.Module):
    """The ``scale``/``bias`` parameters of a LayerNorm applied elsewhere (same names as
    `_LayerNorm`, so checkpoints and parameter paths do not change)."""

    features: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self):
        return (self.param("scale", nn.initializers.ones, (self.features,), self.param_dtype),
                self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype))


def _norm(kind: str, name: str, dtype, param_dtype):
    if kind == "layer":
        return _LayerNorm(dtype=dtype, param_dtype=param_dtype, name=name)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"unknown norm {kind!r}; expected 'layer' or 'none'")


class ElementEmbedding(nn.Module):
    """Atomic number -> feature vector.

    With ``element_features`` (a fixed table, float [Zmax + 1, F], row index = atomic number,
    row 0 = padding; e.g. the 92-d CGCNN table) the table row is looked up and mapped by a
    Dense layer to ``features``; with ``one_hot`` the one-hot of ``Z - 1`` over ``one_hot``
    classes goes through a Dense layer (MatBind: 96 classes); otherwise a learned embedding
    table with ``num_elements`` rows is used.

    Call: atomic_numbers int [N] -> [N, features].
    """

    features: int
    element_features: Any = None
    one_hot: int | None = None
    num_elements: int = 119
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, atomic_numbers):
        dense = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")
        if self.element_features is not None:
            table = jnp.asarray(np.asarray(self.element_features, np.float32))
            return dense(table[jnp.clip(atomic_numbers, 0, table.shape[0] - 1)])
        if self.one_hot is not None:
            return dense(jax.nn.one_hot(atomic_numbers - 1, self.one_hot, dtype=jnp.float32))
        return nn.Embed(self.num_elements, self.features, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="embed")(atomic_numbers)


# --------------------------------------------------------------------------------------------
# convolutions


class CGCNNConv(nn.Module):
    """CGCNN convolution (Xie & Grossman 2018, Eq. 5).

    ``z_ij = [v_i, v_j, u_ij]``;  ``g = norm1(z_ij W + b)`` split into (filter, core);
    ``s_i = norm2(sum_j sigmoid(filter) * softplus(core))``;  ``v_i' = softplus(v_i + s_i)``.

    ``norm``: ``"batch"`` — BatchNorm over the real edges / real atoms of the whole batch, as the
    reference (`mmjax.nn.batch_norm`; running statistics in the ``batch_stats`` collection);
    ``"layer"`` — LayerNorm per row (stateless); ``"none"``.

    ``W`` [2A + K, 2A] is one parameter ("kernel"), exactly CGCNN's ``fc_full``. ``conv_form``:
    ``"factored"`` (default) evaluates the product as ``v_i W[:A] + v_j W[A:2A] + u_ij W[2A:]``
    (node projections computed once per node and gathered), the same sum with ~4x fewer edge
    FLOPs; ``"full"`` forms ``z_ij`` per edge and multiplies it by ``W`` as the reference code
    does (same parameters, same values up to float rounding; for like-for-like timing). BatchNorm's
    per-feature affine map is folded into the three terms before the fused gated sum.

    Call: v [N, A], u [E, K], senders/receivers int [E], edge_mask bool [E], node_mask bool [N]
    (BatchNorm only; default all real), train (BatchNorm: batch statistics) -> [N, A].
    """

    norm: str = "layer"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_form: str = "factored"

    @nn.compact
    def __call__(self, v, u, senders, receivers, edge_mask, node_mask=None, train: bool = False):
        a, k = v.shape[-1], u.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2 * a + k, 2 * a), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (2 * a,), self.param_dtype)
        kernel = kernel.astype(self.dtype)
        v = v.astype(self.dtype)
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {NORMS}")
        if self.conv_form == "factored":
            P, Q = v @ kernel[:a], v @ kernel[a:2 * a]
            U = u.astype(self.dtype) @ kernel[2 * a:] + bias.astype(self.dtype)
        elif self.conv_form == "full":  # z_ij [E, 2A + K] @ W per edge; the node terms are then zero
            z = jnp.concatenate([gather_rows(v, senders), gather_rows(v, receivers), u.astype(self.dtype)], axis=-1)
            U = z @ kernel + bias.astype(self.dtype)
            P = Q = jnp.zeros((v.shape[0], 2 * a), self.dtype)
        else:
            raise ValueError(f"unknown conv_form {self.conv_form!r}; expected 'factored' or 'full'")
        if self.norm == "batch":
            return softplus(v + self._batch_norm_block(P, Q, U, senders, receivers, edge_mask, node_mask, train))
        gamma, beta = _NormParams(2 * a, self.param_dtype, name="norm_edge")() if self.norm == "layer" \
            else (jnp.ones((2 * a,), self.dtype), jnp.zeros((2 * a,), self.dtype))
        # Edge block (gather, LayerNorm, gate, sum over neighbours) with a hand-written VJP.
        s = gated_edge_sum(P, Q, U, gamma, beta, senders, receivers, edge_mask, self.norm == "layer")
        s = _norm(self.norm, "norm_node", self.dtype, self.param_dtype)(s)
        return softplus(v + s)

    def _batch_norm_block(self, P, Q, U, senders, receivers, edge_mask, node_mask, train):
        """bn1 (edges) -> gate -> sum -> bn2 (atoms); training: batch statistics (fused block with
        BatchNorm's closed-form backward), evaluation: running statistics folded into P, Q, U."""
        a2 = P.shape[-1]
        node_mask = jnp.ones(P.shape[:1], bool) if node_mask is None else node_mask
        bn_edge, bn_node = BatchNormVars(a2, name="norm_edge"), BatchNormVars(a2 // 2, name="norm_node")
        scale, bias, r_mean, r_var = bn_edge()
        if train:
            s, mean, var, n = bn_gated_edge_sum(P, Q, U, scale, bias, senders, receivers, edge_mask, BN_EPS)
            bn_edge((mean, var, n))
        else:
            ea, ec = normalise_affine(scale, bias, r_mean, r_var)
            ones, zeros = jnp.ones((a2,), P.dtype), jnp.zeros((a2,), P.dtype)
            s = gated_edge_sum(apply_affine(P, ea, 0.0), apply_affine(Q, ea, 0.0), apply_affine(U, ea, ec),
                               ones, zeros, senders, receivers, edge_mask, False)
        scale, bias, r_mean, r_var = bn_node()
        if train:
            mean, var, n = masked_moments(s, node_mask)
            bn_node((mean, var, n))
        else:
            mean, var = r_mean, r_var
        return apply_affine(s, *normalise_affine(scale, bias, mean, var))


class CGConv(nn.Module):
    """PyG ``CGConv`` (MatBind): ``x_i' = x_i + sum_j sigmoid(z W_f + b_f) * softplus(z W_s + b_s)``
    with ``z = [x_i, x_j, e_ij]`` (no norm inside; MatBind applies ReLU + LayerNorm after).

    Call: x [N, C], e [E, K], senders/receivers [E], edge_mask [E] -> [N, C].
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, e, senders, receivers, edge_mask):
        c = x.shape[-1]
        x = x.astype(self.dtype)
        # Columns [:c] are lin_f, [c:] lin_s; rows are (x_i, x_j, e) as in PyG's concat.
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2 * c + e.shape[-1], 2 * c),
                            self.param_dtype).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (2 * c,), self.param_dtype).astype(self.dtype)
        ones, zeros = jnp.ones((2 * c,), self.dtype), jnp.zeros((2 * c,), self.dtype)
        return x + gated_edge_sum(x @ kernel[:c], x @ kernel[c:2 * c], e.astype(self.dtype) @ kernel[2 * c:] + bias,
                                  ones, zeros, senders, receivers, edge_mask, False)


class PotNetConv(nn.Module):
    """PotNet convolution (MultiMat's vendored PotNet, BatchNorm -> ``norm``).

    ``z = [x_i, x_j, e_ij]``; ``m_ij = sigmoid(norm(MLP_g(z))) * MLP_v(z)`` with each MLP
    ``Dense(C) -> SiLU -> Dense(C)``; ``x_i' = relu(x_i + norm(sum_j m_ij))``.

    Call: x [N, C], e [E, C], senders/receivers [E], edge_mask [E] -> [N, C].
    """

    norm: str = "layer"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, e, senders, receivers, edge_mask):
        c = x.shape[-1]
        z = jnp.concatenate([gather_rows(x, senders), gather_rows(x, receivers), e.astype(x.dtype)], axis=-1)

        def mlp(name):
            h = nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name=f"{name}_fc1")(z)
            return nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name=f"{name}_fc2")(nn.silu(h))

        gate = sigmoid(_norm(self.norm, "norm_gate", self.dtype, self.param_dtype)(mlp("gate")))
        msg = jnp.where(edge_mask[:, None], gate * mlp("value"), 0.0)
        agg = jax.ops.segment_sum(msg, senders, num_segments=x.shape[0])
        return nn.relu(x + _norm(self.norm, "norm_node", self.dtype, self.param_dtype)(agg))


# --------------------------------------------------------------------------------------------
# encoders


class CGCNN(nn.Module):
    """CGCNN encoder (X-MoPA crystal encoder; CGCNN defaults).

    ``Z -> ElementEmbedding(atom_fea_len)`` (92-d table + Dense when ``element_features`` is
    given, else learned embedding) -> ``n_conv`` x :class:`CGCNNConv` over a Gaussian expansion
    of distances (``gaussian_centers`` centres on [0, cutoff], width = spacing) -> mean pool over
    each graph's real atoms (``pooling``: a `pool_sum` method) -> softplus -> ``n_h`` x
    (Dense(h_fea_len) -> softplus).

    Call: graph (GraphsTuple, layout in module docstring), deterministic (False: training, i.e.
    BatchNorm on batch statistics) -> float32 [G - 1, h_fea_len].
    """

    atom_fea_len: int = 64
    n_conv: int = 3
    h_fea_len: int = 128
    n_h: int = 1
    cutoff: float = 8.0
    gaussian_centers: int = 41
    norm: str = "layer"
    element_features: Any = None
    num_elements: int = 119
    pooling: str = DEFAULT_POOLING
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_form: str = "factored"  # CGCNNConv: "factored" or "full" (the reference's per-edge product)

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, deterministic: bool = True):
        node_mask, edge_mask, node_graph = graph_masks(graph)
        u = gaussian_expansion(graph.edges["distances"], 0.0, self.cutoff, self.gaussian_centers)
        v = ElementEmbedding(self.atom_fea_len, self.element_features, None, self.num_elements,
                             self.dtype, self.param_dtype, name="embedding")(graph.nodes["atomic_numbers"])
        for i in range(self.n_conv):
            v = CGCNNConv(self.norm, self.dtype, self.param_dtype, self.conv_form, name=f"conv_{i}")(
                v, u, graph.senders, graph.receivers, edge_mask, node_mask, not deterministic)
        pooled, has_nodes = segment_mean_pool(v, node_mask, node_graph, graph.n_node.shape[0], self.pooling)
        h = softplus(pooled)
        for i in range(self.n_h):
            h = softplus(nn.Dense(self.h_fea_len, dtype=self.dtype, param_dtype=self.param_dtype,
                                  name=f"fc_{i}")(h))
        return _zero_empty(h, has_nodes)


class MatBindGCN(nn.Module):
    """MatBind crystal encoder ("CSGCNN").

    one-hot(Z) over ``num_elements`` (96) -> Dense(hidden) -> ``num_layers`` x
    (:class:`CGConv` over 41 Gaussians -> ReLU -> LayerNorm) -> mean pool. No residuals beyond
    CGConv's own.

    Call: graph -> float32 [G - 1, hidden].
    """

    hidden: int = 128
    num_layers: int = 6
    cutoff: float = 8.0
    gaussian_centers: int = 41
    num_elements: int = 96
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        node_mask, edge_mask, node_graph = graph_masks(graph)
        e = gaussian_expansion(graph.edges["distances"], 0.0, self.cutoff, self.gaussian_centers)
        x = ElementEmbedding(self.hidden, None, self.num_elements, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="embedding")(graph.nodes["atomic_numbers"])
        for i in range(self.num_layers):
            x = CGConv(self.dtype, self.param_dtype, name=f"conv_{i}")(x, e, graph.senders, graph.receivers, edge_mask)
            x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm_{i}")(nn.relu(x))
        return segment_mean_pool(x, node_mask, node_graph, graph.n_node.shape[0])[0]


class PotNet(nn.Module):
    """PotNet-style encoder (MultiMat crystal encoder).

    Nodes: ``ElementEmbedding(hidden)`` (CGCNN 92-d table + Dense when given).
    Local edges (``edge_kind == 0``): ``-0.75 / d`` -> Gaussian RBF (vmin -4, vmax 4,
    ``local_bins``=256, gamma = 1/spacing) -> Dense(hidden) -> SiLU.
    Infinite edges (``edge_kind == 1``): the summed potential (``edges["potential"]``, already
    ``sum_i w_i pot_i`` with w = [-0.801, -0.074, 0.145]) -> multiquadric RBF (64 bins on
    [-4, 4]) -> Dense(hidden) -> softplus -> norm.
    Both edge sets are one edge list (PotNet ``transformer=False``); ``num_layers`` x
    :class:`PotNetConv`, mean pool, Dense(out_dim).

    Call: graph (``edge_kind``/``potential`` optional: absent = all local) -> float32 [G - 1, out_dim].
    """

    hidden: int = 256
    out_dim: int = 128
    num_layers: int = 3
    local_bins: int = 256
    infinite_bins: int = 64
    norm: str = "layer"
    element_features: Any = None
    num_elements: int = 119
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple):
        node_mask, edge_mask, node_graph = graph_masks(graph)
        d = graph.edges["distances"].astype(jnp.float32)
        kind = graph.edges.get("edge_kind")
        is_inf = jnp.zeros(d.shape, bool) if kind is None else kind.astype(jnp.int32) == 1
        dense = lambda name: nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name=name)  # noqa: E731
        # Guard 1/d: padding and infinite edges carry d = 0.
        safe_d = jnp.where((d > 0) & ~is_inf, d, 1.0)
        e_local = nn.silu(dense("local_edge")(rbf_expansion(-0.75 / safe_d, -4.0, 4.0, self.local_bins)))
        e = e_local
        if "potential" in graph.edges:
            pot = graph.edges["potential"].astype(jnp.float32)
            e_inf = softplus(dense("inf_edge")(rbf_expansion(pot, -4.0, 4.0, self.infinite_bins, "multiquadric")))
            e_inf = _norm(self.norm, "inf_edge_norm", self.dtype, self.param_dtype)(e_inf)
            e = jnp.where(is_inf[:, None], e_inf, e_local)
        x = ElementEmbedding(self.hidden, self.element_features, None, self.num_elements, self.dtype,
                             self.param_dtype, name="embedding")(graph.nodes["atomic_numbers"])
        for i in range(self.num_layers):
            x = PotNetConv(self.norm, self.dtype, self.param_dtype, name=f"conv_{i}")(
                x, e, graph.senders, graph.receivers, edge_mask)
        h, has_nodes = segment_mean_pool(x, node_mask, node_graph, graph.n_node.shape[0])
        return _zero_empty(nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(h),
                           has_nodes)
