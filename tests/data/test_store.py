"""Store: bit-exact round trip, manifest statistics, subsets, add_column, shard merging."""

import json
import pathlib
import pickle

import numpy as np
import pytest

from mmjax.data import store, store_writer
from mmjax.data.material import RecordError


def synthetic_record(rng, n_atoms, n_edges, *, xrd=True, dos=False, text=None, target=None, label=True):
    """A record in the schema.py layout with random values (no featurisers needed)."""
    rec = {
        "crystal/atomic_numbers": rng.integers(1, 90, n_atoms).astype(np.int32),
        "crystal/senders": rng.integers(0, n_atoms, n_edges).astype(np.int32),
        "crystal/receivers": rng.integers(0, n_atoms, n_edges).astype(np.int32),
        "crystal/distances": rng.uniform(1, 8, n_edges).astype(np.float32),
        "composition/atomic_numbers": rng.choice(np.arange(1, 90), 3, replace=False).astype(np.int32),
        "composition/fractions": np.array([0.2, 0.2, 0.6], np.float32),
        "target/e_form": np.float32(np.nan if target is None else target),
    }
    if label:
        rec["label/space_group"] = np.int32(rng.integers(1, 231))
        rec["label/crystal_system"] = np.int32(rng.integers(0, 7))
    if xrd:
        rec["xrd"] = rng.uniform(0, 100, 16).astype(np.float32)
    if dos:
        rec["dos/densities"] = rng.uniform(0, 3, 11).astype(np.float32)
        rec["dos/mask"] = rng.uniform(size=11) > 0.3
    if text is not None:
        rec["text/raw"], rec["text/source"] = text, "template"
    return rec


def write(root, records, records_per_file=3, shard_index=0, num_shards=1):
    writer = store_writer.StoreWriter(root, shard_index=shard_index, records_per_file=records_per_file)
    for rid, rec in records:
        writer.add(rid, rec)
    return store_writer.finish_manifest(root, writer, skipped=[], num_input=len(records), shard_index=shard_index,
                                 num_shards=num_shards, grids={"dos/energies": np.linspace(-1, 1, 11).tolist()})


@pytest.fixture()
def records():
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        rec = synthetic_record(rng, 2 + i, 3 * i, xrd=i % 3 != 0, dos=i % 2 == 0,
                               text=f"material {i} ünïcode" if i != 5 else None,
                               target=None if i in (1, 4) else float(i) * 0.5 - 1)
        if i == 6:
            rec.pop("label/space_group")
            rec.pop("label/crystal_system")
        out.append((f"m-{i}", rec))
    return out


def test_round_trip_is_bit_exact(tmp_path, records):
    m = write(tmp_path, records)
    ds = store.Dataset.open(tmp_path)
    assert len(ds) == len(records) == m.num_records
    assert len(m.files) == 3  # 3 + 3 + 2 records per chunk folder
    assert list(ds.ids) == [rid for rid, _ in records]
    for i, (_, rec) in enumerate(records):
        got = ds[i]
        assert set(got) == set(rec)
        for key, value in rec.items():
            if isinstance(value, str):
                assert got[key] == value
            else:
                assert got[key].dtype == np.asarray(value).dtype, key
                assert got[key].shape == np.asarray(value).shape, key
                np.testing.assert_array_equal(got[key], value, strict=True)
                assert got[key].tobytes() == np.asarray(value).tobytes()  # NaN payloads too
    assert ds[-1]["crystal/atomic_numbers"].shape == (9,)
    with pytest.raises(IndexError):
        ds[len(records)]


def test_files_hold_no_pickles(tmp_path, records):
    write(tmp_path, records)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".npy", ".json"}
    for p in files:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)  # raises for object arrays
            assert arr.dtype != object
        else:
            json.loads(p.read_text())


def test_manifest_counts_and_statistics(tmp_path, records):
    m = store.Manifest.load(write(tmp_path, records) and tmp_path / "manifest.json")
    assert m.counts == {"input": 8, "written": 8, "skipped": 0}
    assert m.availability["crystal"] == 8
    assert m.availability["xrd"] == sum(1 for _, r in records if "xrd" in r) == 5
    assert m.availability["dos"] == 4
    assert m.availability["text_raw"] == 7
    assert m.availability["label/space_group"] == 7
    assert m.schema["crystal/senders"] == {"kind": "array", "dtype": "<i4", "shape": [None], "ragged": True}
    assert m.schema["xrd"]["shape"] == [16] and not m.schema["xrd"]["ragged"]
    assert m.target_names == ["e_form"]
    # targets: over finite labels only
    y = np.array([r["target/e_form"] for _, r in records], np.float64)
    y = y[np.isfinite(y)]
    t = m.statistics["targets"]["e_form"]
    assert t["count"] == 6
    np.testing.assert_allclose([t["mean"], t["std"], t["mad"]], [y.mean(), y.std(), np.abs(y - y.mean()).mean()])
    # labels: histogram over present labels
    sg = [int(r["label/space_group"]) for _, r in records if "label/space_group" in r]
    assert m.statistics["labels"]["space_group"]["histogram"] == np.bincount(sg, minlength=231).tolist()
    # scales: over all xrd values; over masked DOS values
    x = np.concatenate([r["xrd"] for _, r in records if "xrd" in r]).astype(np.float64)
    np.testing.assert_allclose([m.statistics["scales"]["xrd"][k] for k in ("mean", "std", "max")],
                               [x.mean(), x.std(), x.max()], rtol=1e-10)
    d = np.concatenate([r["dos/densities"][r["dos/mask"]] for _, r in records if "dos/mask" in r]).astype(np.float64)
    np.testing.assert_allclose(m.statistics["scales"]["dos/densities"]["mean"], d.mean(), rtol=1e-10)
    # padding statistics per material
    nodes = np.array([len(r["crystal/atomic_numbers"]) for _, r in records])
    edges = np.array([len(r["crystal/senders"]) for _, r in records])
    p = m.padding
    assert p["crystal/nodes"]["max"] == 9 and p["crystal/nodes"]["max_id"] == "m-7"
    assert p["crystal/edges"]["max"] == 21
    np.testing.assert_allclose(p["crystal/edges"]["mean"], edges.mean())
    np.testing.assert_allclose(p["crystal/nodes"]["percentiles"]["90.0"], np.percentile(nodes, 90))
    assert m.grids["dos/energies"][0] == -1.0
    assert "mmjax_version" in m.provenance and "created" in m.provenance


def test_subset_and_columns(tmp_path, records):
    write(tmp_path, records)
    ds = store.Dataset.open(tmp_path)
    sub = ds.subset([6, 1, 4])
    assert len(sub) == 3 and list(sub.ids) == ["m-6", "m-1", "m-4"]
    np.testing.assert_array_equal(sub[0]["crystal/senders"], records[6][1]["crystal/senders"])
    sub2 = sub.subset([2, 0])
    assert list(sub2.ids) == ["m-4", "m-6"]
    present, y = sub.column("target/e_form")
    assert present.all() and np.isnan(y[1]) and y[0] == np.float32(2.0)
    present, texts = ds.column("text/raw")
    assert texts[5] is None and not present[5] and texts[0] == "material 0 ünïcode"
    nodes, edges = sub.graph_sizes()
    assert nodes.tolist() == [8, 3, 6] and edges.tolist() == [18, 3, 12]
    with pytest.raises(ValueError, match="ragged"):
        ds.column("crystal/senders")
    ds[0]  # opens memory maps; pickling must not carry them
    blob = pickle.dumps(sub)
    assert len(blob) < 20_000
    back = pickle.loads(blob)
    assert list(back.ids) == list(sub.ids)
    np.testing.assert_array_equal(back[1]["crystal/senders"], records[1][1]["crystal/senders"])


def test_add_column_in_place(tmp_path, records):
    write(tmp_path, records)
    ds = store.Dataset.open(tmp_path)
    emb = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    present = np.ones(8, bool)
    present[3] = False
    ds.add_column("text_embedding", emb, present=present)
    again = store.Dataset.open(tmp_path)
    assert again.manifest.availability["text"] == 7
    assert again.manifest.schema["text_embedding"]["shape"] == [4]
    np.testing.assert_array_equal(again[2]["text_embedding"], emb[2])
    assert "text_embedding" not in again[3]
    np.testing.assert_allclose(again.manifest.statistics["scales"]["text_embedding"]["mean"], emb[present].mean())
    # the other columns are untouched
    np.testing.assert_array_equal(again[7]["crystal/distances"], records[7][1]["crystal/distances"])
    with pytest.raises(ValueError, match="exists"):
        again.add_column("text_embedding", emb)
    again.add_column("text_embedding", emb * 2, overwrite=True)
    np.testing.assert_array_equal(store.Dataset.open(tmp_path)[3]["text_embedding"], emb[3] * 2)
    with pytest.raises(ValueError, match="8 records"):
        again.add_column("other", emb[:5])
    with pytest.raises(ValueError, match="subset"):
        again.subset([0]).add_column("x", emb[:1])


def test_writer_rejects_inconsistent_records(tmp_path):
    rng = np.random.default_rng(1)
    writer = store_writer.StoreWriter(tmp_path)
    writer.add("a", synthetic_record(rng, 3, 4))
    bad = synthetic_record(rng, 3, 4)
    bad["xrd"] = np.zeros(17, np.float32)
    with pytest.raises(RecordError, match="'b'.*xrd.*shape"):
        writer.add("b", bad)
    with pytest.raises(RecordError, match="duplicate id"):
        writer.add("a", synthetic_record(rng, 3, 4))
    assert writer.num_records == 1
    # declared dtypes are enforced by casting (int64 senders -> int32)
    rec = synthetic_record(rng, 3, 4)
    rec["crystal/senders"] = rec["crystal/senders"].astype(np.int64)
    writer.add("c", rec)
    assert writer.num_records == 2


def test_merge_shards(tmp_path, records):
    root = tmp_path / "sharded"
    write(root, records[:3], shard_index=0, num_shards=2)
    with pytest.raises(FileNotFoundError, match="merge_manifests"):
        store.Dataset.open(root)
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        store_writer.merge_manifests(root)
    write(root, records[3:], shard_index=1, num_shards=2)
    merged = store_writer.merge_manifests(root)
    single = write(tmp_path / "single", records)
    ds = store.Dataset.open(root)
    assert list(ds.ids) == [rid for rid, _ in records]
    for key in ("availability", "statistics", "padding", "counts", "schema"):
        assert getattr(merged, key) == getattr(single, key), key
    for i in range(len(records)):
        np.testing.assert_array_equal(ds[i]["crystal/receivers"], records[i][1]["crystal/receivers"])
    assert pathlib.Path(root / "manifest.json").exists()
