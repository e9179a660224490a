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
