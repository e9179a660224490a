"""Composition features for CrabNet-style element-derived matrices (EDM).

Order of the elements: by descending atomic fraction, ties by ascending atomic number (so "NaCl"
gives [11, 17] and "Fe2O3" gives [8, 26]). Oxidation states and site disorder are reduced to the
element amounts (``Composition.element_composition``).
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Composition, Element


def _as_composition(obj):
    if isinstance(obj, Composition):
        return obj
    if isinstance(obj, str):
        try:
            return Composition(obj)
        except Exception as err:  # pymatgen raises several types for bad formulas
            raise ValueError(f"composition {obj!r}: cannot parse formula ({err})") from err
    if hasattr(obj, "composition"):  # Structure, Molecule, Material
        return obj.composition
    raise TypeError(f"expected a Composition, Structure or formula string, got {type(obj).__name__}")


def composition_features(composition_or_structure, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """Element indices and fractions of one composition.

    Args:
      composition_or_structure: pymatgen ``Composition``, ``Structure`` or formula string ("Fe2O3").
      max_elements: pad to this many entries (atomic number 0, fraction 0, mask False) or raise a
        ValueError naming the formula when it has more distinct elements. None: no padding.

    Returns dict with atomic_numbers int32 [M], fractions float32 [M] (sum to 1 over valid
    entries), mask bool [M]; M = number of elements, or ``max_elements`` when given.
    """
    comp = _as_composition(composition_or_structure).element_composition
    formula = composition_or_structure if isinstance(composition_or_structure, str) else comp.formula
    amounts = comp.get_el_amt_dict()
    if not amounts:
        raise ValueError(f"composition {formula!r}: no elements")

    zs, fr = [], []
    for symbol, amount in amounts.items():
        try:
            z = Element(symbol).Z
        except ValueError as err:
            raise ValueError(f"composition {formula!r}: {symbol!r} is not an element") from err
        if not amount > 0:
            raise ValueError(f"composition {formula!r}: non-positive amount of {symbol}")
        zs.append(z)
        fr.append(float(amount))
    zs = np.asarray(zs, np.int64)
    fr = np.asarray(fr, np.float64)
    fr = fr / fr.sum()
    order = np.lexsort((zs, -fr))
    zs, fr = zs[order], fr[order]
    m = len(zs)
    if max_elements is None:
        size = m
    else:
        if m > max_elements:
            raise ValueError(f"composition {formula!r}: {m} elements exceed max_elements={max_elements}")
        size = max_elements
    out_z = np.zeros(size, np.int32)
    out_f = np.zeros(size, np.float32)
    mask = np.zeros(size, bool)
    out_z[:m], out_f[:m], mask[:m] = zs, fr, True
    return {"atomic_numbers": out_z, "fractions": out_f, "mask": mask}
