"""Shared output helpers for the evaluation modules: JSON metrics, text tables, PNG figures.

Every evaluation writes ``<out_dir>/<name>.json`` (NaN / inf become JSON null), optional PNGs
drawn with matplotlib's non-interactive Agg backend, and returns a short text table that the
caller prints.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and tuples to JSON types; NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as indented JSON (parent folders created); returns the path as str. The file is
    written beside the target and renamed over it, so a killed writer never leaves half a file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(to_jsonable(obj), fh, indent=1, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, digits: int = 4) -> str:
    """Plain-text table (one header line, one line per row); floats with ``digits`` decimals."""
    rows = list(rows)
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0].keys())
    cells = [[_fmt(r.get(c), digits) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def new_figure(figsize=(6.0, 4.5)):
    """A fresh matplotlib (Agg backend) figure and axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig, path: str | os.PathLike) -> str:
    """Save ``fig`` as PNG (parent folders created), close it, return the path as str."""
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
