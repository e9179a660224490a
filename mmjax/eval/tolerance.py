"""Goldschmidt tolerance factor of ABX3 perovskites from Shannon ionic radii (MatBind Eq. 2-3).

    t = (r_A + r_X) / (√2 (r_B + r_X))

Radii: pymatgen's Shannon table (``Species.get_shannon_radius``, ionic radii), A cation in
12-fold ("XII") and B cation in 6-fold ("VI") coordination, anions in 6-fold coordination, as
in Bartel et al. (2019), with fallbacks to other coordinations where the table has no entry
(many Castelli A-site ions lack a XII radius; N3- is only tabulated for IV). The A/B assignment comes from the structure: in an ABX3 perovskite
the B cation sits in the anion octahedron, i.e. it has the shorter nearest cation-anion
distance. Oxidation states: fixed anion states (O/S/Se -2, N -3, F/Cl/Br/I -1); cation states
from pymatgen's known states that balance them (see :func:`tolerance_factor`). Mixed-anion cells
(e.g. ABO2N) use the composition-weighted mean anion radius.

Perovskite window (MatBind Eq. 3): 0.90 <= t <= 1.09 for sulfides, 1.01 <= t <= 1.05 for
selenides. MatBind gives no window for other anions; we use Goldschmidt's classic
0.8 <= t <= 1.0 there (our choice, configurable through ``windows``).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np
from pymatgen.core import Element, Species

from mmjax.data.material import RecordError

ANION_OXIDATION = {"O": -2, "S": -2, "Se": -2, "Te": -2, "N": -3, "F": -1, "Cl": -1, "Br": -1, "I": -1}
DEFAULT_WINDOWS: Mapping[str, tuple[float, float]] = {"Se": (1.01, 1.05), "S": (0.90, 1.09), "default": (0.80, 1.00)}


def goldschmidt(r_a: float, r_b: float, r_x: float) -> float:
    """Tolerance factor from radii in Å."""
    return (r_a + r_x) / (math.sqrt(2.0) * (r_b + r_x))


def shannon_radius(element: str, oxidation_state: int, coordination: str) -> float:
    """Shannon ionic radius (Å) from pymatgen; for high/low-spin ions the high-spin value.

    Raises KeyError (with the ion named) when the table has no entry.
    """
    sp = Species(element, oxidation_state)
    for spin in ("", "High Spin", "Low Spin"):
        try:
            with warnings.catch_warnings():  # pymatgen warns when only one spin state is tabulated
                warnings.simplefilter("ignore", UserWarning)
                return float(sp.get_shannon_radius(coordination, spin=spin))
        except (KeyError, ValueError):
            continue
    raise KeyError(f"no Shannon radius for {element}{oxidation_state:+d} in coordination {coordination}")


A_COORDINATIONS = ("XII", "XI", "X", "IX", "VIII", "VII", "VI")
B_COORDINATIONS = ("VI", "V", "VII", "IV", "VIII")
X_COORDINATIONS = ("VI", "IV", "VIII", "III", "II")


def _radius_with_fallback(element: str, ox: int, coordinations) -> tuple[float, str]:
    for cn in coordinations:
        try:
            return shannon_radius(element, ox, cn), cn
        except KeyError:
            continue
    raise KeyError(f"no Shannon radius for {element}{ox:+d} in any of {coordinations}")


def _cation_sites(structure, anions: set[str]) -> tuple[int, int]:
    """(A site index, B site index): B has the shorter nearest cation-anion distance."""
    cations = [i for i, s in enumerate(structure) if s.specie.symbol not in anions]
    if len(cations) != 2:
        raise ValueError(f"expected 2 cation sites (ABX3 cell), got {len(cations)}")
    nearest = []
    for i in cations:
        d = [nb.nn_distance for nb in structure.get_neighbors(structure[i], 5.0) if nb.specie.symbol in anions]
        if not d:
            raise ValueError(f"cation site {i} has no anion within 5 Å")
        nearest.append(min(d))
    b, a = (cations[0], cations[1]) if nearest[0] <= nearest[1] else (cations[1], cations[0])
    return a, b


def _oxidation_candidates(a: str, b: str, total: int):
    """(ox_A, ox_B) pairs with ox_A + ox_B = total, common states first, then lower A valence."""
    ea, eb = Element(a), Element(b)
    pairs = []
    for oa in ea.oxidation_states:
        ob = total - oa
        if oa > 0 and ob > 0 and ob in eb.oxidation_states:
            rank = (oa not in ea.common_oxidation_states) + (ob not in eb.common_oxidation_states)
            pairs.append((rank, oa, ob))
    return [(oa, ob) for _, oa, ob in sorted(pairs)]


def tolerance_factor(structure, record_id: str = "?") -> dict:
    """Tolerance factor of one 5-atom ABX3 cell (pymatgen ``Structure``).

    A/B are assigned per site (so A and B may be the same element). Cation oxidation states:
    all pymatgen-known states that balance the fixed anion charge, common states first;
    the first pair with Shannon radii is used. Missing radii fall back to the nearest listed
    coordination (A: XII, XI, X, ... VI; B: VI, V, VII, ...; anions VI then IV, e.g. N3-);
    the cation coordinations used are
    returned. Returns {"t", "A", "B", "anions", "oxidation_states", "radii", "coordination"};
    raises RecordError naming ``record_id`` when no assignment works.
    """
    try:
        els = structure.composition.get_el_amt_dict()
        anions = {e for e in els if e in ANION_OXIDATION}
        if not anions:
            raise ValueError(f"no known anion in {structure.composition.reduced_formula}")
        ia, ib = _cation_sites(structure, anions)
        a, b = structure[ia].specie.symbol, structure[ib].specie.symbol
        anion_charge = int(round(sum(ANION_OXIDATION[x] * els[x] for x in anions)))
        n_x = sum(els[x] for x in anions)
        r_x = sum(els[x] * _radius_with_fallback(x, ANION_OXIDATION[x], X_COORDINATIONS)[0] for x in anions) / n_x
        last_err = "no charge-balancing oxidation states"
        for ox_a, ox_b in _oxidation_candidates(a, b, -anion_charge):
            try:
                r_a, cn_a = _radius_with_fallback(a, ox_a, A_COORDINATIONS)
                r_b, cn_b = _radius_with_fallback(b, ox_b, B_COORDINATIONS)
            except KeyError as err:
                last_err = str(err)
                continue
            return {
                "t": goldschmidt(r_a, r_b, r_x),
                "A": a,
                "B": b,
                "anions": sorted(anions),
                "oxidation_states": {"A": ox_a, "B": ox_b, **{x: ANION_OXIDATION[x] for x in anions}},
                "radii": {"A": r_a, "B": r_b, "X": r_x},
                "coordination": {"A": cn_a, "B": cn_b},
            }
        raise ValueError(last_err)
    except (ValueError, KeyError) as err:
        raise RecordError(record_id, f"tolerance factor: {err}") from err


def in_perovskite_window(t: float, anions, windows: Mapping[str, tuple[float, float]] = DEFAULT_WINDOWS) -> bool:
    """MatBind Eq. 3: Se window if the formula contains Se, else S window for S, else default."""
    key = "Se" if "Se" in anions else "S" if "S" in anions else "default"
    lo, hi = windows[key]
    return bool(lo <= t <= hi)


def tolerance_factors(structures, ids, windows: Mapping[str, tuple[float, float]] = DEFAULT_WINDOWS) -> dict:
    """Tolerance factors for many structures; bad records are skipped and reported.

    Returns {"t": float64 [N] (NaN where failed), "is_perovskite": bool [N],
    "valid": bool [N], "errors": {id: reason}}.
    """
    n = len(structures)
    t = np.full(n, np.nan)
    perov = np.zeros(n, dtype=bool)
    errors = {}
    for i, (s, rid) in enumerate(zip(structures, ids)):
        try:
            r = tolerance_factor(s, str(rid))
        except RecordError as err:
            errors[str(rid)] = err.reason
            continue
        t[i] = r["t"]
        perov[i] = in_perovskite_window(r["t"], r["anions"], windows)
    return {"t": t, "is_perovskite": perov, "valid": np.isfinite(t), "errors": errors}
