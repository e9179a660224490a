"""Shared builders for the nn tests: small random crystal graphs in the schema layout."""

from __future__ import annotations

import jraph
import numpy as np


def random_graph(rng, n_atoms: int, n_neighbors: int, potnet: bool = False) -> jraph.GraphsTuple:
    """One unpadded graph: ``n_atoms`` atoms, each the centre of ``n_neighbors`` edges.

    With ``potnet``, every ordered atom pair (self included) is added as an infinite edge with
    distance 0, ``edge_kind`` 1 and a random ``potential`` in [-3, 3].
    """
    z = rng.integers(1, 90, n_atoms).astype(np.int32)
    senders = np.repeat(np.arange(n_atoms), n_neighbors).astype(np.int32)
    receivers = rng.integers(0, n_atoms, n_atoms * n_neighbors).astype(np.int32)
    distances = rng.uniform(1.5, 7.5, n_atoms * n_neighbors).astype(np.float32)
    edges = {"distances": distances}
    if potnet:
        s_inf, r_inf = np.meshgrid(np.arange(n_atoms), np.arange(n_atoms), indexing="ij")
        n_inf = n_atoms * n_atoms
        senders = np.concatenate([senders, s_inf.ravel().astype(np.int32)])
        receivers = np.concatenate([receivers, r_inf.ravel().astype(np.int32)])
        edges = {
            "distances": np.concatenate([distances, np.zeros(n_inf, np.float32)]),
            "edge_kind": np.concatenate([np.zeros(len(distances), np.int8), np.ones(n_inf, np.int8)]),
            "potential": np.concatenate([np.zeros(len(distances), np.float32),
                                         rng.uniform(-3, 3, n_inf).astype(np.float32)]),
        }
    return jraph.GraphsTuple(nodes={"atomic_numbers": z}, edges=edges, senders=senders, receivers=receivers,
                             n_node=np.array([n_atoms], np.int32), n_edge=np.array([len(senders)], np.int32),
                             globals=None)


def pad_batch(graphs, n_node: int, n_edge: int, n_graph: int, rng=None) -> jraph.GraphsTuple:
    """``jraph.batch`` + ``jraph.pad_with_graphs``; with ``rng``, padding edges get random
    (garbage) distances/potentials so tests can check they are ignored."""
    padded = jraph.pad_with_graphs(jraph.batch(graphs), n_node=n_node, n_edge=n_edge, n_graph=n_graph)
    if rng is not None:
        n_real = sum(int(g.n_edge.sum()) for g in graphs)
        edges = dict(padded.edges)
        for key in ("distances", "potential"):
            if key in edges:
                arr = np.array(edges[key])
                arr[n_real:] = rng.uniform(0.5, 9.0, len(arr) - n_real)
                edges[key] = arr
        padded = padded._replace(edges=edges)
    return padded



def numpy_params(module, *args, seed: int = 0, **kwargs):
    """Parameters with the module's tree structure, drawn on the host with NumPy.

    ``module.init`` compiles every random initialiser (threefry) and costs ~10x the forward
    compile on CPU; tests only need *some* well-scaled parameters: LayerNorm/GroupNorm scales 1,
    biases 0, every other array N(0, 1 / fan_in) with fan_in = product of all but the last axis.
    """
    import jax

    shapes = jax.eval_shape(lambda k, *a: module.init(k, *a, **kwargs), jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = str(path[-1].key) if hasattr(path[-1], "key") else ""
        if name == "scale":
            return np.ones(s.shape, s.dtype)
        if name == "bias":
            return np.zeros(s.shape, s.dtype)
        fan_in = max(int(np.prod(s.shape[:-1])), 1)
        return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def init_and_apply(module, *args, seed: int = 0, **kwargs):
    """``(output, params)``: NumPy-drawn parameters (see :func:`numpy_params`) and the jitted
    forward output for these inputs."""
    import jax

    params = numpy_params(module, *args, seed=seed, **kwargs)
    return jax.jit(lambda p, *a: module.apply(p, *a, **kwargs))(params, *args), params


def init_params(module, *args, seed: int = 0, **kwargs):
    """NumPy-drawn parameters (alias kept for readability in tests)."""
    return numpy_params(module, *args, seed=seed, **kwargs)
