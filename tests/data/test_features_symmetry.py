"""Symmetry labels on known prototypes, against MP's labels, and the fallback path."""

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup

from mmjax.data.features import symmetry as symmetry_module
from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.features import crystal_system_of, symmetry_labels

PROTOTYPES = [
    ("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 225, "cubic"),
    ("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]], 186,
     "hexagonal"),
    ("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]], 136, "tetragonal"),
    ("R-3m", Lattice.hexagonal(2.46, 6.7 * 1.5), ["C"], [[0, 0, 1 / 6]], 166, "trigonal"),
]


@pytest.mark.parametrize("sg, lat, species, coords, number, system", PROTOTYPES)
def test_prototypes(sg, lat, species, coords, number, system):
    s = Structure.from_spacegroup(sg, lat, species, coords)
    out = symmetry_labels(s)
    assert out["space_group"] == number and out["crystal_system"] == system
    assert CRYSTAL_SYSTEMS[out["crystal_system_index"]] == system and out["fallback"] is False


def test_crystal_system_table_matches_pymatgen():
    for n in (1, 2, 3, 15, 16, 74, 75, 142, 143, 167, 168, 194, 195, 230):  # every class boundary
        assert crystal_system_of(n) == SpaceGroup.from_int_number(n).crystal_system
    with pytest.raises(ValueError):
        crystal_system_of(231)


def test_agrees_with_materials_project_labels(shared_data):
    df = pd.read_csv(shared_data / "mp40" / "mp40_test.csv.gz").iloc[:25]
    got = [symmetry_labels(Structure.from_str(c, fmt="cif"))["space_group"] for c in df.cif]
    np.testing.assert_array_equal(got, df.space_group_number.to_numpy())


def test_fallback_ladder_and_p1(monkeypatch):
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    real = symmetry_module._space_group

    def fails_at_coarse(structure, symprec, angle_tolerance):
        if symprec >= 0.1:
            raise ValueError("spglib returned None")
        return real(structure, symprec, angle_tolerance)

    monkeypatch.setattr(symmetry_module, "_space_group", fails_at_coarse)
    out = symmetry_labels(s)
    assert out["space_group"] == 225 and out["symprec_used"] == 0.01 and not out["fallback"]

    def always_fails(structure, symprec, angle_tolerance):
        raise ValueError("spglib returned None")

    monkeypatch.setattr(symmetry_module, "_space_group", always_fails)
    with pytest.warns(RuntimeWarning, match="mp-broken"):
        out = symmetry_labels(s, record_id="mp-broken")
    assert out == {"space_group": 1, "crystal_system": "triclinic", "crystal_system_index": 0,
                   "symprec_used": None, "fallback": True}
