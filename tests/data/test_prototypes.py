"""Tests of the embedded synthetic prototype dataset (mmjax.data.sources.prototypes)."""

import json
import re

import numpy as np
import pytest
import spglib
from pymatgen.core import Element, Species

from mmjax.data.material import Material
from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.data.sources.prototypes import (
    MIN_DISTANCE,
    PROTOTYPE_WEIGHTS,
    build_prototype,
    generate_prototypes,
    pair_min_distances,
    prototype_roles,
)

COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV * Angstrom
N = 300


@pytest.fixture(scope="module")
def materials() -> list[Material]:
    return generate_prototypes(N, seed=0)


def _system_of_number(number: int) -> str:
    """Crystal system of an international space-group number (ITA ranges)."""
    for upper, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                        (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if number <= upper:
            return name
    raise ValueError(number)


def _same(a: Material, b: Material) -> bool:
    return (a.id == b.id and a.targets == b.targets and a.meta == b.meta
            and [s.symbol for s in a.structure.species] == [s.symbol for s in b.structure.species]
            and np.array_equal(a.structure.lattice.matrix, b.structure.lattice.matrix)
            and np.array_equal(a.structure.frac_coords, b.structure.frac_coords))


def test_deterministic_per_seed_and_prefix_stable(materials):
    again = generate_prototypes(30, seed=0)
    assert all(_same(a, b) for a, b in zip(again, materials[:30], strict=False))
    other = generate_prototypes(30, seed=1)
    differing = sum(not _same(a, b) for a, b in zip(other, again))
    assert differing >= 25
    assert [m.id for m in other] == [f"proto-{i:06d}" for i in range(30)]


def test_records_are_well_formed(materials):
    assert len(materials) == N
    assert len({m.id for m in materials}) == N
    for m in materials:
        assert re.fullmatch(r"proto-\d{6}", m.id)
        assert m.text is None and m.dos is None and m.charge_density is None
        assert m.meta["prototype"] in PROTOTYPE_WEIGHTS
        assert isinstance(m.meta["strained"], bool)
        json.dumps(m.meta)  # JSON-serialisable provenance
        s = m.structure
        assert s.is_ordered and 1 <= len(s) <= 14
        assert all(isinstance(sp, Element) for sp in s.species)  # plain elements, no oxidation states
        assert set(m.targets) == {"space_group", "crystal_system", "density", "volume_per_atom",
                                  "ewald_energy_per_atom"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in m.targets.values())
    strained = np.mean([m.meta["strained"] for m in materials])
    assert 0.1 < strained < 0.3  # default strain_fraction 0.2


def test_all_seven_crystal_systems_occur(materials):
    counts = np.bincount([int(m.targets["crystal_system"]) for m in materials], minlength=7)
    assert len(counts) == len(CRYSTAL_SYSTEMS)
    assert counts.min() >= 0.06 * N, dict(zip(CRYSTAL_SYSTEMS, counts.tolist()))
    names = {m.meta["crystal_system"] for m in materials}
    assert names == set(CRYSTAL_SYSTEMS)


def test_labels_match_independent_recomputation(materials):
    for m in materials[::15]:
        s = m.structure
        lattice = np.asarray(s.lattice.matrix)
        numbers = [site.specie.Z for site in s]
        dataset = spglib.get_symmetry_dataset((lattice, s.frac_coords, numbers), symprec=0.1)
        assert m.targets["space_group"] == dataset.number, m.id
        assert CRYSTAL_SYSTEMS[int(m.targets["crystal_system"])] == _system_of_number(dataset.number)
        volume = abs(np.dot(lattice[0], np.cross(lattice[1], lattice[2])))  # A^3
        mass_g = sum(Element(site.specie.symbol).atomic_mass for site in s) * 1.66053906660e-24
        assert m.targets["density"] == pytest.approx(mass_g / (volume * 1e-24), rel=1e-9)
        assert m.targets["density"] == pytest.approx(s.density, rel=1e-6)
        assert m.targets["volume_per_atom"] == pytest.approx(volume / len(s), rel=1e-9)


def test_charge_neutral_and_ewald_sign(materials):
    for m in materials:
        oxi = m.meta["oxidation_states"]
        total = sum(oxi[el.symbol] * amt for el, amt in m.structure.composition.items())
        assert total == pytest.approx(0.0, abs=1e-9), m.id
        e = m.targets["ewald_energy_per_atom"]
        if any(oxi.values()):
            assert e < 0, m.id  # point-charge crystals with cation-anion contacts are bound
        else:
            assert e == 0.0


def test_ewald_matches_madelung_constant():
    # Madelung energy per atom of a binary AX crystal: -M k |qA qX| / (2 d), d = A-X distance.
    unstrained = generate_prototypes(50, seed=3, strain_fraction=0.0)
    for proto, madelung in (("rocksalt", 1.747565), ("cscl", 1.762675)):
        found = [m for m in unstrained if m.meta["prototype"] == proto]
        assert found, f"no {proto} among 50 materials of seed 3"
        m = found[0]
        s = m.structure
        q = [abs(v) for v in m.meta["oxidation_states"].values()]
        d = float(s.get_distance(0, 1))
        expected = -madelung * COULOMB * q[0] * q[1] / (2 * d)
        assert m.targets["ewald_energy_per_atom"] == pytest.approx(expected, rel=1e-3), m.id


def test_no_overlapping_atoms(materials):
    for m in materials:
        s = m.structure
        centres, _, _, dists = s.get_neighbor_list(MIN_DISTANCE)
        assert len(centres) == 0, (m.id, dists)
    # The helper used for the check agrees with pymatgen's minimum-image distances.
    for m in materials[:40]:
        s = m.structure
        mine = pair_min_distances(s.lattice.matrix, s.frac_coords)
        ref = s.distance_matrix
        off = ~np.eye(len(s), dtype=bool)
        np.testing.assert_allclose(mine[off], ref[off], rtol=1e-6)
        assert np.diag(mine).min() == pytest.approx(min(s.lattice.abc), rel=0.2)


@pytest.mark.parametrize(
    ("proto", "species", "a_exp"),
    [
        ("rocksalt", {"A": ("Na", 1), "X": ("Cl", -1)}, 5.64),
        ("rocksalt", {"A": ("Mg", 2), "X": ("O", -2)}, 4.21),
        ("perovskite", {"A": ("Sr", 2), "B": ("Ti", 4), "X": ("O", -2)}, 3.905),
        ("zincblende", {"A": ("Ga", 3), "X": ("As", -3)}, 5.65),
        ("spinel", {"A": ("Mg", 2), "B": ("Al", 3), "X": ("O", -2)}, 8.08),
        ("fcc", {"A": ("Cu", 0)}, 3.615),
    ],
)
def test_realistic_lattice_constants(proto, species, a_exp):
    s = build_prototype(proto, species)
    # Conventional cubic a from the primitive cell volume (fcc primitive = a^3 / 4).
    per_conv = {"rocksalt": 4, "zincblende": 4, "spinel": 4, "fcc": 4, "perovskite": 1}[proto]
    a = (s.volume * per_conv) ** (1 / 3)
    assert a == pytest.approx(a_exp, rel=0.10)


def test_rocksalt_hand_computed_from_shannon_radii():
    # NaCl: a = 2 (r(Na+, VI) + r(Cl-, VI)) = 2 (1.02 + 1.81) = 5.66 A.
    s = build_prototype("rocksalt", {"A": ("Na", 1), "X": ("Cl", -1)})
    r = Species("Na", 1).get_shannon_radius("VI") + Species("Cl", -1).get_shannon_radius("VI")
    assert r == pytest.approx(2.83)
    assert s.get_distance(0, 1) == pytest.approx(r, rel=1e-9)
    assert s.lattice.a == pytest.approx(2 * r / np.sqrt(2), rel=1e-9)  # fcc primitive |a1| = a / sqrt 2


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="n must be"):
        generate_prototypes(-1)
    with pytest.raises(ValueError, match="strain_fraction"):
        generate_prototypes(2, strain_fraction=1.5)
    with pytest.raises(ValueError, match="unknown prototype"):
        build_prototype("quasicrystal", {"A": ("Na", 1)})
    with pytest.raises(ValueError, match="charge balanced"):
        build_prototype("rocksalt", {"A": ("Na", 1), "X": ("O", -2)})
    with pytest.raises(ValueError, match="missing"):
        build_prototype("perovskite", {"A": ("Sr", 2), "X": ("O", -2)})
    assert prototype_roles("perovskite") == ("A", "B", "X")


@pytest.mark.parametrize(
    ("proto", "species", "number"),
    [
        ("rocksalt", {"A": ("Na", 1), "X": ("Cl", -1)}, 225),
        ("cscl", {"A": ("Cs", 1), "X": ("Cl", -1)}, 221),
        ("zincblende", {"A": ("Zn", 2), "X": ("S", -2)}, 216),
        ("wurtzite", {"A": ("Zn", 2), "X": ("O", -2)}, 186),
        ("fluorite", {"A": ("Ca", 2), "X": ("F", -1)}, 225),
        ("antifluorite", {"A": ("Li", 1), "X": ("O", -2)}, 225),
        ("perovskite", {"A": ("Sr", 2), "B": ("Ti", 4), "X": ("O", -2)}, 221),
        ("spinel", {"A": ("Mg", 2), "B": ("Al", 3), "X": ("O", -2)}, 227),
        ("rutile", {"A": ("Ti", 4), "X": ("O", -2)}, 136),
        ("litharge", {"A": ("Pb", 2), "X": ("O", -2)}, 129),
        ("anti-litharge", {"A": ("Fe", 2), "X": ("Se", -2)}, 129),
        ("nias", {"A": ("Ni", 2), "X": ("S", -2)}, 194),
        ("cdi2", {"A": ("Cd", 2), "X": ("I", -1)}, 164),
        ("corundum", {"A": ("Al", 3), "X": ("O", -2)}, 167),
        ("layered-nafeo2", {"A": ("Li", 1), "B": ("Co", 3), "X": ("O", -2)}, 166),
        ("marcasite", {"A": ("Fe", 2), "X": ("S", -1)}, 58),
        ("snse", {"A": ("Sn", 2), "X": ("Se", -2)}, 62),
        ("baddeleyite", {"A": ("Zr", 4), "X": ("O", -2)}, 14),
        ("fcc", {"A": ("Cu", 0)}, 225),
        ("bcc", {"A": ("Fe", 0)}, 229),
        ("hcp", {"A": ("Mg", 0)}, 194),
        ("diamond", {"A": ("Si", 0)}, 227),
    ],
)
def test_prototype_templates_have_their_archetype_space_group(proto, species, number):
    s = build_prototype(proto, species)
    cell = (s.lattice.matrix, s.frac_coords, [site.specie.Z for site in s])
    assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == number
    assert pair_min_distances(s.lattice.matrix, s.frac_coords).min() > 1.5  # no crowded sites
