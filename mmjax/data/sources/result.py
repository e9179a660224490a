"""What every reader returns: the materials it could read and one error per record it could not."""

from __future__ import annotations

import logging
from typing import NamedTuple

from mmjax.data.material import Material, RecordError

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """A whole source is unusable (missing, empty, wrong layout); names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"source {str(source)!r}: {reason}")
        self.source = str(source)
        self.reason = reason


class ReadResult(NamedTuple):
    """``(materials, errors)`` from one source.

    materials: the records that were read, in source order.
    errors: one ``RecordError`` per record that could not be read (its id or row, and why);
        a bad record never loses the others.
    """

    materials: list[Material]
    errors: list[RecordError]

    def raise_for_errors(self) -> "ReadResult":
        """Raise the first error (with a count of the others) if any record failed; else return self."""
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more bad records)" if len(self.errors) > 1 else ""
            raise RecordError(first.record_id, first.reason + more)
        return self

    def ids(self) -> list[str]:
        """Ids of the materials read, in order."""
        return [m.id for m in self.materials]


def unique_ids(materials: list[Material], duplicate_ids: str, source: str) -> list[Material]:
    """Resolve repeated ids.

    duplicate_ids: "keep" (leave them), "first" (drop later repeats), "suffix" (rename the k-th
        repeat ``"<id>#k"`` with k = 2, 3, ... and keep the original in ``meta["source_id"]``),
        or "error" (raise ``SourceError`` naming the id).
    """
    if duplicate_ids == "keep":
        return materials
    if duplicate_ids not in ("first", "suffix", "error"):
        raise ValueError(f"duplicate_ids must be keep/first/suffix/error, got {duplicate_ids!r}")
    seen: dict[str, int] = {}
    out = []
    for m in materials:
        count = seen.get(m.id, 0) + 1
        seen[m.id] = count
        if count == 1:
            out.append(m)
        elif duplicate_ids == "error":
            raise SourceError(source, f"id {m.id!r} occurs more than once")
        elif duplicate_ids == "suffix":
            m.meta["source_id"] = m.id
            m.id = f"{m.id}#{count}"
            out.append(m)
    repeated = sorted(i for i, n in seen.items() if n > 1)
    if repeated:
        what = "renamed '<id>#2', '<id>#3', ..." if duplicate_ids == "suffix" else "dropped (the first kept)"
        log.warning("%s: %d id(s) occur more than once (e.g. %r); the repeats are %s", source, len(repeated),
                    repeated[0], what)
    return out
