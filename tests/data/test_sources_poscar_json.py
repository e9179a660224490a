"""{id: {"poscar": ...}} reader on the CDVAE and JARVIS files; fast POSCAR path equals pymatgen's."""

import json
import math

import numpy as np
import pytest
from pymatgen.io.vasp import Poscar

from mmjax.data.sources import SourceError, read_poscar_json
from mmjax.data.sources.compressed import load_json


def test_perovskite_structures_all(shared_data):
    materials, errors = read_poscar_json(shared_data / "perovskites" / "structures_all.json.gz")
    assert len(materials) == 18928 and not errors
    assert all(len(m.structure) == 5 for m in materials)
    splits = [m.meta["cdvae_split"] for m in materials]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (11356, 3787, 3785)
    assert all(m.targets == {} for m in materials[:10])


def test_carbon24_structures_head(shared_data):
    materials, errors = read_poscar_json(shared_data / "carbon24" / "structures_all.json.gz", limit=300)
    assert len(materials) == 300 and not errors
    assert all(m.composition.reduced_formula == "C" and 6 <= len(m.structure) <= 24 for m in materials)


def test_jarvis_samples_and_edos(shared_data):
    materials, errors = read_poscar_json(shared_data / "jarvis" / "alignn_samples.json.gz")
    assert len(materials) == 70 and not errors
    assert all(m.id.startswith("JVASP-") for m in materials)
    labelled = [m for m in materials if not math.isnan(m.targets["band_gap"])]
    assert len(labelled) == 50  # the other 20 are null in the source
    edos, errors = read_poscar_json(shared_data / "jarvis" / "alignn_multi_prop_edos.json.gz")
    assert len(edos) == 50 and not errors and len(edos[0].meta["edos_up"]) == 300


def test_fast_poscar_equals_pymatgen_on_real_files(shared_data):
    raw = load_json(shared_data / "jarvis" / "alignn_samples.json.gz")
    raw.update(dict(list(load_json(shared_data / "carbon24" / "structures_all.json.gz").items())[:50]))
    result = read_poscar_json(shared_data / "jarvis" / "alignn_samples.json.gz")
    by_id = {m.id: m.structure for m in result.materials}
    for rid, rec in raw.items():
        ref = Poscar.from_str(rec["poscar"]).structure
        ours = by_id.get(rid)
        if ours is None:
            from mmjax.data.sources.structure_text import parse_structure

            ours = parse_structure(rec["poscar"])
        np.testing.assert_array_equal(ours.lattice.matrix, ref.lattice.matrix)
        np.testing.assert_array_equal(ours.frac_coords, ref.frac_coords)
        assert [s.species_string for s in ours] == [s.species_string for s in ref]


def test_bad_entries_and_files(tmp_path):
    good = "x\n1.0\n4 0 0\n0 4 0\n0 0 4\nCu\n1\nDirect\n0 0 0\n"
    path = tmp_path / "s.json"
    path.write_text(json.dumps({
        "a": {"poscar": good, "gap": 1.0},
        "b": {"poscar": "not a poscar", "gap": 2.0},
        "c": {"gap": 3.0},
        "d": {"poscar": good, "gap": None},
    }))
    materials, errors = read_poscar_json(path)
    assert [m.id for m in materials] == ["a", "d"]
    assert materials[0].targets == {"gap": 1.0} and math.isnan(materials[1].targets["gap"])
    reasons = {e.record_id: e.reason for e in errors}
    assert set(reasons) == {"b", "c"}
    assert "POSCAR does not parse" in reasons["b"] and "no structure field" in reasons["c"]
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(SourceError, match="empty.json.*file is empty"):
        read_poscar_json(empty)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match="expected a non-empty JSON object"):
        read_poscar_json(tmp_path / "list.json")
