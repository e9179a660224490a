"""Element feature tables indexed by atomic number (row 0 = padding element, all zeros).

``element_features("cgcnn92")`` rebuilds CGCNN's 92-d ``atom_init.json`` layout from pymatgen's
element data (CGCNN paper, Table S2; block offsets checked against the published file):

  block                  width  encoding
  group                    19   one-hot of the group number 1..18 at column = group; column 0 is
                                used for the f-block (La..Yb, Ac..No), as in the CGCNN file
  period                    7   one-hot 1..7
  electronegativity        10   equal bins over [0.5, 4.0] (Pauling)
  covalent radius          10   equal bins over [25, 250] pm (Cordero et al. 2008 via pymatgen)
  valence electrons        12   one-hot 1..12 (s: group; d: group; p: group - 10; f: 2, the 6s/7s
                                pair, which is what the CGCNN file encodes for La..Yb, Ac..No)
  first ionisation energy  10   equal bins of ln(eV) over [1.3, 3.3]
  electron affinity        10   equal bins over [-3.0, 3.7] eV
  block                     4   one-hot s, p, d, f
  atomic volume            10   equal bins of ln(cm^3/mol) over [1.5, 4.3]

Values outside a range fall in the first / last bin; a property pymatgen does not know (e.g. the
electronegativity of He, Ne, Ar) leaves its block all zero, as the CGCNN file does. The table covers
Z = 1..100 like CGCNN's. Difference from the published file: CGCNN took its raw values from other
tables, so for some elements a continuous property lands in a neighbouring bin (e.g. H's molar
volume, La's covalent radius); the layout, ranges and bin rules are the same.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

Z_MAX = 100
CGCNN_BLOCKS = (
    ("group", 19),
    ("period", 7),
    ("electronegativity", 10),
    ("covalent_radius", 10),
    ("valence", 12),
    ("ionization_energy", 10),
    ("electron_affinity", 10),
    ("block", 4),
    ("atomic_volume", 10),
)
CGCNN_DIM = sum(w for _, w in CGCNN_BLOCKS)  # 92
_BIN_RANGES = {
    "electronegativity": (0.5, 4.0),
    "covalent_radius": (25.0, 250.0),  # pm
    "ionization_energy": (1.3, 3.3),  # ln(eV)
    "electron_affinity": (-3.0, 3.7),  # eV
    "atomic_volume": (1.5, 4.3),  # ln(cm^3/mol)
}


def bin_index(value: float, lo: float, hi: float, n_bins: int = 10) -> int:
    """Index of ``value`` among ``n_bins`` equal bins over [lo, hi], clipped to [0, n_bins - 1]."""
    k = math.floor((value - lo) / (hi - lo) * n_bins + 1e-9)  # 1e-9: values on a bin edge go up
    return min(max(k, 0), n_bins - 1)


def _element_properties(z: int) -> dict[str, float | int | None]:
    """Raw CGCNN properties of element ``z`` from pymatgen (None where unknown)."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
    from pymatgen.core import Element

    el = Element.from_Z(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        en = el.X
        ie = el.ionization_energies[0] if el.ionization_energies else None
        try:
            ea = float(el.electron_affinity)
        except (ValueError, TypeError, AttributeError):
            ea = None
        mv = el.molar_volume
        block = el.block
        group = el.group
    radius_angstrom = CovalentRadius.radius.get(el.symbol)
    if block == "f":
        valence = 2
    elif block == "p":
        valence = group - 10
    else:  # s (incl. He, whose pymatgen block is p but group 18 -> handled below) and d
        valence = group
    if el.symbol == "He":
        valence, block = 2, "s"
    return {
        "group": 0 if block == "f" else group,
        "period": el.row,
        "electronegativity": None if en is None or not np.isfinite(en) else float(en),
        "covalent_radius": None if radius_angstrom is None else 100.0 * float(radius_angstrom),
        "valence": valence,
        "ionization_energy": None if ie is None or not ie > 0 else math.log(ie),
        "electron_affinity": ea,
        "block": "spdf".index(block),
        "atomic_volume": None if mv is None or not float(mv) > 0 else math.log(float(mv)),
    }


def cgcnn_row(z: int) -> np.ndarray:
    """The 92-d CGCNN feature vector of element ``z`` (float32 [92], one-hot per block)."""
    props = _element_properties(z)
    row = np.zeros(CGCNN_DIM, np.float32)
    offset = 0
    for name, width in CGCNN_BLOCKS:
        value = props[name]
        if value is not None:
            if name in _BIN_RANGES:
                k = bin_index(value, *_BIN_RANGES[name], n_bins=width)
            elif name in ("period", "valence"):
                k = int(value) - 1
            else:  # group (0..18), block (0..3)
                k = int(value)
            if 0 <= k < width:
                row[offset + k] = 1.0
        offset += width
    return row


@functools.lru_cache(maxsize=None)
def _table(kind: str) -> np.ndarray:
    if kind == "cgcnn92":
        table = np.zeros((Z_MAX + 1, CGCNN_DIM), np.float32)
        for z in range(1, Z_MAX + 1):
            table[z] = cgcnn_row(z)
        return table
    if kind == "onehot":
        table = np.zeros((Z_MAX + 1, Z_MAX), np.float32)
        table[np.arange(1, Z_MAX + 1), np.arange(Z_MAX)] = 1.0
        return table
    raise ValueError(f"unknown element feature table {kind!r}; choose 'cgcnn92' or 'onehot'")


def element_features(kind: str = "cgcnn92") -> np.ndarray:
    """Element feature table float32 [Z_MAX + 1, F] indexed by atomic number; row 0 is all zeros.

    kind: "cgcnn92" (F = 92, see module docstring) or "onehot" (F = 100, column Z - 1).
    Returns a fresh copy (the cached table is never handed out).
    """
    return _table(kind).copy()
