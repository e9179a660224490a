"""Alexandria dumps of ComputedStructureEntry dicts."""

import bz2
import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry, ManualEnergyAdjustment

from mmjax.data.sources import SourceError, read_alexandria


def entries():
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    gaas = Structure(Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    return [
        ComputedStructureEntry(nacl, -6.8, energy_adjustments=[ManualEnergyAdjustment(-0.4)],
                               data={"mat_id": "agm002153", "e_form": -2.1, "e_above_hull": 0.0,
                                     "band_gap_ind": 5.2, "spg": 225, "location": "x/y"}),
        ComputedStructureEntry(gaas, -8.0, correction=0.3, entry_id="gaas-entry",
                               data={"e_form": -0.4, "e_above_hull": 0.01, "band_gap_ind": None, "spg": 216}),
    ]


def test_alexandria_dump(tmp_path):
    ents = entries()
    path = tmp_path / "alexandria_000.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump({"entries": [e.as_dict() for e in ents] + [{"data": {"e_form": 1.0}}]}, fh)
    materials, errors = read_alexandria(path)
    assert [m.id for m in materials] == ["agm002153", "gaas-entry"]
    for m, e in zip(materials, ents):
        assert m.targets["energy"] == pytest.approx(e.energy)  # pymatgen's corrected energy
        assert m.targets["energy_per_atom"] == pytest.approx(e.energy_per_atom)
        np.testing.assert_allclose(m.structure.frac_coords, e.structure.frac_coords)
    assert materials[0].targets["energy"] == pytest.approx(-7.2)
    assert materials[1].targets["energy"] == pytest.approx(-7.7)
    assert set(materials[0].targets) == {"energy", "energy_per_atom", "e_form", "e_above_hull", "band_gap_ind"}
    assert math.isnan(materials[1].targets["band_gap_ind"])
    assert materials[0].meta["spg"] == 225 and materials[0].meta["location"] == "x/y"
    assert len(errors) == 1 and errors[0].record_id == "row 2" and "mat_id" in errors[0].reason
    only = read_alexandria(path, targets=["e_form"], limit=1).materials
    assert len(only) == 1 and only[0].targets == {"e_form": -2.1}


def test_not_an_alexandria_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"entries": 3}))
    with pytest.raises(SourceError, match="expected \\{'entries'"):
        read_alexandria(path)
