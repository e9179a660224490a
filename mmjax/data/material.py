"""The one record type every source produces."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class DOS:
    """Electronic density of states of one material.

    energies: float [L] eV, strictly increasing (absolute, or already Fermi-shifted when
        ``efermi`` is None / 0 and ``shifted`` is True).
    densities: float [L] states/eV (per cell), may contain NaN (repaired by the featuriser).
    efermi: Fermi energy in eV, or None when ``energies`` are already E - E_F.
    """

    energies: np.ndarray
    densities: np.ndarray
    efermi: float | None = None


@dataclasses.dataclass
class Material:
    """One material from any source.

    id: unique string id within a dataset (e.g. "mp-149", a Matbench "mb-perovskites-00001").
    structure: pymatgen ``Structure`` or None when only the composition is known.
    composition: pymatgen ``Composition``; derived from ``structure`` when not given.
    targets: property name -> float, or a 1-D float array for a vector target (e.g. the 21
        independent components of an elastic tensor); NaN, None or absent = unlabelled (a NaN
        component of a vector = that component unlabelled).
    dos: optional ``DOS``.
    charge_density: optional float [nx, ny, nz] voxel grid (any shape; resampled to 32^3).
    text: optional description; ``text_source`` says where it came from
        ("robocrys", "template", "source").
    meta: free-form provenance (source file, row, split name ...), JSON-serialisable.
    """

    id: str
    structure: Any | None = None
    composition: Any | None = None
    targets: dict[str, float] = dataclasses.field(default_factory=dict)
    dos: DOS | None = None
    charge_density: np.ndarray | None = None
    text: str | None = None
    text_source: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.id = str(self.id)
        if self.composition is None and self.structure is not None:
            self.composition = self.structure.composition
        if self.structure is None and self.composition is None:
            raise ValueError(f"material {self.id!r}: needs a structure or a composition")


class RecordError(ValueError):
    """A single record could not be read or featurised; names the record and the reason.

    Readers and featurisers raise (or collect) this so that one bad record never loses the rest.
    """

    def __init__(self, record_id: str, reason: str):
        super().__init__(f"record {record_id!r}: {reason}")
        self.record_id = str(record_id)
        self.reason = reason
