"""Helpers shared by table-like readers: column detection, float targets, JSON-safe meta."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

ID_COLUMNS = ("material_id", "id", "mbid", "jid", "mpid", "task_id", "mat_id", "name")
STRUCTURE_COLUMNS = ("cif", "structure", "poscar")
STRUCTURE_COLUMN_PARTS = ("cif", "poscar", "structure")
TEXT_COLUMNS = ("description", "text")
COMPOSITION_COLUMNS = ("composition", "formula", "formula_pretty", "reduced_formula", "pretty_formula")


def find_column(columns: Iterable[str], exact: Iterable[str], parts: Iterable[str] = ()) -> str | None:
    """First column whose lower-cased name equals one of ``exact`` (in that order of preference),
    else the first whose name contains one of ``parts``; None when nothing matches."""
    columns = list(columns)
    lower = {c.lower(): c for c in reversed(columns)}  # first occurrence wins
    for name in exact:
        if name in lower:
            return lower[name]
    for part in parts:
        for c in columns:
            if part in c.lower():
                return c
    return None


def is_missing(value: Any) -> bool:
    """True for None, NaN, pandas NA and empty / whitespace-only strings."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # NaN, pd.NA-safe enough for scalars
    except (TypeError, ValueError):
        return False


def to_float(value: Any, name: str) -> float:
    """Float target value; missing -> NaN; bools -> 0/1; raises ValueError naming the column."""
    if is_missing(value):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"target {name!r} is not a number: {value!r}") from None


def to_target(value: Any, name: str) -> float | np.ndarray:
    """A target value: a number as `to_float`; a 1-D list of numbers -> float64 [d] (a vector
    target; null entries -> NaN); a square symmetric matrix (e.g. a 6 x 6 Voigt elastic tensor)
    -> its d (d + 1) / 2 independent entries, the upper triangle row by row (21 for 6 x 6).
    Raises ValueError naming the target otherwise."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        return to_float(value, name)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    try:
        arr = np.asarray([[math.nan if is_missing(x) else x for x in row] for row in value] if
                         value and isinstance(value[0], (list, tuple, np.ndarray)) else
                         [math.nan if is_missing(x) else x for x in value], np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"target {name!r} is not a list of numbers: {value!r}"[:200]) from None
    if arr.ndim == 1 and arr.size:
        return arr
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.size:
        finite = np.isfinite(arr) & np.isfinite(arr.T)
        scale = float(np.max(np.abs(arr[finite]), initial=0.0))
        if not np.allclose(arr[finite], arr.T[finite], rtol=1e-6, atol=1e-9 * max(scale, 1.0)):
            raise ValueError(f"target {name!r} is a {arr.shape[0]} x {arr.shape[1]} matrix that is not symmetric; "
                             "give its components as a flat list")
        arr = np.where(np.isfinite(arr), arr, arr.T)  # an entry given on one side only is kept
        return arr[np.triu_indices(arr.shape[0])]
    raise ValueError(f"target {name!r} has shape {list(arr.shape)}: a target is a number, a list of numbers "
                     "or a square symmetric matrix")


def json_safe(value: Any) -> Any:
    """Plain-Python, JSON-serialisable version of a table cell (NaN -> None, numpy -> Python)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if is_missing(value):
        return None
    return str(value)
