"""Embedded default dataset: SYNTHETIC ordered crystals built from common structure prototypes.

THIS DATA IS SYNTHETIC. It exists so that the CLI, the tests and demos run on a fresh machine with
no files and no network. It is not a materials database and must not be used for science: the
compounds are plausible by simple rules (formal oxidation states, tabulated radii), not relaxed,
and many of them do not exist.

How a material is made (``generate_prototypes(n, seed)``; material ``i`` depends only on
``(seed, i)``, so a smaller ``n`` gives a prefix of a larger one):

1. A prototype is drawn (weights in ``PROTOTYPE_WEIGHTS``): rock salt, CsCl, zinc blende,
   wurtzite, fluorite, anti-fluorite, cubic perovskite ABX3, spinel AB2X4 (14-atom primitive
   cell), rutile, litharge PbO / anti-PbO (FeSe), NiAs, CdI2 layers, corundum, layered
   alpha-NaFeO2 (LiCoO2), marcasite, SnSe/GeS (B16), baddeleyite ZrO2, elemental fcc / bcc / hcp /
   diamond, and "distorted-<system>" cells: a small conventional cell (CsCl, perovskite, rock
   salt, zinc blende or fluorite) put on a tetragonal, orthorhombic, monoclinic or triclinic
   lattice. Together they give all seven crystal systems at useful frequencies.
2. Elements are drawn per crystallographic role from ion tables grouped by formal oxidation state
   (each recipe is charge balanced by construction and checked), all roles with distinct elements.
3. The cell is scaled so that the closest cation-anion contact equals the sum of Shannon ionic
   radii at the site's coordination (pymatgen's Shannon table; low-spin entries preferred with
   soft anions S/Se/Te/N, high-spin otherwise). When an ion has no Shannon entry (P3-, As3-, the
   X- of marcasite X2 dimers) the whole compound uses covalent radii (Cordero, shipped with
   pymatgen). Elements: nearest-neighbour distance = two metallic radii (fcc/bcc/hcp, pymatgen
   ``Element.metallic_radius``) or two covalent radii (diamond).
   E.g. NaCl: a = 2 (1.02 + 1.81) = 5.66 A (experiment 5.64 A); MgO 4.24 (4.21), SrTiO3 4.02
   (3.905), MgAl2O4 8.22 (8.08), GaAs 5.57 (5.65), Cu 3.62 (3.615). Typical error a few %,
   up to ~10-15 % for covalent/metallic chalcogenides (FeS2 marcasite, FeSe, NiAs-type).
4. A fraction ``strain_fraction`` (default 0.2) of the structures gets a random symmetric strain
   (each component uniform in +-4 %) and Gaussian site displacements (0.08 A per Cartesian
   component), which lowers the symmetry of most of them. ``meta["strained"]`` records this.
5. Every structure is checked: no two sites (periodic images included) closer than ``MIN_DISTANCE``
   (1.0 A); a failing draw is redrawn from the same random stream (deterministic).

Cells are ordered (one element per site, no partial occupancy) and have 1 to 14 atoms (the
largest are the spinel primitive cell, 14, and baddeleyite / distorted fluorite, 12).

Labels (``Material.targets``, all floats; computed from the final structure, never from the
prototype name):

* ``space_group``: international number 1..230 from spglib via pymatgen ``SpacegroupAnalyzer``
  at ``symprec=0.1`` A (stored as a float; the pipeline treats it as a class label).
* ``crystal_system``: index into ``mmjax.data.schema.CRYSTAL_SYSTEMS`` of the same analysis
  (also a class label downstream).
* ``density``: g/cm^3.
* ``volume_per_atom``: A^3 / atom.
* ``ewald_energy_per_atom``: eV / atom, the electrostatic (Madelung) energy of the formal point
  charges, pymatgen ``EwaldSummation``; exactly 0 for elemental cells (no charges). It is a
  meaningful synthetic regression target: for a binary AX crystal it is
  -M |qA qX| e^2 / (4 pi eps0 d) / 2 per atom (Madelung constant M, A-X distance d), so it
  depends jointly on the charges (composition), the topology (M of the prototype) and the length
  scale (1 / bond length), i.e. a model must use both composition and
  geometry to predict it, and it is the dominant term of Born-Lande lattice energies of ionic
  solids. It is not a DFT formation energy.

``meta`` holds ``source``, ``seed``, ``index``, ``prototype``, ``base_prototype`` (for the
distorted cells), ``strained``, ``oxidation_states`` (element -> formal charge), ``formula``,
``space_group_symbol`` and ``crystal_system`` (name). ``text`` is left None (text is produced
elsewhere). Structures carry plain elements (oxidation states removed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import warnings

import numpy as np

from mmjax.data.material import Material
from mmjax.data.schema import CRYSTAL_SYSTEMS

MIN_DISTANCE = 1.0
"""Smallest allowed distance between any two sites (periodic images included), Angstrom."""

SYMPREC = 0.1
"""spglib symmetry tolerance for the space-group labels, Angstrom."""

_MAX_ATTEMPTS = 50
_STRAIN_MAX = 0.04
_DISPLACEMENT_SIGMA = 0.08  # Angstrom per Cartesian component

# --------------------------------------------------------------------------------------------
# Ion tables: (element, formal oxidation state).

_ALKALI = (("Li", 1), ("Na", 1), ("K", 1), ("Rb", 1), ("Cs", 1))
_HALIDE = (("F", -1), ("Cl", -1), ("Br", -1), ("I", -1))
_CHALCOGEN = (("O", -2), ("S", -2), ("Se", -2), ("Te", -2))
_HEAVY_CHALCOGEN = (("S", -2), ("Se", -2), ("Te", -2))
_PNICTOGEN = (("N", -3), ("P", -3), ("As", -3))
_DIVALENT_OCT = (("Mg", 2), ("Ca", 2), ("Sr", 2), ("Ba", 2), ("Mn", 2), ("Fe", 2), ("Co", 2),
                 ("Ni", 2), ("Cd", 2), ("Pb", 2))
_DIVALENT_TET = (("Zn", 2), ("Cd", 2), ("Be", 2), ("Mn", 2), ("Hg", 2))
_TRIVALENT_TET = (("B", 3), ("Al", 3), ("Ga", 3), ("In", 3))
_TRIVALENT_OCT = (("Al", 3), ("Sc", 3), ("Ti", 3), ("V", 3), ("Cr", 3), ("Fe", 3), ("Co", 3),
                  ("Ga", 3), ("In", 3), ("Rh", 3))
_RARE_EARTH = (("Sc", 3), ("Y", 3), ("La", 3), ("Ce", 3), ("Nd", 3), ("Gd", 3))
_TETRAVALENT_OCT = (("Ti", 4), ("V", 4), ("Cr", 4), ("Mn", 4), ("Ge", 4), ("Zr", 4), ("Ru", 4),
                    ("Sn", 4), ("Hf", 4), ("Ir", 4), ("Pb", 4))
_TETRAVALENT_CUBIC = (("Zr", 4), ("Hf", 4), ("Ce", 4), ("Th", 4), ("U", 4))
_FCC = ("Al", "Ca", "Ni", "Cu", "Sr", "Rh", "Pd", "Ag", "Ir", "Pt", "Au", "Pb")
_BCC = ("Li", "Na", "K", "V", "Cr", "Fe", "Rb", "Nb", "Mo", "Cs", "Ba", "Ta", "W")
_HCP = ("Be", "Mg", "Sc", "Ti", "Co", "Zn", "Y", "Zr", "Ru", "Cd", "Hf", "Re", "Os")
_DIAMOND = ("C", "Si", "Ge", "Sn")

# Recipes: role -> tuple of (element, oxidation state). Within one recipe every choice of a role
# has the same oxidation state, so charge balance is a property of the recipe.
_RECIPES: dict[str, tuple[dict[str, tuple], ...]] = {
    "rocksalt": (
        {"A": _ALKALI, "X": _HALIDE},
        {"A": _DIVALENT_OCT, "X": _CHALCOGEN},
        {"A": _RARE_EARTH, "X": _PNICTOGEN},
    ),
    "cscl": (
        {"A": (("Cs", 1), ("Rb", 1), ("Tl", 1)), "X": (("Cl", -1), ("Br", -1), ("I", -1))},
    ),
    "zincblende": (
        {"A": _DIVALENT_TET, "X": _CHALCOGEN},
        {"A": _TRIVALENT_TET, "X": _PNICTOGEN},
        {"A": (("Cu", 1), ("Ag", 1)), "X": (("Cl", -1), ("Br", -1), ("I", -1))},
    ),
    "wurtzite": (
        {"A": _DIVALENT_TET, "X": _CHALCOGEN},
        {"A": _TRIVALENT_TET, "X": _PNICTOGEN},
        {"A": (("Ag", 1), ("Cu", 1)), "X": (("I", -1), ("Br", -1))},
    ),
    "fluorite": (
        {"A": (("Ca", 2), ("Sr", 2), ("Ba", 2), ("Cd", 2), ("Pb", 2)), "X": (("F", -1), ("Cl", -1))},
        {"A": _TETRAVALENT_CUBIC, "X": (("O", -2),)},
    ),
    "antifluorite": (
        {"A": (("Li", 1), ("Na", 1), ("K", 1), ("Rb", 1)), "X": _CHALCOGEN},
    ),
    "perovskite": (
        {"A": (("Ca", 2), ("Sr", 2), ("Ba", 2), ("Pb", 2)),
         "B": (("Ti", 4), ("Zr", 4), ("Hf", 4), ("Sn", 4), ("Mn", 4), ("Ge", 4)), "X": (("O", -2),)},
        {"A": (("K", 1), ("Rb", 1), ("Cs", 1)),
         "B": (("Mg", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Zn", 2)), "X": (("F", -1),)},
        {"A": (("La", 3), ("Nd", 3), ("Y", 3), ("Bi", 3)),
         "B": (("Al", 3), ("Sc", 3), ("Cr", 3), ("Fe", 3), ("Ga", 3)), "X": (("O", -2),)},
        {"A": (("Na", 1), ("K", 1)), "B": (("Nb", 5), ("Ta", 5), ("V", 5)), "X": (("O", -2),)},
    ),
    "spinel": (
        {"A": (("Mg", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Cu", 2), ("Zn", 2)),
         "B": (("Al", 3), ("V", 3), ("Cr", 3), ("Mn", 3), ("Fe", 3), ("Co", 3), ("Ga", 3)),
         "X": (("O", -2),)},
        {"A": (("Mn", 2), ("Fe", 2), ("Co", 2), ("Zn", 2), ("Cd", 2)),
         "B": (("Cr", 3), ("In", 3)), "X": (("S", -2), ("Se", -2))},
        {"A": (("Si", 4), ("Ge", 4), ("Ti", 4), ("Sn", 4)),
         "B": (("Mg", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Zn", 2)), "X": (("O", -2),)},
    ),
    "rutile": (
        {"A": _TETRAVALENT_OCT, "X": (("O", -2),)},
        {"A": (("Mg", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Zn", 2)), "X": (("F", -1),)},
    ),
    "litharge": ({"A": (("Pb", 2), ("Sn", 2)), "X": (("O", -2),)},),
    "anti-litharge": ({"A": (("Fe", 2),), "X": (("S", -2), ("Se", -2), ("Te", -2))},),
    "nias": (
        {"A": (("V", 2), ("Cr", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2)), "X": _HEAVY_CHALCOGEN},
    ),
    "cdi2": (
        {"A": (("Mg", 2), ("Ca", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Cd", 2), ("Pb", 2)),
         "X": (("Cl", -1), ("Br", -1), ("I", -1))},
        {"A": (("Ti", 4), ("Zr", 4), ("Hf", 4), ("Sn", 4), ("Pt", 4)), "X": _HEAVY_CHALCOGEN},
    ),
    "corundum": (
        {"A": (("Al", 3), ("Ti", 3), ("V", 3), ("Cr", 3), ("Fe", 3), ("Ga", 3), ("Rh", 3)),
         "X": (("O", -2),)},
    ),
    "layered-nafeo2": (
        {"A": (("Li", 1), ("Na", 1)), "B": (("Ti", 3), ("V", 3), ("Cr", 3), ("Fe", 3), ("Co", 3),
                                            ("Ni", 3)), "X": (("O", -2),)},
    ),
    # Marcasite has X2 dimers: each X carries a formal -1.
    "marcasite": ({"A": (("Fe", 2), ("Co", 2), ("Ni", 2), ("Ru", 2), ("Os", 2)),
                   "X": (("S", -1), ("Se", -1), ("Te", -1))},),
    "snse": ({"A": (("Ge", 2), ("Sn", 2), ("Pb", 2)), "X": _HEAVY_CHALCOGEN},),
    "baddeleyite": ({"A": (("Zr", 4), ("Hf", 4)), "X": (("O", -2),)},),
    "fcc": ({"A": tuple((el, 0) for el in _FCC)},),
    "bcc": ({"A": tuple((el, 0) for el in _BCC)},),
    "hcp": ({"A": tuple((el, 0) for el in _HCP)},),
    "diamond": ({"A": tuple((el, 0) for el in _DIAMOND)},),
}

# --------------------------------------------------------------------------------------------
# Geometry templates. Lengths in Angstrom for the archetype compound; only the shape matters
# because every cell is rescaled by the contact rule.


@dataclasses.dataclass(frozen=True)
class _Template:
    """Prototype cell: lattice rows [3, 3] (A), fractional sites [N, 3], role per site, the
    Shannon coordination number (roman) per role, and the radius kind for elemental cells."""

    lattice: np.ndarray
    frac: np.ndarray
    roles: tuple[str, ...]
    cn: dict[str, str]
    bonding: str = "ionic"  # "ionic" | "metallic" | "covalent"


_FCC_TRANSLATIONS = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def _fcc_primitive(a: float) -> np.ndarray:
    return 0.5 * a * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])


def _hexagonal(a: float, c: float) -> np.ndarray:
    return np.array([[a, 0, 0], [-0.5 * a, np.sqrt(3) / 2 * a, 0], [0, 0, c]])


def _centred(basis: list[tuple[str, tuple[float, float, float]]]):
    """Face-centred conventional cell: each basis site plus the three centring translations."""
    frac, roles = [], []
    for role, xyz in basis:
        for t in _FCC_TRANSLATIONS:
            frac.append((np.asarray(xyz) + t) % 1.0)
            roles.append(role)
    return np.array(frac), tuple(roles)


def _wyckoff(ops, xyz):
    """Orbit of a Wyckoff site: each op maps (x, y, z) to fractional coordinates (wrapped to [0, 1))."""
    x, y, z = xyz
    return [np.array(op(x, y, z)) % 1.0 for op in ops]


@functools.cache
def _templates() -> dict[str, _Template]:
    from pymatgen.core import Lattice, Structure

    t: dict[str, _Template] = {}
    t["rocksalt"] = _Template(_fcc_primitive(5.64), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
                              ("A", "X"), {"A": "VI", "X": "VI"})
    t["cscl"] = _Template(np.eye(3) * 4.12, np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), ("A", "X"),
                          {"A": "VIII", "X": "VIII"})
    t["zincblende"] = _Template(_fcc_primitive(5.41), np.array([[0, 0, 0], [0.25, 0.25, 0.25]]),
                                ("A", "X"), {"A": "IV", "X": "IV"})
    u = 0.38
    t["wurtzite"] = _Template(
        _hexagonal(3.25, 5.21),
        np.array([[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]),
        ("A", "A", "X", "X"), {"A": "IV", "X": "IV"})
    quarter = np.array([[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])
    t["fluorite"] = _Template(_fcc_primitive(5.46), quarter, ("A", "X", "X"),
                              {"A": "VIII", "X": "IV"})
    t["antifluorite"] = _Template(_fcc_primitive(4.61), quarter, ("X", "A", "A"),
                                  {"A": "IV", "X": "VIII"})
    t["perovskite"] = _Template(
        np.eye(3) * 3.905,
        np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        ("A", "B", "X", "X", "X"), {"A": "XII", "B": "VI", "X": "VI"})
    spinel = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(8.08), ["Mg", "Al", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.387, 0.387, 0.387]]).get_primitive_structure()
    t["spinel"] = _Template(spinel.lattice.matrix, spinel.frac_coords,
                            tuple({"Mg": "A", "Al": "B", "O": "X"}[s.symbol] for s in spinel.species),
                            {"A": "IV", "B": "VI", "X": "IV"})
    u = 0.3048
    t["rutile"] = _Template(
        np.diag([4.594, 4.594, 2.959]),
        np.array([[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5],
                  [0.5 - u, 0.5 + u, 0.5]]),
        ("A", "A", "X", "X", "X", "X"), {"A": "VI", "X": "III"})
    z = 0.2385
    litharge_frac = np.array([[0.25, 0.25, z], [0.75, 0.75, 1 - z], [0.75, 0.25, 0], [0.25, 0.75, 0]])
    t["litharge"] = _Template(np.diag([3.97, 3.97, 5.02]), litharge_frac, ("A", "A", "X", "X"),
                              {"A": "IV", "X": "IV"})
    t["anti-litharge"] = _Template(np.diag([3.77, 3.77, 5.52]),
                                   np.array([[0.25, 0.25, 0.26], [0.75, 0.75, 0.74],
                                             [0.75, 0.25, 0], [0.25, 0.75, 0]]),
                                   ("X", "X", "A", "A"), {"A": "IV", "X": "IV"})
    t["nias"] = _Template(_hexagonal(3.62, 5.03),
                          np.array([[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                          ("A", "A", "X", "X"), {"A": "VI", "X": "VI"})
    t["cdi2"] = _Template(_hexagonal(4.24, 6.84),
                          np.array([[0, 0, 0], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                          ("A", "X", "X"), {"A": "VI", "X": "III"})
    corundum = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"],
        [[0, 0, 0.3523], [0.3064, 0, 0.25]]).get_primitive_structure()
    t["corundum"] = _Template(corundum.lattice.matrix, corundum.frac_coords,
                              tuple("A" if s.symbol == "Al" else "X" for s in corundum.species),
                              {"A": "VI", "X": "IV"})
    layered = Structure.from_spacegroup(
        "R-3m", Lattice.hexagonal(2.816, 14.05), ["Co", "Li", "O"],
        [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.2604]]).get_primitive_structure()
    t["layered-nafeo2"] = _Template(layered.lattice.matrix, layered.frac_coords,
                                    tuple({"Li": "A", "Co": "B", "O": "X"}[s.symbol]
                                          for s in layered.species),
                                    {"A": "VI", "B": "VI", "X": "VI"})
    x, y = 0.2004, 0.3787  # marcasite FeS2, Pnnm, S at 4g
    t["marcasite"] = _Template(
        np.diag([4.436, 5.414, 3.381]),
        np.array([[0, 0, 0], [0.5, 0.5, 0.5]]
                 + _wyckoff([lambda x, y, z: (x, y, 0), lambda x, y, z: (-x, -y, 0),
                             lambda x, y, z: (0.5 - x, 0.5 + y, 0.5),
                             lambda x, y, z: (0.5 + x, 0.5 - y, 0.5)], (x, y, 0))),
        ("A", "A", "X", "X", "X", "X"), {"A": "VI", "X": "IV"})
    pnma_4c = [lambda x, y, z: (x, 0.25, z), lambda x, y, z: (0.5 - x, 0.75, 0.5 + z),
               lambda x, y, z: (-x, 0.75, -z), lambda x, y, z: (0.5 + x, 0.25, 0.5 - z)]
    t["snse"] = _Template(  # SnSe, Pnma, both atoms at 4c
        np.diag([11.50, 4.15, 4.45]),
        np.array(_wyckoff(pnma_4c, (0.1185, 0.25, 0.1029)) + _wyckoff(pnma_4c, (0.8553, 0.25, 0.4819))),
        ("A",) * 4 + ("X",) * 4, {"A": "VII", "X": "VI"})
    p21c_4e = [lambda x, y, z: (x, y, z), lambda x, y, z: (-x, 0.5 + y, 0.5 - z),
               lambda x, y, z: (-x, -y, -z), lambda x, y, z: (x, 0.5 - y, 0.5 + z)]
    t["baddeleyite"] = _Template(  # monoclinic ZrO2, P2_1/c
        Lattice.from_parameters(5.1505, 5.2116, 5.3173, 90, 99.23, 90).matrix,
        np.array(_wyckoff(p21c_4e, (0.2754, 0.0395, 0.2083)) + _wyckoff(p21c_4e, (0.0700, 0.3317, 0.3447))
                 + _wyckoff(p21c_4e, (0.4496, 0.7569, 0.4792))),
        ("A",) * 4 + ("X",) * 8, {"A": "VII", "X": "IV"})
    t["fcc"] = _Template(_fcc_primitive(3.61), np.zeros((1, 3)), ("A",), {}, "metallic")
    t["bcc"] = _Template(0.5 * 2.87 * np.array([[-1.0, 1, 1], [1, -1, 1], [1, 1, -1]]), np.zeros((1, 3)),
                         ("A",), {}, "metallic")
    t["hcp"] = _Template(_hexagonal(3.21, 5.21), np.array([[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                         ("A", "A"), {}, "metallic")
    t["diamond"] = _Template(_fcc_primitive(5.43), np.array([[0, 0, 0], [0.25, 0.25, 0.25]]),
                             ("A", "A"), {}, "covalent")
    return t


@functools.cache
def _distortion_bases() -> dict[str, _Template]:
    """Small conventional cells (cubic axes) that the distorted-<system> prototypes deform."""
    t = _templates()
    rs_frac, rs_roles = _centred([("A", (0, 0, 0)), ("X", (0.5, 0.5, 0.5))])
    zb_frac, zb_roles = _centred([("A", (0, 0, 0)), ("X", (0.25, 0.25, 0.25))])
    fl_frac, fl_roles = _centred([("A", (0, 0, 0)), ("X", (0.25, 0.25, 0.25)), ("X", (0.75, 0.75, 0.75))])
    return {
        "cscl": t["cscl"],
        "perovskite": t["perovskite"],
        "rocksalt": _Template(np.eye(3), rs_frac, rs_roles, t["rocksalt"].cn),
        "zincblende": _Template(np.eye(3), zb_frac, zb_roles, t["zincblende"].cn),
        "fluorite": _Template(np.eye(3), fl_frac, fl_roles, t["fluorite"].cn),
    }


DISTORTED_SYSTEMS = ("tetragonal", "orthorhombic", "monoclinic", "triclinic")

PROTOTYPE_WEIGHTS: dict[str, float] = {
    # cubic
    "rocksalt": 1.0, "cscl": 0.4, "zincblende": 0.7, "fluorite": 0.5, "antifluorite": 0.4,
    "perovskite": 0.9, "spinel": 0.6, "fcc": 0.4, "bcc": 0.4, "diamond": 0.2,
    # hexagonal
    "wurtzite": 1.2, "nias": 1.0, "hcp": 0.9,
    # trigonal
    "cdi2": 1.0, "corundum": 0.8, "layered-nafeo2": 0.8,
    # tetragonal
    "rutile": 1.0, "litharge": 0.4, "anti-litharge": 0.3, "distorted-tetragonal": 0.8,
    # orthorhombic
    "marcasite": 0.7, "snse": 0.6, "distorted-orthorhombic": 1.2,
    # monoclinic
    "baddeleyite": 0.6, "distorted-monoclinic": 1.7,
    # triclinic
    "distorted-triclinic": 0.6,
}
"""Relative draw probability of each prototype (normalised at draw time)."""


# --------------------------------------------------------------------------------------------
# Radii (Angstrom).


_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "X": 10,
          "XI": 11, "XII": 12, "XIV": 14}
_SOFT_ANIONS = frozenset({"S", "Se", "Te", "N", "P", "As"})


@functools.cache
def _shannon_radius(symbol: str, oxi: int, cn: str, low_spin_first: bool) -> float | None:
    """Shannon ionic radius (A) of ``symbol`` with charge ``oxi`` at the tabulated coordination
    closest to ``cn`` (roman numerals; "IVPY"/"IVSQ" count as IV; ties prefer the higher CN).
    Among spin states the low-spin entry is preferred when ``low_spin_first`` (ions bonded to
    soft, covalent anions), the high-spin one otherwise. None when the ion is not tabulated."""
    from pymatgen.core import Element

    table = Element(symbol).data.get("Shannon radii", {}).get(str(oxi))
    if not table:
        return None
    want = _ROMAN[cn]

    def coordination(key: str) -> int:
        return _ROMAN[key.removesuffix("PY").removesuffix("SQ")]

    key = min(table, key=lambda k: (abs(coordination(k) - want), -coordination(k), len(k)))
    spins = table[key]
    order = ("Low Spin", "High Spin", "") if low_spin_first else ("High Spin", "", "Low Spin")
    for spin in order:
        if spin in spins:
            return float(spins[spin]["ionic_radius"])
    return float(next(iter(spins.values()))["ionic_radius"])


@functools.cache
def _neutral_radius(symbol: str, bonding: str) -> float:
    """Metallic (12-coordinate, falling back to the empirical atomic radius) or covalent
    (Cordero, as shipped with pymatgen) radius of an element, Angstrom."""
    from pymatgen.core import Element

    if bonding == "metallic":
        el = Element(symbol)
        return float(el.metallic_radius or el.atomic_radius)
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return float(CovalentRadius.radius[symbol])


def _site_radii(template: "_Template", chosen: dict[str, tuple[str, int]]) -> np.ndarray:
    """Contact radius per site [N], A: Shannon ionic radii for ionic templates; covalent radii
    for all sites when any ion of the compound has no Shannon entry (P3-, As3-, S- in dimers);
    metallic / covalent radii for elemental templates."""
    if template.bonding != "ionic":
        return np.array([_neutral_radius(chosen[r][0], template.bonding) for r in template.roles])
    soft = any(oxi < 0 and sym in _SOFT_ANIONS for sym, oxi in chosen.values())
    by_role = {r: _shannon_radius(sym, oxi, template.cn[r], soft) for r, (sym, oxi) in chosen.items()}
    if any(v is None for v in by_role.values()):
        by_role = {r: _neutral_radius(sym, "covalent") for r, (sym, _) in chosen.items()}
    return np.array([by_role[r] for r in template.roles])


# --------------------------------------------------------------------------------------------
# Geometry helpers.

_IMAGES = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=float)  # [125, 3]


def pair_min_distances(lattice: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Shortest distance between every pair of sites over periodic images, Angstrom.

    lattice: [3, 3] rows are lattice vectors (A); frac: [N, 3] fractional coordinates.
    Returns [N, N]; the diagonal is the shortest lattice translation (the site and its own
    image). Images up to +-2 cells are searched, exact for the near-orthogonal cells made here.
    """
    diff = frac[None, :, None, :] - frac[:, None, None, :] + _IMAGES[None, None]  # [N, N, 125, 3]
    dist = np.linalg.norm(diff @ lattice, axis=-1)
    dist[dist < 1e-8] = np.inf
    return dist.min(axis=-1)


def _contact_scale(lattice, frac, radii, charges):
    """Factor that makes the closest cation-anion pair touch (radius sums), or, for neutral
    cells, the closest pair of atoms touch; radii [N] A, charges [N]."""
    d = pair_min_distances(lattice, frac)
    rsum = radii[:, None] + radii[None, :]
    if np.any(charges != 0):
        pairs = (charges[:, None] * charges[None, :]) < 0
    else:
        pairs = np.ones_like(d, dtype=bool)
    return float(np.max(rsum[pairs] / d[pairs]))


def _distorted_lattice(rng: np.random.Generator, system: str) -> np.ndarray:
    """Unit-scale lattice [3, 3] of the given system with clearly non-cubic parameters."""
    from pymatgen.core import Lattice

    def ratio(lo, hi):
        return float(rng.uniform(lo, hi))

    if system == "tetragonal":
        c = ratio(1.08, 1.3) if rng.random() < 0.5 else ratio(0.77, 0.92)
        return Lattice.from_parameters(1, 1, c, 90, 90, 90).matrix
    b, c = ratio(1.06, 1.16), ratio(1.22, 1.38)
    if system == "orthorhombic":
        return Lattice.from_parameters(1, b, c, 90, 90, 90).matrix
    if system == "monoclinic":
        return Lattice.from_parameters(1, b, c, 90, ratio(96, 110), 90).matrix
    alpha, beta, gamma = ratio(80, 86), ratio(96, 102), ratio(104, 110)
    return Lattice.from_parameters(1, b, c, alpha, beta, gamma).matrix


# --------------------------------------------------------------------------------------------
# Generation.


def _draw_species(rng, recipe):
    """Element and charge per role; roles get distinct elements. Returns {role: (symbol, oxi)}."""
    for _ in range(100):
        chosen = {role: choices[rng.integers(len(choices))] for role, choices in recipe.items()}
        if len({sym for sym, _ in chosen.values()}) == len(chosen):
            return chosen
    raise RuntimeError(f"recipe {recipe} cannot give distinct elements")


def _scaled_cell(template: _Template, lattice: np.ndarray, chosen: dict[str, tuple[str, int]]):
    """Contact-scaled cell of ``template`` on ``lattice`` (shape only) with the species
    ``chosen`` (role -> (element, oxidation state)).

    Returns (lattice [3, 3] A, frac [N, 3], symbols [N], charges float [N]). Raises ValueError
    when a role is missing or unknown, or the charges do not balance."""
    missing = sorted(set(template.roles) - set(chosen))
    extra = sorted(set(chosen) - set(template.roles))
    if missing or extra:
        raise ValueError(f"species roles must be {sorted(set(template.roles))}; missing {missing}, "
                         f"unknown {extra}")
    symbols = [chosen[r][0] for r in template.roles]
    charges = np.array([chosen[r][1] for r in template.roles], dtype=float)
    if charges.sum() != 0:
        raise ValueError(f"species {dict(chosen)} are not charge balanced in this prototype "
                         f"(total charge {charges.sum():+g} per cell)")
    radii = _site_radii(template, chosen)
    frac = np.array(template.frac, dtype=float)
    return lattice * _contact_scale(lattice, frac, radii, charges), frac, symbols, charges


def build_prototype(name: str, species: dict[str, tuple[str, int]]):
    """Unstrained, contact-scaled pymatgen Structure of prototype ``name`` (a key of
    ``PROTOTYPE_WEIGHTS`` not starting with "distorted-") with ``species``: role -> (element,
    formal oxidation state); roles are given by ``prototype_roles(name)``. Sites carry plain
    elements. E.g. ``build_prototype("rocksalt", {"A": ("Na", 1), "X": ("Cl", -1)})``."""
    from pymatgen.core import Structure

    templates = _templates()
    if name not in templates:
        raise ValueError(f"unknown prototype {name!r}; choose from {sorted(templates)}")
    template = templates[name]
    lattice, frac, symbols, _ = _scaled_cell(template, template.lattice, dict(species))
    return Structure(lattice, symbols, frac)


def prototype_roles(name: str) -> tuple[str, ...]:
    """Distinct site roles of an undistorted prototype, e.g. ("A", "B", "X") for perovskite."""
    return tuple(sorted(set(_templates()[name].roles)))


def _draw_cell(rng: np.random.Generator, name: str, strain_fraction: float):
    """One candidate cell: (lattice [3,3] A, frac [N,3], symbols [N], charges [N], meta)."""
    meta: dict = {"prototype": name}
    if name.startswith("distorted-"):
        bases = _distortion_bases()
        base_name = list(bases)[rng.integers(len(bases))]
        base = bases[base_name]
        lattice = _distorted_lattice(rng, name.removeprefix("distorted-"))
        meta["base_prototype"] = base_name
        recipes = _RECIPES[base_name]
    else:
        base = _templates()[name]
        lattice = base.lattice
        recipes = _RECIPES[name]
    recipe = recipes[rng.integers(len(recipes))]
    chosen = _draw_species(rng, recipe)
    lattice, frac, symbols, charges = _scaled_cell(base, lattice, chosen)
    strained = bool(rng.random() < strain_fraction)
    if strained:
        eps = rng.uniform(-_STRAIN_MAX, _STRAIN_MAX, size=(3, 3))
        lattice = lattice @ (np.eye(3) + 0.5 * (eps + eps.T))
        disp = rng.normal(0.0, _DISPLACEMENT_SIGMA, size=frac.shape)  # Cartesian, A
        frac = (frac + disp @ np.linalg.inv(lattice)) % 1.0
    meta["strained"] = strained
    meta["oxidation_states"] = {sym: int(oxi) for sym, oxi in chosen.values()}
    return lattice, frac % 1.0, symbols, charges, meta


_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660  # 1 amu / 1 A^3 = 1.66053906660 g / cm^3


@contextlib.contextmanager
def _quiet_spglib():
    """Silence spglib's C-level "... failed." notes on stderr (it retries with a smaller
    tolerance by itself) unless the user set SPGLIB_WARNING; restores the environment."""
    if "SPGLIB_WARNING" in os.environ:
        yield
        return
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        yield
    finally:
        os.environ.pop("SPGLIB_WARNING", None)


@functools.cache
def _atomic_mass(symbol: str) -> float:
    from pymatgen.core import Element

    return float(Element(symbol).atomic_mass)


def _labels(structure, symbols: list[str], charges: np.ndarray) -> tuple[dict[str, float], dict]:
    """Targets and symmetry metadata of one oxidation-state-decorated structure."""
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings(), _quiet_spglib():
        warnings.simplefilter("ignore")
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        number = sga.get_space_group_number()
        system = sga.get_crystal_system()
        symbol = sga.get_space_group_symbol()
        ewald = EwaldSummation(structure).total_energy if np.any(charges != 0) else 0.0
    n = len(structure)
    volume = float(abs(np.linalg.det(structure.lattice.matrix)))
    mass = sum(_atomic_mass(s) for s in symbols)
    targets = {
        "space_group": float(number),
        "crystal_system": float(CRYSTAL_SYSTEMS.index(system)),
        "density": mass * _AMU_PER_A3_TO_G_PER_CM3 / volume,
        "volume_per_atom": volume / n,
        "ewald_energy_per_atom": float(ewald / n),
    }
    return targets, {"space_group_symbol": symbol, "crystal_system": system}


def generate_one(index: int, seed: int = 0, strain_fraction: float = 0.2) -> Material:
    """Material number ``index`` of the dataset with this ``seed`` (deterministic).

    Returns a Material with id "proto-%06d", an ordered pymatgen Structure (1-14 atoms, plain
    elements), float targets (see module docstring) and provenance in ``meta``.
    """
    from pymatgen.core import Species, Structure

    rng = np.random.default_rng([int(seed), int(index)])
    names = list(PROTOTYPE_WEIGHTS)
    weights = np.array([PROTOTYPE_WEIGHTS[k] for k in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    for _ in range(_MAX_ATTEMPTS):
        lattice, frac, symbols, charges, meta = _draw_cell(rng, name, strain_fraction)
        if pair_min_distances(lattice, frac).min() < MIN_DISTANCE:
            continue
        species = [Species(s, int(q)) for s, q in zip(symbols, charges)]
        structure = Structure(lattice, species, frac)
        targets, sym_meta = _labels(structure, symbols, charges)
        structure.remove_oxidation_states()
        meta.update(sym_meta)
        meta.update({"source": "prototypes", "seed": int(seed), "index": int(index),
                     "formula": structure.composition.reduced_formula})
        return Material(id=f"proto-{index:06d}", structure=structure, targets=targets, meta=meta)
    raise RuntimeError(f"proto-{index:06d}: no valid {name} cell in {_MAX_ATTEMPTS} draws")


def generate_prototypes(n: int = 3000, seed: int = 0, strain_fraction: float = 0.2) -> list[Material]:
    """``n`` synthetic ordered crystals (ids "proto-000000" ...), deterministic for ``seed``.

    Needs no files or network. ``strain_fraction`` in [0, 1] is the probability that a structure
    gets a random strain and site displacements. Material ``i`` depends only on ``(seed, i)``.
    See the module docstring for the prototypes and the labels.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= strain_fraction <= 1.0:
        raise ValueError(f"strain_fraction must be in [0, 1], got {strain_fraction}")
    return [generate_one(i, seed, strain_fraction) for i in range(n)]
