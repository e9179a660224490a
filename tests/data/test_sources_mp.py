"""Materials Project documents: structures, DOS (plain and pymatgen layouts), CHGCAR grids, targets."""

import gzip
import json
import math

import numpy as np
import pytest
from monty.json import MontyEncoder
from pymatgen.core import Lattice, Structure
from pymatgen.electronic_structure.core import Spin
from pymatgen.electronic_structure.dos import Dos
from pymatgen.io.vasp.outputs import VolumetricData

from mmjax.data.sources import SourceError, parse_charge_density, parse_dos, read_mp_json


def si():
    return Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])


def nacl():
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


ENERGIES = np.linspace(-5.0, 5.0, 11)
UP = np.arange(11, dtype=float)
DOWN = 0.5 * np.arange(11, dtype=float)


def documents():
    grid = np.arange(24, dtype=float).reshape(2, 3, 4)
    chgcar = VolumetricData(si(), {"total": grid}).as_dict()
    return [
        {"material_id": "mp-149", "structure": si().as_dict(), "band_gap": 0.61, "formula_pretty": "Si",
         "is_stable": True, "nsites": 2,
         "dos": Dos(6.1, ENERGIES, {Spin.up: UP, Spin.down: DOWN}).as_dict(), "chgcar": chgcar},
        {"material_id": "mp-22862", "structure": nacl().as_dict(), "band_gap": 5.0,
         "dos": {"energies": ENERGIES.tolist(), "densities": UP.tolist(), "efermi": None},
         "charge_density": {"data": {"total": grid.tolist()}}},
        {"material_id": "mp-bad-dos", "structure": nacl().as_dict(), "band_gap": 1.0,
         "dos": {"energies": ENERGIES[::-1].tolist(), "densities": UP.tolist()}},
        {"material_id": "mp-no-structure", "band_gap": 1.0},
        {"structure": nacl().as_dict()},
    ]


def test_documents_list_with_dos_and_density(tmp_path):
    path = tmp_path / "mp.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(documents(), fh, cls=MontyEncoder)  # numpy arrays as monty dicts, like MP exports
    materials, errors = read_mp_json(path, targets=["band_gap"])
    assert [m.id for m in materials] == ["mp-149", "mp-22862"]
    si_mat, nacl_mat = materials
    assert si_mat.targets == {"band_gap": 0.61} and si_mat.meta["formula_pretty"] == "Si"
    assert si_mat.meta["nsites"] == 2 and si_mat.meta["is_stable"] is True
    np.testing.assert_array_equal(si_mat.dos.energies, ENERGIES)
    np.testing.assert_array_equal(si_mat.dos.densities, UP + DOWN)  # spin channels summed
    assert si_mat.dos.efermi == 6.1 and nacl_mat.dos.efermi is None
    expected = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for m in materials:
        assert m.charge_density.dtype == np.float32
        np.testing.assert_array_equal(m.charge_density, expected)
    reasons = {e.record_id: e.reason for e in errors}
    assert set(reasons) == {"mp-bad-dos (row 2)", "mp-no-structure (row 3)", "row 4"}
    assert "strictly increasing" in reasons["mp-bad-dos (row 2)"]
    assert "no 'structure'" in reasons["mp-no-structure (row 3)"]
    assert "no id field" in reasons["row 4"]


def test_default_targets_jsonl_and_api_response(tmp_path):
    docs = documents()[:2]
    for d in docs:
        d.pop("chgcar", None)
        d.pop("charge_density", None)
    lines = tmp_path / "mp.jsonl"
    lines.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    materials, errors = read_mp_json(lines)
    assert not errors and set(materials[0].targets) == {"band_gap", "nsites"}  # every top-level number
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"data": docs, "meta": {"total_doc": 2}}))
    assert read_mp_json(api, spin="up").materials[0].dos.densities.tolist() == UP.tolist()
    assert math.isnan(read_mp_json(api, targets=["e_form"]).materials[0].targets["e_form"])


def test_parse_dos_and_density_errors():
    with pytest.raises(ValueError, match="equal 1-D"):
        parse_dos({"energies": [0, 1, 2], "densities": [1, 2]})
    with pytest.raises(ValueError, match="spin-up channel"):
        parse_dos({"energies": [0, 1], "densities": {"-1": [1, 2]}})
    with pytest.raises(ValueError, match="3-D grid"):
        parse_charge_density({"data": {"total": [[1.0, 2.0]]}})
    with pytest.raises(ValueError, match="data\\['total'\\]"):
        parse_charge_density({"data": {"diff": [[[1.0]]]}})
    assert parse_charge_density([[[1.0, 2.0]]]).shape == (1, 1, 2)


def test_bad_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"unrelated": 1}')
    with pytest.raises(SourceError, match="expected a list of MP documents"):
        read_mp_json(path)
    path.write_text("[{")
    with pytest.raises(SourceError, match="is not JSON"):
        read_mp_json(path)
