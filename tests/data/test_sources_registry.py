"""SOURCES registry and read_source dispatch by name and by path."""

import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from mmjax.data.material import Material
from mmjax.data.sources import SOURCES, ReadResult, SourceError, detect_source, read_source


def test_registry_names():
    assert set(SOURCES) == {"cif", "csv", "poscar_json", "matbench", "matbench_task", "mp", "alexandria", "prototypes"}
    assert all(callable(reader) for reader in SOURCES.values())


def test_detect_source_on_real_files(shared_data):
    assert detect_source(shared_data / "perovskites" / "labelled.csv.gz") == "csv"
    assert detect_source(shared_data / "perovskites" / "structures_all.json.gz") == "poscar_json"
    assert detect_source(shared_data / "jarvis" / "alignn_samples.json.gz") == "poscar_json"
    assert detect_source(shared_data / "matbench" / "matbench_perovskites.json.bz2") == "matbench"
    result = read_source(shared_data / "jarvis" / "alignn_samples.json.gz", limit=3)
    assert isinstance(result, ReadResult) and len(result.materials) == 3


def test_detect_source_on_written_files(tmp_path):
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (tmp_path / "cifs").mkdir()
    (tmp_path / "cifs" / "nacl.cif").write_text(str(CifWriter(nacl)))
    (tmp_path / "mp.json").write_text(json.dumps([{"material_id": "mp-1", "structure": nacl.as_dict()}]))
    (tmp_path / "alex.json").write_text(json.dumps({"entries": []}))
    (tmp_path / "odd.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "odd.txt").write_text("?")
    assert detect_source(tmp_path / "cifs") == "cif"
    assert detect_source(tmp_path / "cifs" / "nacl.cif") == "cif"
    assert detect_source(tmp_path / "mp.json") == "mp"
    assert detect_source(tmp_path / "alex.json") == "alexandria"
    assert read_source(tmp_path / "cifs").ids() == ["nacl"]
    assert read_source("mp", tmp_path / "mp.json").ids() == ["mp-1"]
    with pytest.raises(SourceError, match="JSON layout not recognised"):
        read_source(tmp_path / "odd.json")
    with pytest.raises(SourceError, match="unknown file type '.txt'"):
        read_source(tmp_path / "odd.txt")
    with pytest.raises(SourceError, match="no such file"):
        read_source(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown source name"):
        read_source("parquet", tmp_path / "mp.json")


def test_matbench_task_name_goes_to_the_cached_loader(tmp_path):
    with pytest.raises(SourceError, match="matbench_perovskites.json.gz.*not found"):
        read_source("matbench_perovskites", cache_dir=tmp_path, download=False)


def test_prototypes_through_the_registry():
    result = read_source("prototypes", n=3, seed=0)
    assert len(result.materials) == 3 and not result.errors
    assert all(isinstance(m, Material) and m.structure is not None for m in result.materials)
    assert len(set(result.ids())) == 3
