"""Featurisation driver: spec, per-material records, bad records, workers, shards."""

import gzip
import json

import ml_collections
import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from mmjax.data import store, store_writer
from mmjax.data.featurize import featurize_dataset, featurize_material, material_from_text, shard_range
from mmjax.data.spec import FeatureSpec
from mmjax.data.features.graph import neighbor_graph
from mmjax.data.material import DOS, Material, RecordError

SPEC = FeatureSpec(xrd_two_theta_range=(20.0, 60.0), xrd_step=0.1, dos_length=21, dos_range=(-2.0, 2.0),
                   targets=("gap",))


def perovskite(a=3.9, species=("Sr", "Ti", "O", "O", "O")):
    coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(a), list(species), coords)


def rocksalt(a):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def good_materials():
    dos = DOS(energies=np.linspace(-5, 5, 41), densities=np.abs(np.sin(np.linspace(0, 6, 41))), efermi=0.5)
    return [
        Material("srtio3", perovskite(), targets={"gap": 1.8}, dos=dos),
        Material("batio3", perovskite(4.0, ("Ba", "Ti", "O", "O", "O"))),  # no label, no DOS
        Material("nacl", rocksalt(5.64), targets={"gap": 5.0}),
        Material("comp-only", composition=Composition("Fe2O3"), targets={"gap": 2.1}),
    ]


def bad_materials():
    disordered = perovskite()
    disordered.replace(0, {"Sr": 0.5, "Ba": 0.5})
    nan_dos = DOS(energies=np.linspace(-5, 5, 11), densities=np.full(11, np.nan))
    return [
        Material("empty", structure=Structure(Lattice.cubic(3.0), [], [])),
        Material("disordered", disordered),
        Material("nan-dos", perovskite(), dos=nan_dos),
        Material("nine-elements", composition=Composition("LiBeNaMgKCaRbSrCs")),
    ]


def test_spec_from_config_and_defaults():
    cfg = ml_collections.ConfigDict({"graph": "potnet", "xrd": False, "targets": ["a", "b"],
                                     "dos_range": [-5.0, 5.0]})
    spec = FeatureSpec.from_config(cfg)
    assert (spec.cutoff, spec.max_neighbors) == (4.0, 16)  # PotNet defaults
    assert spec.targets == ("a", "b") and spec.dos_range == (-5.0, 5.0)
    assert FeatureSpec().cutoff == 8.0 and FeatureSpec().max_neighbors == 12
    assert FeatureSpec.from_config(spec.to_dict()) == spec  # JSON round trip
    json.dumps(spec.to_dict())
    with pytest.raises(ValueError, match="unknown FeatureSpec fields"):
        FeatureSpec.from_config({"grpah": "cgcnn"})
    with pytest.raises(ValueError, match="graph"):
        FeatureSpec(graph="schnet")


def test_featurize_material_record_layout():
    mat = good_materials()[0]
    rec = featurize_material(mat, SPEC)
    ref = neighbor_graph(mat.structure, cutoff=8.0, max_neighbors=12)
    np.testing.assert_array_equal(rec["crystal/senders"], ref["senders"])
    np.testing.assert_array_equal(rec["crystal/distances"], ref["distances"])
    assert rec["crystal/senders"].dtype == np.int32 and rec["crystal/distances"].dtype == np.float32
    assert rec["crystal/atomic_numbers"].tolist() == [38, 22, 8, 8, 8]
    assert len(rec["crystal/senders"]) == 5 * 12
    assert rec["xrd"].shape == (400,) and rec["xrd"].dtype == np.float32 and rec["xrd"].max() == pytest.approx(100)
    # SrTiO3 in this setting is cubic Pm-3m (221)
    assert int(rec["label/space_group"]) == 221 and int(rec["label/crystal_system"]) == 6
    assert sorted(rec["composition/atomic_numbers"].tolist()) == [8, 22, 38]
    np.testing.assert_allclose(rec["composition/fractions"].sum(), 1.0, rtol=1e-6)
    assert rec["dos/densities"].shape == (21,) and rec["dos/mask"].dtype == bool
    assert rec["target/gap"] == np.float32(1.8)
    other = featurize_material(good_materials()[1], SPEC)
    assert "target/gap" not in other and "dos/densities" not in other  # an unlabelled target is absent
    comp = featurize_material(good_materials()[3], SPEC)
    assert set(comp) == {"composition/atomic_numbers", "composition/fractions", "target/gap"}


@pytest.mark.parametrize("index, reason", [(0, "empty structure"), (1, "disordered"), (2, "DOS has no finite"),
                                           (3, "9 elements")])
def test_bad_material_raises_naming_it(index, reason):
    mat = bad_materials()[index]
    with pytest.raises(RecordError, match=reason) as err:
        featurize_material(mat, SPEC)
    assert err.value.record_id == mat.id


def test_bad_records_are_skipped_and_reported(tmp_path):
    mats = good_materials() + bad_materials()
    items = mats[:2] + mats[4:6] + mats[2:4] + mats[6:]  # interleave good and bad
    m = featurize_dataset(items, SPEC, tmp_path, num_workers=0, progress=False)
    assert m.counts == {"input": 8, "written": 4, "skipped": 4}
    assert {s["id"]: s["reason"].split(" ")[0] for s in m.skipped} == {
        "empty": "empty", "disordered": "disordered", "nan-dos": "DOS", "nine-elements": "9"}
    ds = store.Dataset.open(tmp_path)
    assert list(ds.ids) == ["srtio3", "batio3", "nacl", "comp-only"]
    assert m.availability["crystal"] == 3 and m.availability["dos"] == 1 and m.availability["composition"] == 4
    assert m.statistics["targets"]["gap"]["count"] == 3
    assert len(m.grids["dos/energies"]) == 21
    assert m.provenance["spec"]["targets"] == ["gap"]


def test_unparseable_text_is_reported(tmp_path):
    poscar = perovskite().to(fmt="poscar")
    items = [("ok", poscar, {"gap": 1.0}), ("garbage", "this is not a structure\n1.0\n"), ("ok2", poscar)]
    m = featurize_dataset(items, SPEC, tmp_path, num_workers=0, parse=material_from_text, progress=False)
    assert [s["id"] for s in m.skipped] == ["garbage"] and "parse" in m.skipped[0]["reason"]
    assert list(store.Dataset.open(tmp_path).ids) == ["ok", "ok2"]


def _all_records(path):
    ds = store.Dataset.open(path)
    return list(ds.ids), [ds[i] for i in range(len(ds))]


def _assert_same_records(a, b):
    assert a[0] == b[0]
    for ra, rb in zip(a[1], b[1]):
        assert set(ra) == set(rb)
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key], strict=True)


@pytest.fixture(scope="module")
def perovskite_items(shared_data):
    with gzip.open(shared_data / "perovskites" / "structures_all.json.gz", "rt") as f:
        doc = json.load(f)
    return [(rid, entry["poscar"]) for rid, entry in list(doc.items())[:24]]


def test_parallel_equals_serial_and_shards_merge(tmp_path, perovskite_items):
    spec = FeatureSpec(xrd_step=0.05)
    serial = featurize_dataset(perovskite_items, spec, tmp_path / "serial", num_workers=0, parse=material_from_text,
                               records_per_file=10, progress=False)
    parallel = featurize_dataset(perovskite_items, spec, tmp_path / "parallel", num_workers=2, chunk_size=5,
                                 parse=material_from_text, records_per_file=10, progress=False)
    assert serial.counts == parallel.counts == {"input": 24, "written": 24, "skipped": 0}
    reference = _all_records(tmp_path / "serial")
    _assert_same_records(reference, _all_records(tmp_path / "parallel"))
    assert serial.padding == parallel.padding and serial.statistics == parallel.statistics

    for k in range(3):
        featurize_dataset(perovskite_items, spec, tmp_path / "sharded", num_workers=0, shard_index=k, num_shards=3,
                          parse=material_from_text, records_per_file=10, progress=False)
    merged = store_writer.merge_manifests(tmp_path / "sharded")
    _assert_same_records(reference, _all_records(tmp_path / "sharded"))
    assert merged.counts == serial.counts and merged.availability == serial.availability
    assert merged.padding == serial.padding
    with pytest.raises(FileExistsError):
        featurize_dataset(perovskite_items, spec, tmp_path / "serial", num_workers=0, parse=material_from_text)


def test_shard_ranges_partition():
    for n in (0, 1, 7, 100):
        ranges = [shard_range(n, k, 3) for k in range(3)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)


def test_text_is_described_for_materials_without_their_own_text():
    """A material with no text gets a description (template here, robocrys off) stored with it."""
    from mmjax.data.features.text import template_description

    spec = FeatureSpec(graph=None, xrd=False, composition=False, symmetry=False, text=True, text_robocrys=False)
    m = Material("nacl", structure=rocksalt(5.64))
    rec = featurize_material(m, spec)
    assert rec["text/source"] == "template"
    assert rec["text/raw"] == template_description(m.structure)
    own = featurize_material(Material("own", structure=rocksalt(5.64), text="given", text_source="source"), spec)
    assert (own["text/raw"], own["text/source"]) == ("given", "source")
