"""grain pipeline: Batch layout, carry-over packing, resumable order, no recompiles, devices."""

import json

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data import store, store_writer
from mmjax.data.budgets import GraphBudget, budgets_from_manifest, check_budget, round_up
from mmjax.data.material import RecordError
from mmjax.data.pipeline import make_batches
from reference_assembly import PerRecordBatches

N_RECORDS = 23
XRD_L = 12


def _record(rng, i):
    n = int(rng.integers(2, 9))
    e = int(rng.integers(0, 4 * n))
    m = int(rng.integers(1, 5))
    rec = {
        "crystal/atomic_numbers": rng.integers(1, 90, n).astype(np.int32),
        "crystal/senders": rng.integers(0, n, e).astype(np.int32),
        "crystal/receivers": rng.integers(0, n, e).astype(np.int32),
        "crystal/distances": rng.uniform(1, 8, e).astype(np.float32),
        "composition/atomic_numbers": rng.choice(np.arange(1, 90), m, replace=False).astype(np.int32),
        "composition/fractions": np.full(m, 1.0 / m, np.float32),
        "target/gap": np.float32(np.nan if i % 4 == 1 else rng.normal(2.0, 1.5)),
        "label/space_group": np.int32(rng.integers(1, 231)),
    }
    if i % 3:
        rec["xrd"] = rng.uniform(0, 100, XRD_L).astype(np.float32)
    if i % 5 == 2:  # composition-only material: no crystal graph, no xrd
        for key in [k for k in rec if k.startswith("crystal/")] + ["xrd"]:
            rec.pop(key, None)
    return rec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_store")
    rng = np.random.default_rng(42)
    writer = store_writer.StoreWriter(root, records_per_file=10)
    for i in range(N_RECORDS):
        writer.add(f"mat-{i:02d}", _record(rng, i))
    store_writer.finish_manifest(root, writer, skipped=[], num_input=N_RECORDS)
    return store.Dataset.open(root)


def _unpack_graphs(graph, dev):
    """Per-slot (atomic_numbers, senders, receivers, distances) with local node indices."""
    n_node, n_edge = np.asarray(graph.n_node[dev]), np.asarray(graph.n_edge[dev])
    no = np.concatenate([[0], np.cumsum(n_node)])
    eo = np.concatenate([[0], np.cumsum(n_edge)])
    out = []
    for g in range(len(n_node)):
        s = graph.senders[dev, eo[g]:eo[g + 1]] - no[g]
        r = graph.receivers[dev, eo[g]:eo[g + 1]] - no[g]
        out.append((graph.nodes["atomic_numbers"][dev, no[g]:no[g + 1]], s, r,
                    graph.edges["distances"][dev, eo[g]:eo[g + 1]]))
    return out


def test_budgets_from_manifest(dataset):
    m = dataset.manifest
    nodes = m.padding["crystal/nodes"]
    b = budgets_from_manifest(m, 4)
    assert b.n_node % 64 == 0 and b.n_edge % 64 == 0
    assert b.n_node >= nodes["mean"] * 4 + 1 and b.n_node >= nodes["max"] + 1
    big = budgets_from_manifest(m, 100, percentile=90.0, multiple=8)
    assert big.n_node == round_up(nodes["percentiles"]["90.0"] * 100 + 1, 8)
    assert round_up(65, 64) == 128 and round_up(64, 64) == 64 and round_up(0, 64) == 64
    with pytest.raises(ValueError, match="percentile 42"):
        budgets_from_manifest(m, 4, percentile=42)
    check_budget(m, b)  # a manifest budget always fits the largest material
    with pytest.raises(RecordError, match=nodes["max_id"]):
        check_budget(m, GraphBudget(nodes["max"], b.n_edge))


def test_batch_layout_matches_records(dataset):
    it = make_batches(dataset, 8, GraphBudget(48, 96), shuffle=True, seed=3, devices=2, num_epochs=1)
    seen = []
    for batch in it:
        assert batch["slot_valid"].shape == (2, 4)
        g = batch["crystal"]
        assert g.nodes["atomic_numbers"].shape == (2, 48) and g.senders.shape == (2, 96)
        assert g.n_node.shape == (2, 5) and g.n_node.dtype == np.int32
        assert (g.n_node.sum(1) == 48).all() and (g.n_edge.sum(1) == 96).all()
        assert batch["xrd"].shape == (2, 4, XRD_L) and batch["xrd"].dtype == np.float32
        # element slots: the dataset's largest composition
        m_max = dataset.manifest.padding["composition/elements"]["max"]
        assert batch["composition"]["atomic_numbers"].shape == (2, 4, m_max) and m_max < 8
        for dev in range(2):
            slots = _unpack_graphs(g, dev)
            pad_z, pad_s, pad_r, pad_d = slots[-1]
            assert (pad_z == 0).all() and (pad_d == 0).all() and len(pad_z) >= 1
            assert (pad_s >= 0).all() and (pad_r >= 0).all()  # pad edges stay inside the pad graph
            for slot in range(4):
                idx = it.last_indices[dev, slot]
                assert batch["slot_valid"][dev, slot] == (idx >= 0)
                if idx < 0:
                    assert all(len(a) == 0 for a in slots[slot])
                    assert not any(batch["present"][m][dev, slot] for m in batch["present"])
                    continue
                seen.append(int(idx))
                rec = dataset[idx]
                assert batch["present"]["crystal"][dev, slot] == ("crystal/atomic_numbers" in rec)
                z, s, r, d = slots[slot]
                np.testing.assert_array_equal(z, rec.get("crystal/atomic_numbers", np.zeros(0)))
                np.testing.assert_array_equal(s, rec.get("crystal/senders", np.zeros(0)))
                np.testing.assert_array_equal(r, rec.get("crystal/receivers", np.zeros(0)))
                np.testing.assert_array_equal(d, rec.get("crystal/distances", np.zeros(0)))
                assert batch["present"]["xrd"][dev, slot] == ("xrd" in rec)
                np.testing.assert_array_equal(batch["xrd"][dev, slot], rec.get("xrd", np.zeros(XRD_L)))
                m = len(rec["composition/atomic_numbers"])
                comp = batch["composition"]
                np.testing.assert_array_equal(comp["atomic_numbers"][dev, slot, :m], rec["composition/atomic_numbers"])
                np.testing.assert_array_equal(comp["mask"][dev, slot], np.arange(m_max) < m)
                assert (comp["atomic_numbers"][dev, slot, m:] == 0).all()
                y = rec["target/gap"]
                assert batch["target_mask"]["gap"][dev, slot] == np.isfinite(y)
                if np.isfinite(y):
                    assert batch["targets"]["gap"][dev, slot] == y
                assert batch["targets"]["space_group"][dev, slot] == rec["label/space_group"]
                assert batch["targets"]["space_group"].dtype == np.int32
    assert sorted(seen) == list(range(N_RECORDS))
    assert not np.isnan(batch["targets"]["gap"]).any()


def test_tight_budget_carries_every_material_exactly_once(dataset):
    nodes, edges = dataset.graph_sizes()
    budget = GraphBudget(int(nodes.max()) + 4, int(edges.max()) + 2)  # fits 1-2 materials, not 4
    it = make_batches(dataset, 8, budget, shuffle=True, seed=1, devices=2)
    counts = np.zeros(N_RECORDS, int)
    underfilled = 0
    for batch in it:
        valid = it.last_indices[it.last_indices >= 0]
        np.add.at(counts, valid, 1)
        g = batch["crystal"]
        assert (g.n_node[:, :-1].sum(1) <= budget.n_node - 1).all()
        assert (g.n_edge[:, :-1].sum(1) <= budget.n_edge).all()
        underfilled += int((~batch["slot_valid"]).sum())
    assert (counts == 1).all()
    assert underfilled > 8  # spills really happened (more than just the last batch's padding)


def test_material_larger_than_budget_is_named(dataset):
    m = dataset.manifest
    biggest = m.padding["crystal/edges"]["max_id"]
    with pytest.raises(RecordError, match=biggest):
        make_batches(dataset, 4, GraphBudget(64, m.padding["crystal/edges"]["max"] - 1))
    # on a subset the check uses the subset's own materials
    nodes, edges = dataset.graph_sizes()
    small = np.argsort(edges)[-8:-3]
    assert edges[small].max() < edges.max()
    it = make_batches(dataset.subset(small), 4, GraphBudget(64, int(edges[small].max())), shuffle=False)
    assert sum(int(b["slot_valid"].sum()) for b in it) == 5


@pytest.mark.parametrize("order", ["numpy", "grain"])
def test_resume_gives_identical_following_batches(dataset, order):
    kw = dict(batch_size=4, budgets=GraphBudget(64, 64), seed=7, num_epochs=3, devices=2, order=order)
    it = make_batches(dataset, **kw)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(12)]  # crosses an epoch boundary
    fresh = make_batches(dataset, **kw)
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        chex.assert_trees_all_equal(got, want)
    with pytest.raises(ValueError, match="seed"):
        make_batches(dataset, **{**kw, "seed": 8}).set_state(state)


def test_order_is_deterministic_and_reshuffled_per_epoch(dataset):
    def order(seed, epochs=1):
        it = make_batches(dataset, 4, GraphBudget(64, 64), seed=seed, num_epochs=epochs, modalities=["xrd"])
        out = []
        for _ in it:
            out += it.last_indices[it.last_indices >= 0].tolist()
        return out

    a, b = order(0), order(0)
    assert a == b and sorted(a) == list(range(N_RECORDS))
    assert order(1) != a
    two = order(0, epochs=2)
    assert sorted(two[:N_RECORDS]) == sorted(two[N_RECORDS:]) and two[:N_RECORDS] != two[N_RECORDS:]
    # order="grain" follows grain's own shuffled MapDataset
    it = make_batches(dataset, 4, seed=3, num_epochs=2, modalities=["xrd"], order="grain")
    got = [i for _ in it for i in it.last_indices[it.last_indices >= 0].tolist()]
    ref = grain.MapDataset.range(N_RECORDS).shuffle(seed=3).repeat(2)
    assert got == [ref[k] for k in range(2 * N_RECORDS)]


def test_remainder_and_dense_only_modalities(dataset):
    kept = list(make_batches(dataset, 4, modalities=["xrd", "composition"], shuffle=False))
    dropped = list(make_batches(dataset, 4, modalities=["xrd", "composition"], shuffle=False, drop_remainder=True))
    assert len(kept) == 6 and len(dropped) == 5  # 23 = 5 * 4 + 3
    assert kept[-1]["slot_valid"].sum() == 3 and "crystal" not in kept[-1]
    with pytest.raises(ValueError, match="not stored"):
        make_batches(dataset, 4, modalities=["dos"])
    with pytest.raises(ValueError, match="multiple"):
        make_batches(dataset, 6, devices=4)


def test_normalised_targets(dataset):
    stats = dataset.manifest.statistics["targets"]["gap"]
    it = make_batches(dataset, 8, GraphBudget(64, 128), shuffle=False, normalize_targets=True, targets=["gap"])
    for batch in it:
        for dev, slot in zip(*np.nonzero(it.last_indices >= 0)):
            y = dataset[it.last_indices[dev, slot]]["target/gap"]
            if np.isfinite(y):
                np.testing.assert_allclose(batch["targets"]["gap"][dev, slot], (y - stats["mean"]) / stats["std"],
                                           rtol=1e-5)
            else:
                assert batch["targets"]["gap"][dev, slot] == 0 and not batch["target_mask"]["gap"][dev, slot]
        assert set(batch["targets"]) == {"gap"}


def test_no_recompiles_and_padding_does_not_change_results(dataset):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def per_graph_distance_sum(graph):
        def one(g):
            n_graph = g.n_edge.shape[0]
            graph_of_edge = jnp.repeat(jnp.arange(n_graph), g.n_edge, total_repeat_length=g.senders.shape[0])
            return jax.ops.segment_sum(g.edges["distances"], graph_of_edge, num_segments=n_graph)
        return jax.vmap(one)(graph)

    it = make_batches(dataset, 8, GraphBudget(64, 128), seed=5, num_epochs=2, devices=2)
    shapes = None
    for batch in it:
        leaf_shapes = jax.tree.map(lambda x: x.shape, batch)
        shapes = shapes or leaf_shapes
        assert leaf_shapes == shapes  # every batch, every device: identical shapes
        sums = np.asarray(per_graph_distance_sum(batch["crystal"]))
        for dev, slot in zip(*np.nonzero(it.last_indices >= 0)):
            d = dataset[it.last_indices[dev, slot]].get("crystal/distances", np.zeros(0, np.float32))
            np.testing.assert_allclose(sums[dev, slot], d.astype(np.float64).sum(), rtol=1e-5, atol=1e-5)
        assert (sums[:, :-1][it.last_indices < 0] == 0).all()


def test_dataset_is_a_grain_source(dataset):
    src = grain.MapDataset.source(dataset)
    assert len(src) == N_RECORDS
    np.testing.assert_array_equal(src[3]["crystal/senders"], dataset[3]["crystal/senders"])
    batched = grain.MapDataset.source(dataset).map(lambda r: r["composition/fractions"].sum())
    np.testing.assert_allclose([batched[i] for i in range(4)], 1.0, rtol=1e-6)


def test_dos_text_density_and_potnet_edges(tmp_path):
    rng = np.random.default_rng(3)
    writer = store_writer.StoreWriter(tmp_path)
    recs = []
    for i in range(5):
        n, e = 2 + i, 3 + i
        rec = {
            "crystal/atomic_numbers": rng.integers(1, 90, n).astype(np.int32),
            "crystal/senders": rng.integers(0, n, e).astype(np.int32),
            "crystal/receivers": rng.integers(0, n, e).astype(np.int32),
            "crystal/distances": rng.uniform(1, 4, e).astype(np.float32),
            "crystal/edge_kind": (np.arange(e) % 2).astype(np.int8),
            "crystal/potential": rng.normal(size=e).astype(np.float32),
            "charge_density": rng.uniform(size=(4, 4, 4)).astype(np.float32),
        }
        if i != 1:
            rec["dos/densities"] = rng.uniform(size=7).astype(np.float32)
            rec["dos/mask"] = np.arange(7) < 5 + (i % 3)
        writer.add(f"p{i}", rec)
        recs.append(rec)
    store_writer.finish_manifest(tmp_path, writer, skipped=[], num_input=5, grids={"dos/energies": np.linspace(-3, 3, 7).tolist()})
    ds = store.Dataset.open(tmp_path)
    emb = rng.normal(size=(5, 6)).astype(np.float32)
    ds.add_column("text_embedding", emb, present=np.arange(5) != 3)
    ds = store.Dataset.open(tmp_path)
    batch = next(make_batches(ds, 6, GraphBudget(32, 64), shuffle=False))
    assert set(batch["present"]) == {"crystal", "text", "dos", "charge_density"}
    np.testing.assert_array_equal(batch["present"]["dos"][0], [1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(batch["present"]["text"][0], [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(batch["text"][0, :5], np.where((np.arange(5) != 3)[:, None], emb, 0))
    np.testing.assert_allclose(batch["dos"]["energies"][0, 4], np.linspace(-3, 3, 7), rtol=1e-6)
    np.testing.assert_array_equal(batch["dos"]["densities"][0, 2], recs[2]["dos/densities"])
    np.testing.assert_array_equal(batch["dos"]["mask"][0, 4], recs[4]["dos/mask"])
    assert batch["charge_density"].shape == (1, 6, 4, 4, 4)
    np.testing.assert_array_equal(batch["charge_density"][0, 3], recs[3]["charge_density"])
    g = batch["crystal"]
    te = sum(len(r["crystal/senders"]) for r in recs)
    np.testing.assert_array_equal(g.edges["edge_kind"][0, :te], np.concatenate([r["crystal/edge_kind"] for r in recs]))
    np.testing.assert_array_equal(g.edges["potential"][0, :te], np.concatenate([r["crystal/potential"] for r in recs]))
    assert g.edges["edge_kind"].dtype == np.int8 and (g.edges["potential"][0, te:] == 0).all()


# ---------------------------------------------------------------- vectorised reads (the fast path)


def _reference_groups(nodes, edges, order, slots, n_dev, budget):
    """Plain-Python packing: per device, take materials while a slot is free and the totals fit."""
    groups, pos = [], 0
    for _ in range(n_dev):
        g, tn, te = [], 0, 0
        while len(g) < slots and pos < len(order):
            i = order[pos]
            if tn + nodes[i] > budget.n_node - 1 or te + edges[i] > budget.n_edge:
                break
            g.append(i)
            tn, te, pos = tn + nodes[i], te + edges[i], pos + 1
        groups.append(g)
    return groups, pos


@pytest.mark.parametrize("subset", [False, True])
def test_vectorised_batches_equal_per_record_assembly(dataset, subset):
    """Column-wise assembly (one gather per chunk, 3 chunks here) == the per-record dict assembly,
    leaf by leaf, for every batch of two epochs with carries (tight budget) and a dataset view."""
    ds = dataset.subset(np.arange(N_RECORDS)[::-1][:17]) if subset else dataset
    kw = dict(shuffle=True, seed=5, devices=2, num_epochs=2)
    fast = make_batches(ds, 8, GraphBudget(24, 40), **kw)
    slow = PerRecordBatches(make_batches(ds, 8, GraphBudget(24, 40), **kw))
    n = 0
    for a, b in zip(fast, slow):
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(fast.last_indices, slow.last_indices)
        n += 1
    assert n >= 2 * len(ds) / 8 and fast.get_state() == slow.get_state()
    with pytest.raises(StopIteration):
        next(slow)


def test_vectorised_packing_matches_a_plain_reference(dataset):
    budget = GraphBudget(24, 40)
    it = make_batches(dataset, 6, budget, shuffle=True, seed=11, devices=3, num_epochs=1)
    nodes, edges = dataset.graph_sizes()
    order = [it.order[p] for p in range(len(it.order))]
    pos = 0
    for _ in it:
        groups, used = _reference_groups(nodes, edges, order[pos:], 2, 3, budget)
        pos += used
        expect = np.full((3, 2), -1)
        for d, g in enumerate(groups):
            expect[d, :len(g)] = g
        np.testing.assert_array_equal(it.last_indices, expect)
    assert pos == len(order) == it.position


@pytest.mark.parametrize("order,shuffle", [("numpy", True), ("grain", True), ("numpy", False)])
def test_index_stream_take_equals_positionwise_reads(order, shuffle):
    from mmjax.data.order import IndexStream

    stream = IndexStream(7, seed=2, shuffle=shuffle, num_epochs=3, order=order)
    ref = IndexStream(7, seed=2, shuffle=shuffle, num_epochs=3, order=order)
    for start, stop in [(0, 5), (5, 16), (12, 30), (19, 21), (20, 20)]:  # across epoch boundaries, capped
        got = stream.take(start, stop)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, [ref[p] for p in range(start, min(stop, 21))])


def test_vectorised_dos_text_density_and_potnet_edges(tmp_path):
    """The fast path on the optional edge keys (one record without them), DOS, text and density."""
    rng = np.random.default_rng(8)
    writer = store_writer.StoreWriter(tmp_path, records_per_file=3)
    for i in range(7):
        n, e = 2 + i % 3, 3 + i
        rec = {"crystal/atomic_numbers": rng.integers(1, 90, n).astype(np.int32),
               "crystal/senders": rng.integers(0, n, e).astype(np.int32),
               "crystal/receivers": rng.integers(0, n, e).astype(np.int32),
               "crystal/distances": rng.uniform(1, 4, e).astype(np.float32),
               "charge_density": rng.uniform(size=(2, 2, 2)).astype(np.float32)}
        if i != 4:
            rec["crystal/edge_kind"] = (np.arange(e) % 2).astype(np.int8)
            rec["crystal/potential"] = rng.normal(size=e).astype(np.float32)
        if i % 3:
            rec["dos/densities"] = rng.uniform(size=5).astype(np.float32)
            rec["dos/mask"] = np.arange(5) < 3 + i % 2
        writer.add(f"q{i}", rec)
    store_writer.finish_manifest(tmp_path, writer, skipped=[], num_input=7, grids={"dos/energies": [0, 1, 2, 3, 4]})
    store.Dataset.open(tmp_path).add_column("text_embedding", rng.normal(size=(7, 3)).astype(np.float32),
                                            present=np.arange(7) % 4 != 1)
    ds = store.Dataset.open(tmp_path)
    fast = make_batches(ds, 4, GraphBudget(16, 32), shuffle=True, seed=1, devices=2)
    slow = PerRecordBatches(make_batches(ds, 4, GraphBudget(16, 32), shuffle=True, seed=1, devices=2))
    batches = list(zip(fast, slow))
    assert len(batches) >= 2
    for a, b in batches:
        assert set(a["crystal"].edges) == {"distances", "edge_kind", "potential"}
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
