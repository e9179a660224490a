"""Symmetry labels: space group number (1-230) and crystal system (7 classes) via spglib."""

from __future__ import annotations

import warnings

from mmjax.data.schema import CRYSTAL_SYSTEMS

SYMPREC_LADDER = (1e-2, 1e-3)  # retried in order (only those smaller than the requested symprec)


def _space_group(structure, symprec: float, angle_tolerance: float) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        number = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance
                                    ).get_space_group_number()
    number = int(number)
    if not 1 <= number <= 230:
        raise ValueError(f"space group number {number} out of range")
    return number


def crystal_system_of(space_group: int) -> str:
    """Crystal system of an International Tables space-group number (1-230)."""
    sg = int(space_group)
    if not 1 <= sg <= 230:
        raise ValueError(f"space group must be in 1..230, got {space_group}")
    for upper, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                        (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if sg <= upper:
            return name
    raise AssertionError("unreachable")


def symmetry_labels(structure, symprec: float = 0.1, angle_tolerance: float = 5.0, *,
                    record_id: str | None = None) -> dict:
    """Space group and crystal system of a structure.

    Tries ``symprec`` (Å) first, then each smaller value of ``SYMPREC_LADDER``; if spglib fails at
    all of them the structure is labelled P1 / triclinic and flagged (``fallback`` True, with a
    ``RuntimeWarning`` naming ``record_id``).

    Returns dict with space_group int (1..230), crystal_system str (one of
    ``schema.CRYSTAL_SYSTEMS``), crystal_system_index int (its position there), symprec_used float
    (None on fallback), fallback bool.
    """
    tried = [float(symprec)] + [p for p in SYMPREC_LADDER if p < symprec]
    errors = []
    for prec in tried:
        try:
            sg = _space_group(structure, prec, angle_tolerance)
        except Exception as err:  # spglib returns None / pymatgen raises various errors
            errors.append(f"symprec={prec}: {type(err).__name__}: {err}")
            continue
        system = crystal_system_of(sg)
        return {"space_group": sg, "crystal_system": system,
                "crystal_system_index": CRYSTAL_SYSTEMS.index(system),
                "symprec_used": prec, "fallback": False}
    name = record_id if record_id is not None else structure.composition.reduced_formula
    warnings.warn(f"record {name!r}: symmetry detection failed ({'; '.join(errors)}); labelled P1 triclinic",
                  RuntimeWarning, stacklevel=2)
    return {"space_group": 1, "crystal_system": "triclinic", "crystal_system_index": 0,
            "symprec_used": None, "fallback": True}
