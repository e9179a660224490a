"""benchmarks/original_code.py without torch or the original code: the CGCNN root_dir it prepares
(CIFs that pymatgen reads back as the POSCARs, id_prop.csv = the links file's e_form, CGCNN's 92-d
atom_init.json), CrabNet's scratch folder, and the parser of main.py's per-batch lines."""

import csv
import gzip
import importlib.util
import json
import math
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "original_code.py"


def _load():
    # own module name: benchmarks/ must not go on sys.path (its crabnet.py / matbench.py shadow packages)
    spec = importlib.util.spec_from_file_location("original_code_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


oc = _load()

# main.py's train() output with --print-freq 1 (format of its print), two epochs of 3 batches, with the
# lines main.py prints around them.
SAMPLE_LOG = """[Warning] train_ratio is None, using all training data.
Epoch: [0][0/3]\tTime 2.000 (2.000)\tData 1.500 (1.500)\tLoss 1.3164 (1.3164)\tMAE 0.588 (0.588)
Epoch: [0][1/3]\tTime 1.000 (1.500)\tData 0.500 (1.000)\tLoss 2.2401 (1.7782)\tMAE 0.863 (0.726)
Epoch: [0][2/3]\tTime 0.500 (1.167)\tData 0.250 (0.750)\tLoss 1.4994 (1.6853)\tMAE 0.625 (0.692)
Test: [0/1]\tTime 0.130 (0.130)\tLoss 0.8379 (0.8379)\tMAE 0.467 (0.467)
 * MAE 0.467
Epoch: [1][0/3]\tTime 0.250 (0.250)\tData 0.006 (0.006)\tLoss 0.8658 (0.8658)\tMAE 0.506 (0.506)
Epoch: [1][1/3]\tTime 0.250 (0.250)\tData 0.006 (0.006)\tLoss 0.7438 (0.8048)\tMAE 0.468 (0.487)
Epoch: [1][2/3]\tTime 0.100 (0.200)\tData 0.010 (0.007)\tLoss 0.6781 (0.7626)\tMAE 0.436 (0.470)
Test: [0/1]\tTime 0.120 (0.120)\tLoss 0.8079 (0.8079)\tMAE 0.457 (0.457)
 * MAE 0.457
---------Evaluate Model on Test Set---------------
Test: [0/1]\tTime 1.226 (1.226)\tLoss 0.8068 (0.8068)\tMAE 0.479 (0.479)
 ** MAE 0.479
"""


def test_parse_cgcnn_log_structures_per_s():
    per_epoch = oc.parse_cgcnn_log(SAMPLE_LOG, n_train=600)
    assert [r["epoch"] for r in per_epoch] == [0, 1]
    assert [r["batches"] for r in per_epoch] == [3, 3]
    assert per_epoch[0]["time_s"] == pytest.approx(3.5)
    assert per_epoch[0]["data_s"] == pytest.approx(2.25)
    assert per_epoch[0]["structures_per_s"] == pytest.approx(600 / 3.5)
    assert per_epoch[1]["time_s"] == pytest.approx(0.6)
    assert per_epoch[1]["structures_per_s"] == pytest.approx(1000.0)
    s = oc.summarise(per_epoch, "structures_per_s")
    assert s["first_epoch"] == pytest.approx(600 / 3.5)
    assert s["median_after_first"] == pytest.approx(1000.0)


def test_parse_cgcnn_log_needs_every_batch():
    # main.py's default --print-freq 10 prints only batch 0 of a 3-batch epoch: refused, not misread
    cut = "\n".join(l for l in SAMPLE_LOG.splitlines() if "][1/3]" not in l and "][2/3]" not in l)
    with pytest.raises(ValueError, match="print-freq 1"):
        oc.parse_cgcnn_log(cut, n_train=600)


def test_cgcnn_train_size_is_main_py_default_split():
    # get_train_val_test_loader: train_ratio = 1 - 0.1 - 0.1, int(train_ratio * N)
    assert oc.cgcnn_train_size(2048) == 1638
    assert oc.cgcnn_train_size(4096) == int((1 - 0.1 - 0.1) * 4096)


def test_prepare_cgcnn_root_dir(shared_data, tmp_path):
    from pymatgen.core import Structure

    n = 12
    info = oc.prepare_cgcnn(n, tmp_path)
    assert info["rows"] == n
    cifs = sorted(tmp_path.glob("*.cif"))
    assert len(cifs) == n
    with gzip.open(shared_data / "perovskites" / "matbench_links.csv.gz", "rt", newline="") as fh:
        links = [(r["material_id"], float(r["e_form"])) for r in csv.DictReader(fh)][:n]
    with open(tmp_path / "id_prop.csv", newline="") as fh:
        id_prop = [(r[0], float(r[1])) for r in csv.reader(fh)]
    assert id_prop == links  # same ids, same order, e_form exactly
    with gzip.open(shared_data / "perovskites" / "structures_all.json.gz", "rt") as fh:
        poscars = json.load(fh)
    for mid, _ in id_prop:
        s = Structure.from_file(tmp_path / f"{mid}.cif")
        ref = Structure.from_str(poscars[mid]["poscar"], fmt="poscar")
        assert len(s) == 5
        assert s.composition == ref.composition
        assert s.lattice.abc == pytest.approx(ref.lattice.abc, abs=1e-5)
        assert s.frac_coords == pytest.approx(ref.frac_coords, abs=1e-6)
    atom_init = json.loads((tmp_path / "atom_init.json").read_text())
    assert sorted(atom_init, key=int) == [str(z) for z in range(1, 101)]
    assert all(len(v) == 92 and set(v) <= {0, 1} for v in atom_init.values())


def test_prepare_crabnet_scratch(shared_data, tmp_path):
    oc.prepare_crabnet_scratch("mp_bulk_modulus", tmp_path, rows=10)
    train = tmp_path / "data" / "materials_data" / "mp_bulk_modulus" / "train.csv"
    with open(train, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and set(rows[0]) == {"formula", "target"}
    assert math.isfinite(float(rows[0]["target"]))
    header = (tmp_path / "data" / "element_properties" / "mat2vec.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "element" and len(header) == 201
