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

import csv
import functools
import gzip
import json
import math
import os
import pathlib
import warnings

import numpy as np
from pymatgen.core import Element

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
    """Element feature table float32 [Z + 1, F] indexed by atomic number; row 0 is all zeros.

    kind: "cgcnn92" (F = 92, rebuilt from pymatgen, see module docstring), "onehot" (F = 100,
    column Z - 1), or a data table read by `load_element_table` (``"mat2vec"``,
    ``"cgcnn_atom_init"``, ``"magpie"``, ``"oliynyk"``, or a file path).
    Returns a fresh copy (the cached table is never handed out).
    """
    if kind in ("cgcnn92", "onehot"):
        return _table(kind).copy()
    return load_element_table(kind)


# ------------------------------------------------------------------------------------------
# element tables shipped as data (CrabNet's element_properties/, CGCNN's atom_init.json)

DATA_TABLES = {"mat2vec": "mat2vec.csv.gz", "magpie": "magpie.csv.gz", "oliynyk": "oliynyk.csv.gz",
               "cgcnn_atom_init": "cgcnn_atom_init.json.gz"}
ELEMENT_DIR_ENV = "MMJAX_ELEMENT_DIR"


def element_table_dirs() -> list[pathlib.Path]:
    """Where named data tables are looked up, in order: ``$MMJAX_ELEMENT_DIR``, then
    ``../shared/data/element_properties`` beside the repository (the development layout)."""
    dirs = []
    if os.environ.get(ELEMENT_DIR_ENV):
        dirs.append(pathlib.Path(os.environ[ELEMENT_DIR_ENV]))
    dirs.append(pathlib.Path(__file__).resolve().parents[4] / "shared" / "data" / "element_properties")
    return dirs


def resolve_element_table(name_or_path: str) -> pathlib.Path:
    """The file behind a table name (`DATA_TABLES`) or an explicit path; clear error if absent."""
    p = pathlib.Path(name_or_path)
    if p.suffix in (".csv", ".gz", ".json") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"element table file {p} does not exist")
        return p
    if name_or_path not in DATA_TABLES:
        raise ValueError(f"unknown element table {name_or_path!r}; choose 'cgcnn92', 'onehot', one of "
                         f"{sorted(DATA_TABLES)} or a .csv/.csv.gz/.json(.gz) path")
    tried = [d / DATA_TABLES[name_or_path] for d in element_table_dirs()]
    for f in tried:
        if f.is_file():
            return f
    raise FileNotFoundError(f"element table {name_or_path!r} not found (tried {', '.join(map(str, tried))}); "
                            f"set ${ELEMENT_DIR_ENV} to the folder that holds {DATA_TABLES[name_or_path]}")


def load_element_table(name_or_path: str) -> np.ndarray:
    """float32 [Z_max + 1, F] from a data file; row Z = element Z, row 0 and absent elements zero.

    Formats: CSV (optionally gzipped) whose first column is the element symbol and the rest are
    features (CrabNet's ``element_properties/*.csv``; empty cells read as 0), or JSON keyed by
    atomic number (CGCNN's ``atom_init.json``). Z_max is the largest element in the file.
    """
    return _load_table_cached(str(resolve_element_table(name_or_path).resolve())).copy()


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    rows: dict[int, list[float]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        if path.endswith((".json", ".json.gz")):
            for k, v in json.load(fh).items():
                rows[int(k)] = [float(x) for x in v]
        else:
            reader = csv.reader(fh)
            next(reader)  # header
            for line_no, rec in enumerate(reader, start=2):
                if not rec:
                    continue
                try:
                    z = Element(rec[0].strip()).Z
                except ValueError:
                    raise ValueError(f"{path} line {line_no}: {rec[0]!r} is not an element symbol") from None
                rows[z] = [float(x) if x.strip() else 0.0 for x in rec[1:]]
    if not rows:
        raise ValueError(f"element table {path} has no rows")
    widths = {len(v) for v in rows.values()}
    if len(widths) != 1:
        raise ValueError(f"element table {path}: rows have different widths {sorted(widths)}")
    table = np.zeros((max(rows) + 1, widths.pop()), np.float32)
    for z, v in rows.items():
        table[z] = v
    return table
