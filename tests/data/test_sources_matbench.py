"""Matbench reader: matminer json.gz layout (fixtures), label artifacts (real), cached loader (offline)."""

import gzip
import json

import numpy as np
import pytest
from pymatgen.core import Composition

from mmjax.data.sources import SourceError, load_matbench, read_matbench
from mmjax.data.sources import matbench as matbench_module
from mmjax.data.sources.matbench import matbench_mbid
from mmjax.data.sources.poscar_json import read_poscar_json


@pytest.fixture(scope="module")
def real_structures(shared_data):
    """Five real JARVIS structures."""
    return [m.structure for m in read_poscar_json(shared_data / "jarvis" / "alignn_samples.json.gz", limit=5).materials]


def write_split_json(path, columns, rows, index=None):
    """pandas/matminer 'split' orientation, gzip-compressed like matminer's files."""
    doc = {"index": list(range(len(rows))) if index is None else index, "columns": columns, "data": rows}
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(doc, fh)


def test_matminer_structure_layout(tmp_path, real_structures):
    path = tmp_path / "matbench_dielectric.json.gz"
    ys = [1.5, 2.25, 3.0, 1.75, 2.5]
    write_split_json(path, ["structure", "n"], [[s.as_dict(), y] for s, y in zip(real_structures, ys)])
    materials, errors = read_matbench(path)
    assert not errors and [m.id for m in materials] == [f"mb-dielectric-{i}" for i in range(1, 6)]
    assert [m.targets["n"] for m in materials] == ys
    for m, s in zip(materials, real_structures):
        np.testing.assert_allclose(m.structure.lattice.matrix, s.lattice.matrix)
        np.testing.assert_allclose(m.structure.frac_coords, s.frac_coords)
        assert m.composition == s.composition
    assert [m.meta["source_row"] for m in materials] == list(range(5))
    assert len(read_matbench(path, limit=2).materials) == 2


def test_matminer_composition_layout_and_bad_rows(tmp_path, real_structures):
    path = tmp_path / "matbench_expt_gap.json.gz"
    write_split_json(path, ["composition", "gap expt"],
                     [["Ag(AuS)2", 0.0], [{"Fe": 2.0, "O": 3.0, "@module": "pymatgen.core.composition"}, 2.1],
                      ["", 1.0], ["ZnO", "wide"]])
    materials, errors = read_matbench(path)
    assert [m.id for m in materials] == ["mb-expt-gap-1", "mb-expt-gap-2"]
    assert materials[0].composition == Composition("AgAu2S2") and materials[0].structure is None
    assert materials[1].composition == Composition("Fe2O3") and materials[1].targets == {"gap expt": 2.1}
    assert [e.record_id for e in errors] == ["mb-expt-gap-3 (row 2)", "mb-expt-gap-4 (row 3)"]
    assert "'gap expt' is not a number" in errors[1].reason
    broken = tmp_path / "other.json.gz"
    write_split_json(broken, ["structure", "e_form"], [[{"lattice": {}}, 1.0], [real_structures[0].as_dict(), 2.0]],
                     index=["x", "y"])
    materials, errors = read_matbench(broken)  # no matbench_ name: ids are the index values
    assert [m.id for m in materials] == ["y"] and errors[0].record_id == "x (row 0)"


def test_written_by_matminer_itself(tmp_path, real_structures):
    io = pytest.importorskip("matminer.utils.io", reason="matminer (robocrys dependency) not installed")
    import pandas as pd

    frame = pd.DataFrame({"structure": real_structures[:3], "e_form": [0.5, -1.0, 2.0]})
    path = tmp_path / "matbench_perovskites.json.gz"
    io.store_dataframe_as_json(frame, str(path), compression="gz", pbar=False)
    materials, errors = read_matbench(path)
    assert not errors and [m.targets["e_form"] for m in materials] == [0.5, -1.0, 2.0]
    assert materials[2].id == "mb-perovskites-3" and materials[2].composition == real_structures[2].composition


def test_label_artifact_layout(shared_data):
    materials, errors = read_matbench(shared_data / "matbench" / "matbench_dielectric.json.bz2")
    assert len(materials) == 4764 and not errors
    assert materials[0].id == "mb-dielectric-0001" == matbench_mbid("matbench_dielectric", 0, 4764)
    assert all(m.structure is None and m.composition.num_atoms > 0 for m in materials[:50])
    assert set(materials[0].targets) == {"n"} and materials[0].targets["n"] > 1
    assert 1 <= materials[0].meta["spg_num"] <= 230 and materials[0].meta["crys_sys"]
    gvrh = read_matbench(shared_data / "matbench" / "matbench_log_gvrh.json.bz2", limit=10)
    assert [m.id for m in gvrh.materials][:2] == ["mb-log-gvrh-00001", "mb-log-gvrh-00002"]
    assert list(gvrh.materials[0].targets) == ["log10(G_VRH)"]


def test_wrong_layouts(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"foo": [1]}))
    with pytest.raises(SourceError, match="not a Matbench file"):
        read_matbench(path)
    path.write_text(json.dumps({"mbid": {"0": "mb-a-1"}, "e_form": {"0": 1.0}}))
    with pytest.raises(SourceError, match="expected columns mbid, composition"):
        read_matbench(path)


def test_load_matbench_uses_cache_and_never_needs_network(tmp_path, real_structures, monkeypatch):
    write_split_json(tmp_path / "matbench_log_kvrh.json.gz", ["structure", "log10(K_VRH)"],
                     [[s.as_dict(), 1.0 + i] for i, s in enumerate(real_structures)])
    cached = load_matbench("log_kvrh", cache_dir=tmp_path)
    assert len(cached.materials) == 5 and cached.materials[4].targets["log10(K_VRH)"] == 5.0

    with pytest.raises(SourceError, match=r"matbench_jdft2d.json.gz.*not found in.*download=False"):
        load_matbench("jdft2d", cache_dir=tmp_path, download=False)

    def offline(url, dest, timeout=60.0):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(matbench_module, "_fetch", offline)
    with pytest.raises(SourceError) as info:
        load_matbench("matbench_jdft2d", cache_dir=tmp_path)
    message = str(info.value)
    assert "https://ml.materialsproject.org/projects/matbench_jdft2d.json.gz" in message
    assert str(tmp_path) in message and "network" in message

    def tampered(url, dest, timeout=60.0):
        dest.write_bytes(b"not the real file")

    monkeypatch.setattr(matbench_module, "_fetch", tampered)
    with pytest.raises(SourceError, match="sha256"):
        load_matbench("jdft2d", cache_dir=tmp_path)
    assert not (tmp_path / "matbench_jdft2d.json.gz").exists()  # a bad download is not left in the cache
    with pytest.raises(KeyError, match="unknown Matbench task"):
        load_matbench("nope", cache_dir=tmp_path)


def test_mbid_width_rule():
    assert matbench_mbid("matbench_steels", 0, 312) == "mb-steels-001"
    assert matbench_mbid("matbench_mp_e_form", 132751, 132752) == "mb-mp-e-form-132752"
    assert matbench_mbid("matbench_perovskites", 9, 18928) == "mb-perovskites-00010"
    assert matbench_mbid("matbench_x", 0, 1000) == "mb-x-0001"  # 10**3 rows need 4 digits
