"""Prototype recipes and cells of the synthetic default dataset (`mmjax.data.sources.prototypes`):
ion tables by formal oxidation state, the charge-balanced element recipes per prototype, the
geometry templates (lattice, fractional sites, roles, coordination), the distorted-lattice bases
and the prototype draw weights. THIS DATA IS SYNTHETIC (see the prototypes module)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from pymatgen.core import Lattice, Structure

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
RECIPES: dict[str, tuple[dict[str, tuple], ...]] = {
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
class Template:
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
def templates() -> dict[str, Template]:
    t: dict[str, Template] = {}
    t["rocksalt"] = Template(_fcc_primitive(5.64), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
                              ("A", "X"), {"A": "VI", "X": "VI"})
    t["cscl"] = Template(np.eye(3) * 4.12, np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), ("A", "X"),
                          {"A": "VIII", "X": "VIII"})
    t["zincblende"] = Template(_fcc_primitive(5.41), np.array([[0, 0, 0], [0.25, 0.25, 0.25]]),
                                ("A", "X"), {"A": "IV", "X": "IV"})
    u = 0.38
    t["wurtzite"] = Template(
        _hexagonal(3.25, 5.21),
        np.array([[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]),
        ("A", "A", "X", "X"), {"A": "IV", "X": "IV"})
    quarter = np.array([[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])
    t["fluorite"] = Template(_fcc_primitive(5.46), quarter, ("A", "X", "X"),
                              {"A": "VIII", "X": "IV"})
    t["antifluorite"] = Template(_fcc_primitive(4.61), quarter, ("X", "A", "A"),
                                  {"A": "IV", "X": "VIII"})
    t["perovskite"] = Template(
        np.eye(3) * 3.905,
        np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        ("A", "B", "X", "X", "X"), {"A": "XII", "B": "VI", "X": "VI"})
    spinel = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(8.08), ["Mg", "Al", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.387, 0.387, 0.387]]).get_primitive_structure()
    t["spinel"] = Template(spinel.lattice.matrix, spinel.frac_coords,
                            tuple({"Mg": "A", "Al": "B", "O": "X"}[s.symbol] for s in spinel.species),
                            {"A": "IV", "B": "VI", "X": "IV"})
    u = 0.3048
    t["rutile"] = Template(
        np.diag([4.594, 4.594, 2.959]),
        np.array([[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5],
                  [0.5 - u, 0.5 + u, 0.5]]),
        ("A", "A", "X", "X", "X", "X"), {"A": "VI", "X": "III"})
    z = 0.2385
    litharge_frac = np.array([[0.25, 0.25, z], [0.75, 0.75, 1 - z], [0.75, 0.25, 0], [0.25, 0.75, 0]])
    t["litharge"] = Template(np.diag([3.97, 3.97, 5.02]), litharge_frac, ("A", "A", "X", "X"),
                              {"A": "IV", "X": "IV"})
    t["anti-litharge"] = Template(np.diag([3.77, 3.77, 5.52]),
                                   np.array([[0.25, 0.25, 0.26], [0.75, 0.75, 0.74],
                                             [0.75, 0.25, 0], [0.25, 0.75, 0]]),
                                   ("X", "X", "A", "A"), {"A": "IV", "X": "IV"})
    t["nias"] = Template(_hexagonal(3.62, 5.03),
                          np.array([[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                          ("A", "A", "X", "X"), {"A": "VI", "X": "VI"})
    t["cdi2"] = Template(_hexagonal(4.24, 6.84),
                          np.array([[0, 0, 0], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                          ("A", "X", "X"), {"A": "VI", "X": "III"})
    corundum = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"],
        [[0, 0, 0.3523], [0.3064, 0, 0.25]]).get_primitive_structure()
    t["corundum"] = Template(corundum.lattice.matrix, corundum.frac_coords,
                              tuple("A" if s.symbol == "Al" else "X" for s in corundum.species),
                              {"A": "VI", "X": "IV"})
    layered = Structure.from_spacegroup(
        "R-3m", Lattice.hexagonal(2.816, 14.05), ["Co", "Li", "O"],
        [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.2604]]).get_primitive_structure()
    t["layered-nafeo2"] = Template(layered.lattice.matrix, layered.frac_coords,
                                    tuple({"Li": "A", "Co": "B", "O": "X"}[s.symbol]
                                          for s in layered.species),
                                    {"A": "VI", "B": "VI", "X": "VI"})
    x, y = 0.2004, 0.3787  # marcasite FeS2, Pnnm, S at 4g
    t["marcasite"] = Template(
        np.diag([4.436, 5.414, 3.381]),
        np.array([[0, 0, 0], [0.5, 0.5, 0.5]]
                 + _wyckoff([lambda x, y, z: (x, y, 0), lambda x, y, z: (-x, -y, 0),
                             lambda x, y, z: (0.5 - x, 0.5 + y, 0.5),
                             lambda x, y, z: (0.5 + x, 0.5 - y, 0.5)], (x, y, 0))),
        ("A", "A", "X", "X", "X", "X"), {"A": "VI", "X": "IV"})
    pnma_4c = [lambda x, y, z: (x, 0.25, z), lambda x, y, z: (0.5 - x, 0.75, 0.5 + z),
               lambda x, y, z: (-x, 0.75, -z), lambda x, y, z: (0.5 + x, 0.25, 0.5 - z)]
    t["snse"] = Template(  # SnSe, Pnma, both atoms at 4c
        np.diag([11.50, 4.15, 4.45]),
        np.array(_wyckoff(pnma_4c, (0.1185, 0.25, 0.1029)) + _wyckoff(pnma_4c, (0.8553, 0.25, 0.4819))),
        ("A",) * 4 + ("X",) * 4, {"A": "VII", "X": "VI"})
    p21c_4e = [lambda x, y, z: (x, y, z), lambda x, y, z: (-x, 0.5 + y, 0.5 - z),
               lambda x, y, z: (-x, -y, -z), lambda x, y, z: (x, 0.5 - y, 0.5 + z)]
    t["baddeleyite"] = Template(  # monoclinic ZrO2, P2_1/c
        Lattice.from_parameters(5.1505, 5.2116, 5.3173, 90, 99.23, 90).matrix,
        np.array(_wyckoff(p21c_4e, (0.2754, 0.0395, 0.2083)) + _wyckoff(p21c_4e, (0.0700, 0.3317, 0.3447))
                 + _wyckoff(p21c_4e, (0.4496, 0.7569, 0.4792))),
        ("A",) * 4 + ("X",) * 8, {"A": "VII", "X": "IV"})
    t["fcc"] = Template(_fcc_primitive(3.61), np.zeros((1, 3)), ("A",), {}, "metallic")
    t["bcc"] = Template(0.5 * 2.87 * np.array([[-1.0, 1, 1], [1, -1, 1], [1, 1, -1]]), np.zeros((1, 3)),
                         ("A",), {}, "metallic")
    t["hcp"] = Template(_hexagonal(3.21, 5.21), np.array([[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
                         ("A", "A"), {}, "metallic")
    t["diamond"] = Template(_fcc_primitive(5.43), np.array([[0, 0, 0], [0.25, 0.25, 0.25]]),
                             ("A", "A"), {}, "covalent")
    return t


@functools.cache
def distortion_bases() -> dict[str, Template]:
    """Small conventional cells (cubic axes) that the distorted-<system> prototypes deform."""
    t = templates()
    rs_frac, rs_roles = _centred([("A", (0, 0, 0)), ("X", (0.5, 0.5, 0.5))])
    zb_frac, zb_roles = _centred([("A", (0, 0, 0)), ("X", (0.25, 0.25, 0.25))])
    fl_frac, fl_roles = _centred([("A", (0, 0, 0)), ("X", (0.25, 0.25, 0.25)), ("X", (0.75, 0.75, 0.75))])
    return {
        "cscl": t["cscl"],
        "perovskite": t["perovskite"],
        "rocksalt": Template(np.eye(3), rs_frac, rs_roles, t["rocksalt"].cn),
        "zincblende": Template(np.eye(3), zb_frac, zb_roles, t["zincblende"].cn),
        "fluorite": Template(np.eye(3), fl_frac, fl_roles, t["fluorite"].cn),
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


