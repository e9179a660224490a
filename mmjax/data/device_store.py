"""Device-resident batches: the dataset's columns live on the devices, batches are gathered there.

For a dataset that fits in device memory, the host work per training step shrinks to choosing the
record indices (``int32 [n_dev, B_dev]``, -1 = empty slot): the columns a `BatchAssembler` needs
are assembled once for all R records (`DeviceStore.build`, by the assembler's own column-wise code
with one "device" of R slots), put on every device, and each step's Batch is gathered from them by
a jitted function (`DeviceStore.put_fn`). The result equals, leaf for leaf and bit for bit, the
Batch that ``assembler.assemble_indices`` builds on the host for the same indices and
`mmjax.train.prefetch.batch_put_fn` puts on the mesh (tests/data/test_device_store.py), so a run
trains to the same parameters either way; only the host time differs (on a 2-core CPU the host
assembly competes with XLA for the cores; on a GPU it is the Python work at 10^4 samples/s).

Layout on the device (``arrays``; R records, N_tot / E_tot nodes / edges of all records):
  * every Batch leaf of a fixed shape per slot (XRD, text, charge density, DOS densities and mask,
    composition rows, targets, presence flags): ``[R, ...]`` rows, gathered by record index (0 in
    empty slots, which read an all-zero row R: ``[R + 1, ...]``); a modality's ``shared_leaves``
    (the DOS energy grid ``[L]``) once (every slot's, as on the host);
  * the graphs of a modality with ``graph_budget`` (crystal): the R graphs concatenated (``nodes`` int32 [N_tot + 1], ``ends`` int32
    [E_tot + 1, 2] = senders, receivers with all-records node numbering, edge features [E_tot + 1]),
    with ``records`` int32 [R + 1, 4] = per-record node count, edge count, first node, first edge
    (row R all zero); a micro-batch's graphs are packed
    into the per-device budget (N, E) exactly as the host does: nodes and edges of slot j after
    those of slots < j, padding edges joining the first padding node, ``n_node[B] = N - nodes``.
Memory: ``nbytes`` (the sum over arrays), held once per device (replicated).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax.data import sharding as mesh_lib
from mmjax.data import modalities as registry
from mmjax.data.budgets import GraphBudget
from mmjax.data.schema import OPTIONAL_EDGE_KEYS

PyTree = Any


def estimate_nbytes(assembler, dataset) -> int:
    """Bytes `DeviceStore.build` would hold for `dataset` under `assembler` (from the schema and the
    graph sizes, without reading any column)."""
    R = len(dataset)
    per_record = 1 + len(assembler.modalities)  # slot_valid, present
    per_record += sum(5 * int(np.prod(t[-1])) for t in assembler.targets)  # value + mask per component
    total = 0
    for m in assembler.modalities:
        if registry.get(m).graph_budget:
            nodes, edges = dataset.graph_sizes()
            per_edge = 12 + sum(np.dtype(dt).itemsize for _, dt in _edge_extras(assembler))
            total += 4 * int(np.sum(nodes)) + per_edge * int(np.sum(edges))
            per_record += 16
        else:
            per_record += registry.get(m).row_nbytes(assembler)
    return total + R * per_record


def _edge_extras(assembler):

    return [OPTIONAL_EDGE_KEYS[k] for k in assembler.edge_extra]


def _with_zero_row(x: np.ndarray) -> np.ndarray:
    """``x`` [R, ...] with an all-zero row R appended (what an empty slot reads)."""
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((1,) + x.shape[1:], x.dtype)])


def _take(x, index):
    """``x[index]`` along axis 0; every index here is in range (clip-mode gather: XLA:CPU runs it
    several times faster than the default out-of-bounds-filling one; `mmjax.nn.edge_block.gather_rows`)."""
    return jnp.take(x, index, axis=0, mode="clip")


def _slot_of(ends, positions):
    """``searchsorted(ends, positions, side="right")`` for inclusive cumulative sums ``ends`` [B]:
    the slot each node / edge position belongs to. Up to 64 slots as B unrolled comparisons (one
    elementwise fusion, ~2x faster on XLA:CPU than the [P, B] comparison matrix), else a search."""
    B = ends.shape[0]
    if B <= 64:
        slot = jnp.zeros(positions.shape, jnp.int32)
        for b in range(B):
            slot = slot + (positions >= ends[b]).astype(jnp.int32)
        return slot
    method = "compare_all" if B * positions.shape[0] <= 2**22 else "sort"
    return jnp.searchsorted(ends, positions, side="right", method=method).astype(jnp.int32)


class DeviceStore:
    """All records of a dataset view as device-ready arrays, and the per-device batch gather.

    Build with `DeviceStore.build`; ``arrays`` (numpy) is the store, ``budget`` the per-device
    graph budget of the batches it makes, ``num_records`` = R (row R is the empty slots' zero row).
    """

    def __init__(self, arrays: dict, budget: GraphBudget | None, num_records: int):
        self.arrays, self.budget, self.num_records = arrays, budget, int(num_records)
        mods = {k: registry.get(k) for k in arrays if k in registry.known()}
        self.graphs = tuple(k for k, m in mods.items() if m.graph_budget)  # packed-graph layout
        self.shared = {k: m.shared_leaves for k, m in mods.items() if m.shared_leaves}  # kept once

    @property
    def nbytes(self) -> int:
        return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(self.arrays)))

    @classmethod
    def build(cls, assembler, gather, num_records: int,
              finalize: Callable[[dict], dict] | None = None) -> "DeviceStore":
        """The store of records ``0 .. num_records - 1`` of ``gather.dataset``.

        assembler: the `mmjax.data.pipeline.BatchAssembler` whose batches this store reproduces
          (modalities, targets, normalisation, max_elements, budget, slots per device).
        gather: its `ColumnGather`. finalize: the host post-processing applied to every Batch
          (e.g. class-label offsets), applied here to the rows once.
        """
        R = int(num_records)
        if R < 1:
            raise ValueError("a device store needs at least one record")
        whole = copy.copy(assembler)  # the same assembler, laid out as one device of R slots
        whole.n_dev, whole.slots = 1, R
        graphs = [m for m in assembler.modalities if registry.get(m).graph_budget]
        if graphs:
            nodes, edges = gather.dataset.graph_sizes()
            nodes, edges = np.asarray(nodes[:R], np.int64), np.asarray(edges[:R], np.int64)
            whole.budget = GraphBudget(int(nodes.sum()) + 2, int(edges.sum()) + 1)
        rows = whole.assemble_indices(gather, [list(range(R))])
        if finalize is not None:
            rows = finalize(rows)
        # leaves every slot shares (empty ones too; the DOS energy grid): kept once
        shared = {m: {leaf: np.ascontiguousarray(rows[m].pop(leaf)[0, 0]) for leaf in registry.get(m).shared_leaves}
                  for m in assembler.modalities if registry.get(m).shared_leaves}
        arrays = {k: v for k, v in rows.items() if k not in graphs and k != "slot_valid"}
        arrays = jax.tree.map(lambda x: _with_zero_row(x[0]), arrays)  # drop the device axis
        for m, leaves in shared.items():
            arrays[m].update(leaves)
        for m in graphs:
            g = rows[m]
            nn, ne = g.n_node[0, :R].astype(np.int32), g.n_edge[0, :R].astype(np.int32)
            records = np.stack([nn, ne, np.cumsum(nn) - nn, np.cumsum(ne) - ne], axis=1).astype(np.int32)
            arrays[m] = {
                "nodes": g.nodes["atomic_numbers"][0],
                "ends": np.stack([g.senders[0], g.receivers[0]], axis=1).astype(np.int32),
                "edges": {k: v[0] for k, v in g.edges.items()},
                "records": _with_zero_row(records),
            }
        return cls(arrays, assembler.budget, R)

    # ------------------------------------------------------------------ device side

    def gather_one(self, arrays: dict, idx: jax.Array) -> dict:
        """One device's Batch from record indices ``idx`` int32 [B] (-1 = empty slot); jnp, jittable."""
        valid = idx >= 0
        safe = jnp.where(valid, idx, self.num_records)  # empty slots read the all-zero row R
        out = {}
        for k, v in arrays.items():
            if k in self.graphs:
                out[k] = self._pack_graphs(v, valid, safe)
            elif k in self.shared:  # per-record leaves gathered; the shared ones broadcast to every slot
                out[k] = {leaf: jnp.broadcast_to(x, valid.shape + x.shape) if leaf in self.shared[k] else _take(x, safe)
                          for leaf, x in v.items()}
            else:
                out[k] = jax.tree.map(lambda x: _take(x, safe), v)
        out["slot_valid"] = valid
        return out

    def _pack_graphs(self, g: dict, valid, safe):
        """Pack the graphs of records ``safe`` [B] into the budget (few gathers: XLA:CPU pays per op)."""

        N, E = self.budget.n_node, self.budget.n_edge
        B = valid.shape[0]
        rec = _take(g["records"], safe)  # [B, 4]: nodes, edges, first node, first edge (0 for empty slots)
        nn, ne = rec[:, 0], rec[:, 1]
        cn, ce = jnp.cumsum(nn), jnp.cumsum(ne)
        tn, te = cn[-1], ce[-1]
        # store numbering -> micro-batch numbering, per slot: node / edge index shifts
        node_shift = (cn - nn) - rec[:, 2]
        edge_shift = (ce - ne) - rec[:, 3]
        # node k of the micro-batch belongs to slot searchsorted(cn, k, "right") (empty slots skipped)
        k = jnp.arange(N, dtype=jnp.int32)
        real_n = k < tn
        src_n = jnp.where(real_n, k - _take(node_shift, jnp.minimum(_slot_of(cn, k), B - 1)), 0)
        nodes = jnp.where(real_n, _take(g["nodes"], src_n), 0)
        j = jnp.arange(E, dtype=jnp.int32)
        real_e = j < te
        shifts = _take(jnp.stack([node_shift, edge_shift], axis=1), jnp.minimum(_slot_of(ce, j), B - 1))  # [E, 2]
        src_e = jnp.where(real_e, j - shifts[:, 1], 0)
        ends = _take(g["ends"], src_e) + shifts[:, :1]  # [E, 2]: senders, receivers
        senders = jnp.where(real_e, ends[:, 0], tn).astype(jnp.int32)
        receivers = jnp.where(real_e, ends[:, 1], tn).astype(jnp.int32)
        edges = {name: jnp.where(real_e, _take(x, src_e), jnp.zeros((), x.dtype)) for name, x in g["edges"].items()}
        n_node = jnp.concatenate([nn, (N - tn)[None]]).astype(jnp.int32)
        n_edge = jnp.concatenate([ne, (E - te)[None]]).astype(jnp.int32)
        return jraph.GraphsTuple(nodes={"atomic_numbers": nodes.astype(jnp.int32)}, edges=edges,
                                 senders=senders, receivers=receivers, n_node=n_node, n_edge=n_edge,
                                 globals=None)

    def placed(self, mesh) -> tuple[PyTree, Callable]:
        """``(arrays, gather)``: the store on every device of `mesh` (replicated, placed once per
        call) and ``gather(arrays, record_index) -> Batch``, a jnp function usable inside any jit:
        record_index int32 [n_dev, B_dev] sharded ``P("data")`` -> the global Batch, each device
        gathering its own rows (``shard_map``)."""
        rep = NamedSharding(mesh, P())
        arrays = jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, rep, lambda i, x=x: x[i]),
                              self.arrays)
        axis = mesh_lib.batch_sharding(mesh).spec[0]

        def per_shard(arrays, idx):
            return jax.vmap(lambda i: self.gather_one(arrays, i))(idx)

        return arrays, jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(axis)), out_specs=P(axis),
                                     check_vma=False)

    def index_put_fn(self, mesh) -> Callable[[dict], dict]:
        """Host ``{"record_index": [n_local_dev, B_dev]}`` -> what a store-fed step takes: the numpy
        array itself on one process (jit's argument path moves it), a global array on several."""

        if jax.process_count() == 1:
            return lambda b: {"record_index": np.asarray(b["record_index"], np.int32)}
        return lambda b: {"record_index": mesh_lib.host_to_global(np.asarray(b["record_index"], np.int32), mesh)}

    def put_fn(self, mesh) -> Callable[[dict], PyTree]:
        """``{"record_index": int32 [n_local_dev, B_dev]}`` (host) -> the global Batch on `mesh`,
        sharded ``P("data")`` like `mmjax.train.prefetch.batch_put_fn`'s; one jitted gather per call.
        (The training loop fuses the gather into the step instead: `mmjax.train.step.make_train_step`.)"""

        arrays, gather = self.placed(mesh)
        data = mesh_lib.batch_sharding(mesh)
        # the host index array goes straight into the jitted call (its C++ argument path moves it,
        # several times faster than a separate device_put of a small array)
        jitted = jax.jit(gather, in_shardings=(mesh_lib.replicated(mesh), data), out_shardings=data)
        to_idx = self.index_put_fn(mesh)
        return lambda host_batch: jitted(arrays, to_idx(host_batch)["record_index"])
