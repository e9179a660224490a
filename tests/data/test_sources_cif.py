"""CIF / POSCAR folder reader and the structure-text parser (fast POSCAR path vs pymatgen)."""

import gzip

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from mmjax.data.material import RecordError
from mmjax.data.sources import SourceError, read_structure_file, read_structure_folder
from mmjax.data.sources.structure_text import _fast_poscar, detect_format, parse_structure


def rocksalt(a=5.64):
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def wurtzite():
    lat = Lattice.hexagonal(3.25, 5.21)
    return Structure(lat, ["Zn", "Zn", "O", "O"],
                     [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "nacl.cif").write_text(str(CifWriter(rocksalt())))
    (tmp_path / "zno.vasp").write_text(Poscar(wurtzite()).get_str())
    kcl = Structure(Lattice.cubic(6.29), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (tmp_path / "POSCAR_kcl").write_text(Poscar(kcl).get_str())
    with gzip.open(tmp_path / "gz_nacl.cif.gz", "wt") as fh:
        fh.write(str(CifWriter(rocksalt(5.5))))
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3.0\nloop_\n_atom_site_label\n")
    (tmp_path / "empty.vasp").write_text("")
    (tmp_path / "notes.txt").write_text("not a structure")
    return tmp_path


def test_folder_reads_good_files_and_names_bad_ones(folder):
    materials, errors = read_structure_folder(folder)
    ids = [m.id for m in materials]
    assert ids == ["POSCAR_kcl", "gz_nacl", "nacl", "zno"]  # sorted by file name, notes.txt ignored
    by_id = {m.id: m for m in materials}
    assert by_id["nacl"].composition.reduced_formula == "NaCl"
    assert by_id["zno"].composition.formula == "Zn2 O2"
    assert by_id["POSCAR_kcl"].composition.reduced_formula == "KCl"
    np.testing.assert_allclose(by_id["nacl"].structure.lattice.abc, (5.64, 5.64, 5.64), atol=1e-6)
    np.testing.assert_allclose(by_id["gz_nacl"].structure.volume, 5.5**3, rtol=1e-6)
    np.testing.assert_allclose(by_id["zno"].structure.frac_coords, wurtzite().frac_coords, atol=1e-8)
    assert by_id["nacl"].meta["source_file"].endswith("nacl.cif")
    reasons = {e.record_id: e.reason for e in errors}
    assert set(reasons) == {"broken.cif", "empty.vasp"}
    assert "does not parse" in reasons["broken.cif"] or "no atomic sites" in reasons["broken.cif"]
    assert reasons["empty.vasp"] == "file is empty"
    assert all(isinstance(e, RecordError) and e.record_id in str(e) for e in errors)


def test_folder_limit_single_file_and_all_files(folder):
    first_two = read_structure_folder(folder, limit=2)  # limit counts files: POSCAR_kcl, broken.cif
    assert first_two.ids() == ["POSCAR_kcl"] and [e.record_id for e in first_two.errors] == ["broken.cif"]
    single = read_structure_folder(folder / "zno.vasp")
    assert single.ids() == ["zno"] and not single.errors
    (folder / "mystery").write_text(Poscar(rocksalt()).get_str())
    assert "mystery" not in read_structure_folder(folder).ids()
    everything = read_structure_folder(folder, all_files=True)
    assert "mystery" in everything.ids()
    assert "notes.txt" in {e.record_id for e in everything.errors}  # tried, reported, others kept


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read_structure_folder(tmp_path / "absent")
    with pytest.raises(SourceError, match="holds no CIF/POSCAR"):
        read_structure_folder(tmp_path)
    with pytest.raises(RecordError, match="bad.cif"):
        (tmp_path / "bad.cif").write_text("garbage\n")
        read_structure_file(tmp_path / "bad.cif")


def test_duplicate_stems_get_suffix(tmp_path, caplog):
    (tmp_path / "x.cif").write_text(str(CifWriter(rocksalt())))
    (tmp_path / "x.vasp").write_text(Poscar(rocksalt()).get_str())
    with caplog.at_level("WARNING", logger="mmjax.data.sources.result"):
        result = read_structure_folder(tmp_path)
    assert result.ids() == ["x", "x#2"]
    assert "1 id(s) occur more than once (e.g. 'x'); the repeats are renamed '<id>#2'" in caplog.text
    assert result.materials[1].meta["source_id"] == "x"
    with pytest.raises(SourceError, match="more than once"):
        read_structure_folder(tmp_path, duplicate_ids="error")


def test_detect_format():
    assert detect_format(str(CifWriter(rocksalt()))) == "cif"
    assert detect_format(Poscar(rocksalt()).get_str()) == "poscar"
    with pytest.raises(ValueError, match="empty"):
        parse_structure("   \n")


POSCAR_VARIANTS = {
    "cartesian_scaled": "NaCl\n2.0\n2.8 0 0\n0 2.8 0\n0 0 2.8\nNa Cl\n1 1\nCartesian\n0 0 0\n2.8 2.8 2.8\n",
    "selective": "x\n1.0\n4 0 0\n0 4 0\n0 0 4\nFe_pv O\n1 2\nSelective dynamics\nDirect\n"
    "0 0 0 T T F\n0.5 0.5 0 F F F\n0.5 0 0.5 T T T\n",
    "negative_scale": "x\n-64.0\n4 0 0\n0 4 0\n0 0 4\nCu\n1\nDirect\n0.1 0.2 1.3\n",
}


@pytest.mark.parametrize("name", sorted(POSCAR_VARIANTS))
def test_poscar_variants_match_pymatgen(name):
    text = POSCAR_VARIANTS[name]
    ours = parse_structure(text)
    ref = Poscar.from_str(text).structure
    np.testing.assert_allclose(ours.lattice.matrix, ref.lattice.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.frac_coords, ref.frac_coords, rtol=0, atol=1e-12)
    assert [s.species_string for s in ours] == [s.species_string for s in ref]
    if name == "negative_scale":
        assert _fast_poscar(text) is None  # volume-scaled files go to pymatgen's parser
        np.testing.assert_allclose(ours.volume, 64.0)
    if name == "cartesian_scaled":
        np.testing.assert_allclose(ours.frac_coords[1], [1.0, 1.0, 1.0])  # 5.6 A in a 5.6 A cell, unwrapped


def _same_structure(a, b):
    np.testing.assert_array_equal(a.lattice.matrix, b.lattice.matrix)
    np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
    assert [s.species_string for s in a] == [s.species_string for s in b]
    assert a.labels == b.labels


def test_fast_p1_cif_equals_cifparser_on_real_rows(shared_data):
    import pandas as pd

    from mmjax.data.sources.structure_text import _fast_p1_cif

    for name in ("mp40/mp40_test.csv.gz", "perovskites/labelled.csv.gz"):
        for cif in pd.read_csv(shared_data / name, nrows=25)["cif"]:
            fast = _fast_p1_cif(cif)
            assert fast is not None  # pymatgen-written P1 CIFs take the fast path
            _same_structure(fast, Structure.from_str(cif, fmt="cif"))


def test_symmetrised_or_partial_cifs_fall_back_to_cifparser():
    from mmjax.data.sources.structure_text import _fast_p1_cif

    symmetrised = str(CifWriter(wurtzite(), symprec=0.01))  # P6_3mc with 12 symmetry operations
    assert _fast_p1_cif(symmetrised) is None
    parsed = parse_structure(symmetrised)
    assert parsed.composition.formula == "Zn2 O2"
    np.testing.assert_allclose(parsed.volume, wurtzite().volume, rtol=1e-6)
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    text = str(CifWriter(disordered))
    assert _fast_p1_cif(text) is None
    assert parse_structure(text).composition.as_dict() == {"Fe": 0.5, "Co": 0.5}
    thirds = str(CifWriter(wurtzite())).replace("0.33333333", "0.33334")  # CifParser snaps to 1/3
    _same_structure(_fast_p1_cif(thirds), Structure.from_str(thirds, fmt="cif"))


def cgcnn_root(tmp_path, id_prop: str):
    """A CGCNN root_dir (txie-93/cgcnn CIFData layout): <id>.cif files and id_prop.csv."""
    (tmp_path / "a.cif").write_text(str(CifWriter(rocksalt())))
    (tmp_path / "b.cif").write_text(str(CifWriter(rocksalt(5.5))))
    (tmp_path / "c.cif").write_text("data_x\n_cell_length_a 3.0\nloop_\n_atom_site_label\n")
    (tmp_path / "unlisted.cif").write_text(str(CifWriter(rocksalt(6.0))))
    (tmp_path / "id_prop.csv").write_text(id_prop)
    return tmp_path


def test_cgcnn_root_dir_reads_id_prop_rows_in_order_with_targets(tmp_path):
    root = cgcnn_root(tmp_path, "b,-0.5\na,1.25\nc,3\nmissing,2\nb,7\nd,nan\n")
    materials, errors = read_structure_folder(root)
    assert [m.id for m in materials] == ["b", "a"]  # id_prop order; unlisted.cif is not read
    assert [m.targets for m in materials] == [{"target": -0.5}, {"target": 1.25}]
    np.testing.assert_allclose(materials[0].structure.volume, 5.5**3, rtol=1e-6)
    reasons = {e.record_id: e.reason for e in errors}
    assert set(reasons) == {"c.cif", "missing", "b", "d"}
    assert "missing.cif is not in" in reasons["missing"]
    assert "listed twice" in reasons["b"] and "not finite" in reasons["d"]
    # id_prop=False reads the files alone, without targets
    alone, _ = read_structure_folder(root, id_prop=False)
    assert [m.id for m in alone] == ["a", "b", "unlisted"] and all(not m.targets for m in alone)


def test_cgcnn_root_dir_several_targets_and_bad_layouts(tmp_path):
    root = cgcnn_root(tmp_path, "a,1,2\nb,3,4\n")
    materials, errors = read_structure_folder(root, limit=1)
    assert not errors and [m.targets for m in materials] == [{"target_0": 1.0, "target_1": 2.0}]
    (root / "id_prop.csv").write_text("a,1,2\nb,3\n")
    with pytest.raises(SourceError, match="line 2 has 2 columns"):
        read_structure_folder(root)
    (root / "id_prop.csv").write_text("a\n")
    with pytest.raises(SourceError, match="line 1 has 1 columns"):
        read_structure_folder(root)
    (root / "id_prop.csv").write_text("\n")
    with pytest.raises(SourceError, match="no rows"):
        read_structure_folder(root)
    (root / "id_prop.csv").write_text("a,x\nb,2\n")
    materials, errors = read_structure_folder(root)
    assert [m.id for m in materials] == ["b"] and "not a number" in errors[0].reason


def test_cgcnn_root_dir_ids_with_folders_unlisted_files_and_options(tmp_path, caplog):
    """Row ids name sub-folders as CGCNN's os.path.join does; unlisted files and a differing
    atom_init.json are warned about in one line each; options that id_prop.csv overrides raise."""
    root = cgcnn_root(tmp_path, "s1/x,1\ns2/x,2\na,3\n")
    for sub, a in (("s1", 5.0), ("s2", 6.0)):
        (root / sub).mkdir()
        (root / sub / "x.cif").write_text(str(CifWriter(rocksalt(a))))
    (root / "atom_init.json").write_text('{"1": [0.0, 1.0], "8": [1.0, 0.0]}')
    with caplog.at_level("WARNING", logger="mmjax.data.sources.cif"):
        materials, errors = read_structure_folder(root)
    assert [m.id for m in materials] == ["s1/x", "s2/x", "a"] and not errors
    assert [m.targets["target"] for m in materials] == [1.0, 2.0, 3.0]
    np.testing.assert_allclose([m.structure.volume for m in materials[:2]], [125.0, 216.0], rtol=1e-6)
    text = caplog.text
    assert "3 structure file(s) not listed in id_prop.csv" in text and "unlisted.cif" in text
    assert "atom_init.json is not read as data" in text and "element_table" in text
    for option in (dict(recursive=True), dict(all_files=True), dict(duplicate_ids="error")):
        with pytest.raises(ValueError, match="id_prop=False"):
            read_structure_folder(root, **option)
    # every file listed, no atom_init.json: nothing to warn about
    caplog.clear()
    (root / "atom_init.json").unlink()
    for name in ("b", "c", "unlisted"):
        (root / f"{name}.cif").unlink()
    with caplog.at_level("WARNING", logger="mmjax.data.sources.cif"):
        read_structure_folder(root)
    assert caplog.text == ""
