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
import functools
import itertools
import os
import warnings

import numpy as np
from pymatgen.core import Element, Lattice, Species, Structure

from mmjax.data.material import Material
from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.data.sources.prototype_cells import PROTOTYPE_WEIGHTS, RECIPES, Template, distortion_bases, templates

MIN_DISTANCE = 1.0
"""Smallest allowed distance between any two sites (periodic images included), Angstrom."""

SYMPREC = 0.1
"""spglib symmetry tolerance for the space-group labels, Angstrom."""

_MAX_ATTEMPTS = 50
_STRAIN_MAX = 0.04
_DISPLACEMENT_SIGMA = 0.08  # Angstrom per Cartesian component

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
    if bonding == "metallic":
        el = Element(symbol)
        return float(el.metallic_radius or el.atomic_radius)
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return float(CovalentRadius.radius[symbol])


def _site_radii(template: "Template", chosen: dict[str, tuple[str, int]]) -> np.ndarray:
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


def _scaled_cell(template: Template, lattice: np.ndarray, chosen: dict[str, tuple[str, int]]):
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
    cells = templates()
    if name not in cells:
        raise ValueError(f"unknown prototype {name!r}; choose from {sorted(cells)}")
    template = cells[name]
    lattice, frac, symbols, _ = _scaled_cell(template, template.lattice, dict(species))
    return Structure(lattice, symbols, frac)


def prototype_roles(name: str) -> tuple[str, ...]:
    """Distinct site roles of an undistorted prototype, e.g. ("A", "B", "X") for perovskite."""
    return tuple(sorted(set(templates()[name].roles)))


def _draw_cell(rng: np.random.Generator, name: str, strain_fraction: float):
    """One candidate cell: (lattice [3,3] A, frac [N,3], symbols [N], charges [N], meta)."""
    meta: dict = {"prototype": name}
    if name.startswith("distorted-"):
        bases = distortion_bases()
        base_name = list(bases)[rng.integers(len(bases))]
        base = bases[base_name]
        lattice = _distorted_lattice(rng, name.removeprefix("distorted-"))
        meta["base_prototype"] = base_name
        recipes = RECIPES[base_name]
    else:
        base = templates()[name]
        lattice = base.lattice
        recipes = RECIPES[name]
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
