"""Column-wise reads of many records of a stored `Dataset` at once (the pipeline's batch reads)."""

from __future__ import annotations

import numpy as np

from mmjax.data.store import Dataset


class ColumnGather:
    """Batched reads of a `Dataset`'s columns for many records at once (no per-record dicts).

    ``fixed(key, plan(idx))`` and ``ragged(key, plan(idx))`` read the records at dataset positions
    ``idx`` (int array) with one fancy index per chunk into the memory-mapped columns, in ``idx`` order.
    Equal to reading ``dataset.record(i, [key])`` for each i (what a per-record assembly is
    given), about 10-30x less host time per batch. Uses the store's chunk layout (chunk start
    offsets, lazily opened columns), which this pipeline and `mmjax.data.store` share.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._chunks, self._starts, self._index = dataset._chunks, dataset._starts, dataset._index

    def plan(self, idx) -> tuple[int, list]:
        """Where the records at dataset positions `idx` live: ``(n, [(selector of idx, local rows,
        chunk)])``, one entry per chunk touched; pass it to `fixed` / `ragged` (computed once per batch)."""
        idx = np.asarray(idx, np.int64)
        base = idx if self._index is None else self._index[idx]
        chunk = np.searchsorted(self._starts, base, side="right") - 1
        local = base - self._starts[chunk]
        if len(chunk) == 0 or (chunk == chunk[0]).all():
            return len(idx), [(slice(None), local, self._chunks[int(chunk[0]) if len(chunk) else 0])]
        return len(idx), [(chunk == c, local[chunk == c], self._chunks[int(c)]) for c in np.unique(chunk)]

    def fixed(self, key: str, plan: tuple[int, list]) -> tuple[np.ndarray, np.ndarray]:
        """(present bool [n], values [n, *shape], 0 where absent) of a fixed-shape column."""
        entry = self.dataset.manifest.schema[key]
        n, chunks = plan
        present = np.zeros(n, bool)
        values = np.zeros((n, *entry["shape"]), np.dtype(entry["dtype"]))
        for sel, local, chunk in chunks:
            col = chunk.column(key) if n else None
            if col is None:
                continue
            p = col[0][local]
            v = col[1][local]  # a copy (fancy index)
            if not p.all():
                v[~p] = 0
            if isinstance(sel, slice):  # one chunk holds every record
                return p, v
            present[sel], values[sel] = p, v
        return present, values

    def ragged(self, key: str, plan: tuple[int, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(present bool [n], lengths int64 [n], values concatenated in `idx` order) of a ragged column."""
        entry = self.dataset.manifest.schema[key]
        n, chunks = plan
        present, lengths = np.zeros(n, bool), np.zeros(n, np.int64)
        parts = []
        for sel, local, chunk in chunks:
            col = chunk.column(key) if n else None
            if col is None:
                continue
            values, offsets = col[1]
            p = col[0][local]
            start, stop = offsets[local], offsets[local + 1]
            ln = np.where(p, stop - start, 0)
            present[sel], lengths[sel] = p, ln
            parts.append((sel, values[_ranges(start, ln)]))
        out = np.zeros(int(lengths.sum()), np.dtype(entry["dtype"]))
        if len(parts) == 1 and isinstance(parts[0][0], slice):  # one chunk: already in idx order
            out[:] = parts[0][1]
        else:  # records of several chunks: scatter each chunk's values to their place in idx order
            dest_start = np.cumsum(lengths) - lengths
            for sel, vals in parts:
                out[_ranges(dest_start[sel], lengths[sel])] = vals
        return present, lengths, out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each (s, l), int64."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(np.asarray(starts, np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64)
