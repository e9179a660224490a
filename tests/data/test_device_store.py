"""Device-resident batches (`mmjax.data.device_store`) equal the host pipeline's, bit for bit."""

import jax
import numpy as np
import pytest

from mmjax.data import store, store_writer
from mmjax.data.budgets import GraphBudget
from mmjax.data.device_store import estimate_nbytes
from mmjax.data.pipeline import make_batches
from mmjax.train import mesh as mesh_lib
from mmjax.train.prefetch import batch_put_fn

N = 29


def _record(rng, i):
    """Every modality; some records lack the crystal graph, the optional edge keys, XRD, DOS, targets."""
    n = int(rng.integers(2, 8))
    e = int(rng.integers(0, 5 * n))
    m = int(rng.integers(1, 5))
    rec = {
        "crystal/atomic_numbers": rng.integers(1, 90, n).astype(np.int32),
        "crystal/senders": rng.integers(0, n, e).astype(np.int32),
        "crystal/receivers": rng.integers(0, n, e).astype(np.int32),
        "crystal/distances": rng.uniform(1, 8, e).astype(np.float32),
        "crystal/edge_kind": (np.arange(e) % 3).astype(np.int8),
        "crystal/potential": rng.normal(size=e).astype(np.float32),
        "composition/atomic_numbers": rng.choice(np.arange(1, 90), m, replace=False).astype(np.int32),
        "composition/fractions": rng.dirichlet(np.ones(m)).astype(np.float32),
        "charge_density": rng.uniform(size=(2, 2, 2)).astype(np.float32),
        "target/gap": np.float32(np.nan if i % 4 == 1 else rng.normal(2.0, 1.5)),
        "label/space_group": np.int32(rng.integers(1, 231)),
    }
    if i % 3:
        rec["xrd"] = rng.uniform(0, 100, 9).astype(np.float32)
    if i % 4 != 2:
        rec["dos/densities"] = rng.uniform(size=6).astype(np.float32)
        rec["dos/mask"] = np.arange(6) < 3 + i % 3
    if i % 7 == 3:
        del rec["crystal/edge_kind"], rec["crystal/potential"]
    if i % 5 == 2:  # no crystal graph at all
        for key in [k for k in rec if k.startswith("crystal/")]:
            del rec[key]
    if i % 6 == 5:
        del rec["label/space_group"]
    return rec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_store")
    rng = np.random.default_rng(7)
    writer = store_writer.StoreWriter(root, records_per_file=8)  # 4 chunks
    for i in range(N):
        writer.add(f"m{i:02d}", _record(rng, i))
    store_writer.finish_manifest(root, writer, skipped=[], num_input=N, grids={"dos/energies": np.linspace(-2, 2, 6).tolist()})
    store.Dataset.open(root).add_column("text_embedding", rng.normal(size=(N, 5)).astype(np.float32),
                                        present=np.arange(N) % 4 != 1)
    return store.Dataset.open(root)


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.sharding.is_equivalent_to(y.sharding, x.ndim)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("subset,n_dev", [(False, 2), (True, 4), (False, 1)])
def test_device_batches_equal_host_batches(dataset, subset, n_dev):
    """Two epochs with carried materials (tight budget), a dataset view over 4 chunks, empty slots
    at the end of the stream, missing modalities / edge keys / labels, normalised targets."""
    ds = dataset.subset(np.arange(N)[::-1][:21]) if subset else dataset
    mesh = mesh_lib.make_mesh(jax.devices()[:n_dev])
    kw = dict(shuffle=True, seed=3, devices=n_dev, num_epochs=2, normalize_targets=True)
    host = make_batches(ds, 4 * n_dev, GraphBudget(20, 48), **kw)
    dev = make_batches(ds, 4 * n_dev, GraphBudget(20, 48), **kw)
    put_host, put_dev = batch_put_fn(mesh), dev.device_store().put_fn(mesh)
    n, empty_slots = 0, 0
    for a in host:
        idx = dev.next_indices()
        np.testing.assert_array_equal(idx["record_index"], host.last_indices)
        _assert_same(put_dev(idx), put_host(a))
        n += 1
        empty_slots += int((host.last_indices == -1).sum())
    assert n >= 2 * len(ds) / (4 * n_dev) and host.get_state() == dev.get_state()
    assert empty_slots > 0  # carried materials / the end of the stream left slots empty
    with pytest.raises(StopIteration):
        dev.next_indices()


def test_store_size_estimate_and_packing_are_exact(dataset):
    it = make_batches(dataset, 8, GraphBudget(64, 128), shuffle=False, devices=1)
    st = it.device_store()
    est = estimate_nbytes(it.assembler, dataset)
    assert abs(est - st.nbytes) <= 0.02 * st.nbytes + 64 * len(dataset)
    g = st.arrays["crystal"]
    nodes, edges = dataset.graph_sizes()
    np.testing.assert_array_equal(g["records"][:, 0], np.append(nodes, 0))  # + the empty slots' zero row
    np.testing.assert_array_equal(g["records"][:, 1], np.append(edges, 0))
    rows = [x for k, v in st.arrays.items() if k != "crystal" for x in jax.tree.leaves(v) if x.ndim]
    assert len(rows) > 8 and all(len(x) == len(dataset) + 1 and not np.any(x[-1]) for x in rows
                                 if x.shape != (6,))  # (the DOS energy grid is kept once)
    i = int(np.argmax(edges[3:]) + 3)  # a record after others with graphs: its senders, renumbered
    rec = dataset.record(i, ["crystal/senders", "crystal/distances"])
    n0, e0, ne = int(g["records"][i, 2]), int(g["records"][i, 3]), int(edges[i])
    assert ne > 0 and n0 > 0 and e0 == edges[:i].sum() and n0 == nodes[:i].sum()
    np.testing.assert_array_equal(g["ends"][e0:e0 + ne, 0] - n0, rec["crystal/senders"])
    np.testing.assert_array_equal(g["edges"]["distances"][e0:e0 + ne], rec["crystal/distances"])
