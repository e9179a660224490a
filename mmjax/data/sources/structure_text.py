"""Parse one crystal structure from CIF or POSCAR text (format given or detected)."""

from __future__ import annotations

import re
import warnings

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.vasp import Poscar

STRUCTURE_FORMATS = ("cif", "poscar")

_CIF_MARKERS = re.compile(r"^\s*(data_|_cell_length_a|loop_)", re.MULTILINE)


def detect_format(text: str) -> str:
    """"cif" when the text has CIF tags (``data_``, ``_cell_length_a``, ``loop_``), else "poscar"."""
    return "cif" if _CIF_MARKERS.search(text) else "poscar"


def _fast_poscar(text: str) -> Structure | None:
    """Structure from a plain VASP 5/6 POSCAR (positive scale, one symbol line, optional selective
    dynamics), built once; None for anything else so that pymatgen's full parser handles it.

    Gives the same lattice, species and coordinates as ``Poscar.from_str(text).structure``
    (coordinates not wrapped; selective-dynamics flags and velocities are not kept) at about a
    third of the cost, because pymatgen builds and copies the Structure three times.
    """
    lines = [line.split("#", 1)[0].split() for line in text.strip("\n").split("\n")]
    try:
        if len(lines[1]) != 1:
            return None
        scale = float(lines[1][0])
        if scale <= 0:
            return None
        matrix = np.array([[float(v) for v in lines[i][:3]] for i in (2, 3, 4)]) * scale
        if matrix.shape != (3, 3):
            return None
        symbols = [tok.split("/")[0].split("_")[0] for tok in lines[5]]
        if not symbols or not all(Element.is_valid_symbol(sym) for sym in symbols):
            return None
        counts = [int(v) for v in lines[6]]
        if len(counts) != len(symbols) or min(counts) < 0:
            return None
        ipos = 7
        if lines[ipos][0][0] in "sS":
            ipos += 1
        cart = lines[ipos][0][0] in "cCkK"
        n_sites = sum(counts)
        rows = lines[ipos + 1 : ipos + 1 + n_sites]
        if len(rows) != n_sites or any(len(r) < 3 for r in rows):
            return None
        coords = np.array([[float(v) for v in r[:3]] for r in rows])
    except (ValueError, IndexError):
        return None
    if cart:
        coords = coords * scale
    species = [sym for sym, n in zip(symbols, counts) for _ in range(n)]
    return Structure(Lattice(matrix), species, coords, to_unit_cell=False, validate_proximity=False,
                     coords_are_cartesian=cart)


_IDENTITY_OPS = {"x,y,z", "+x,+y,+z"}
_SYMOP_KEYS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
_SITE_TOLERANCE = 1e-4  # CifParser's default site_tolerance (fractional)
_FRAC_TOLERANCE = 1e-4  # CifParser's default frac_tolerance: 0.66667 -> 2/3


def _cif_loops(lines: list[str]) -> tuple[dict[str, str], list[tuple[list[str], list[str]]]] | None:
    """Tags and loops (header names, raw row lines) of a single-block CIF; None if unusual."""
    tags: dict[str, str] = {}
    loops: list[tuple[list[str], list[str]]] = []
    blocks = 0
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith(";"):
            return None  # multi-line text fields: leave to pymatgen
        if line.startswith("data_"):
            blocks += 1
            if blocks > 1:
                return None
        elif line == "loop_":
            names: list[str] = []
            while i < len(lines) and lines[i].strip().startswith("_"):
                names.append(lines[i].strip().split()[0].lower())
                i += 1
            rows = []
            while i < len(lines):
                row = lines[i].strip()
                if not row or row.startswith(("_", "loop_", "data_", "#")):
                    break
                if row.startswith(";"):
                    return None
                rows.append(row)
                i += 1
            loops.append((names, rows))
        elif line.startswith("_"):
            parts = line.split(None, 1)
            if len(parts) != 2:
                return None  # value on the next line
            tags[parts[0].lower()] = parts[1].strip().strip("'\"")
        else:
            return None
    return (tags, loops) if blocks == 1 else None


def _fast_p1_cif(text: str) -> Structure | None:
    """Structure from a P1 CIF with fully occupied, distinct sites (what pymatgen's CifWriter and
    most databases write for P1), built directly; None for anything else (symmetry operations
    other than the identity, partial occupancies, uncertainties, oxidation states, magnetic CIF,
    several blocks ...), which pymatgen's CifParser then handles.

    Follows ``CifParser`` step by step for this case, so it returns the same lattice
    (``Lattice.from_parameters``), coordinates (values within 1e-4 relative of 1/3 or 2/3 snapped
    to them, then wrapped with ``x - floor(x)``), labels and site
    order (sites grouped by species, then ``get_sorted_structure``) as
    ``Structure.from_str(text, fmt="cif")``, about ten times faster.
    """
    parsed = _cif_loops(text.splitlines())
    if parsed is None:
        return None
    tags, loops = parsed
    if any("magn" in k or "moment" in k or "oxidation" in k for k in tags) or any(
        "magn" in n or "moment" in n or "oxidation" in n for names, _ in loops for n in names
    ):
        return None
    try:
        params = [float(tags[f"_cell_length_{x}"]) for x in "abc"]
        params += [float(tags[f"_cell_angle_{x}"]) for x in ("alpha", "beta", "gamma")]
    except (KeyError, ValueError):
        return None
    symops = [rows for names, rows in loops if any(k in names for k in _SYMOP_KEYS)]
    if len(symops) != 1 or len(symops[0]) != 1:
        return None
    op = symops[0][0].replace("'", "").replace('"', "").replace(" ", "")
    if op.lstrip("0123456789") not in _IDENTITY_OPS:
        return None
    atoms = [(names, rows) for names, rows in loops if "_atom_site_fract_x" in names]
    if len(atoms) != 1:
        return None
    names, rows = atoms[0]
    need = ("_atom_site_type_symbol", "_atom_site_label", "_atom_site_fract_x", "_atom_site_fract_y",
            "_atom_site_fract_z")
    if not all(k in names for k in need) or not rows:
        return None
    col = {k: names.index(k) for k in names}
    species, labels, coords = [], [], []
    for row in rows:
        tokens = row.split()
        if len(tokens) != len(names):
            return None
        symbol = tokens[col["_atom_site_type_symbol"]]
        if not Element.is_valid_symbol(symbol):
            return None
        if "_atom_site_occupancy" in col and tokens[col["_atom_site_occupancy"]] not in ("1", "1.0", "1.00", "1.000"):
            return None
        try:
            coords.append([float(tokens[col[f"_atom_site_fract_{x}"]]) for x in "xyz"])
        except ValueError:
            return None  # e.g. uncertainties "0.25(3)"
        species.append(symbol)
        labels.append(tokens[col["_atom_site_label"]])
    lattice = Lattice.from_parameters(*params)
    thickness = 1.0 / np.linalg.norm(np.linalg.inv(lattice.matrix).T, axis=1)  # d_100, d_010, d_001
    if not np.all(thickness >= 0.01):
        return None  # CifParser rejects such thin cells
    frac = np.array(coords, dtype=np.float64)
    for third in (1 / 3, 2 / 3):  # CifParser._sanitize_data snaps finite-precision thirds
        frac[np.abs(frac / third - 1.0) <= _FRAC_TOLERANCE] = third
    frac = frac - np.floor(frac)
    if len(frac) > 1:
        diff = frac[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        close = np.all(np.abs(diff) < _SITE_TOLERANCE, axis=-1)
        if np.count_nonzero(close) > len(frac):
            return None  # overlapping sites: CifParser merges them
    # CifParser ends with get_sorted_structure(): a stable sort on (electronegativity, symbol),
    # which for one element per site fixes the order whatever the grouping before it.
    keys = {sym: (Element(sym).X, sym) for sym in set(species)}
    if any(np.isnan(k[0]) for k in keys.values()):
        return None  # noble gases have no electronegativity; pymatgen's order is then ill-defined
    order = sorted(range(len(species)), key=lambda k: keys[species[k]])
    return Structure(lattice, [species[k] for k in order], frac[order], labels=[labels[k] for k in order])


def parse_structure(text: str, fmt: str | None = None) -> Structure:
    """Structure from CIF or POSCAR/CONTCAR text.

    text: file contents. fmt: "cif", "poscar" or None (detected with ``detect_format``).
    Only the first structure of a multi-block CIF is returned (as pymatgen reads it, not
    reduced to the primitive cell). Raises ``ValueError`` with the parser's reason when the
    text is empty, does not parse, or holds no sites.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty structure text")
    fmt = (fmt or detect_format(text)).lower()
    if fmt not in STRUCTURE_FORMATS:
        raise ValueError(f"unknown structure format {fmt!r}; expected one of {STRUCTURE_FORMATS}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns per CIF about rounding/occupancies
            if fmt == "cif":
                structure = _fast_p1_cif(text)
                if structure is None:
                    structure = Structure.from_str(text, fmt="cif")
            else:
                structure = _fast_poscar(text)
                if structure is None:
                    structure = Poscar.from_str(text, read_velocities=False).structure
    except Exception as exc:  # pymatgen raises many types (ValueError, IndexError, KeyError ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{fmt.upper()} does not parse: {reason}") from exc
    if len(structure) == 0:
        raise ValueError(f"{fmt.upper()} holds no atomic sites")
    return structure
