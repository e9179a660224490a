"""``composition``: a material's distinct elements and their fractions (CrabNet's EDM), batched in
``max_elements`` slots per material (record keys and Batch layout: `mmjax.data.schema`)."""

from __future__ import annotations

import numpy as np

from mmjax.data import schema as S
from mmjax.data.material import RecordError
from mmjax.data.modalities.base import Modality, Slots, featurizer, run_featurizer, size_summary


class Composition(Modality):
    name = "composition"
    presence_key = "composition/atomic_numbers"
    ragged = True
    encoder_inputs = ("atomic_numbers", "fractions", "mask")
    record_dtypes = {"composition/atomic_numbers": np.int32, "composition/fractions": np.float32}

    def add_features(self, material, spec, rec: dict) -> None:
        comp, rid = material.composition, material.id
        if comp is None:
            return
        if len(comp.elements) > spec.max_elements:
            raise RecordError(rid, f"{len(comp.elements)} elements, more than max_elements={spec.max_elements}")
        c = run_featurizer(rid, "composition", featurizer("composition_features"), comp, max_elements=None)
        mask = np.asarray(c.get("mask", np.ones(len(c["atomic_numbers"]), bool)), bool)
        rec["composition/atomic_numbers"] = np.asarray(c["atomic_numbers"], np.int32)[mask]
        rec["composition/fractions"] = np.asarray(c["fractions"], np.float32)[mask]

    def padding(self, dataset, ids) -> dict:
        m = dataset.ragged_lengths("composition/atomic_numbers")
        return {"composition/elements": size_summary(m[m > 0], ids[m > 0])}

    def setup(self, assembler, manifest) -> None:
        if assembler.max_elements is None:
            # element slots: the dataset's largest composition (not the featuriser's limit,
            # max_elements = 8 by default: 6 slots instead of 8 is ~25 % less CrabNet / XxaCT-NN
            # composition compute on typical data; empty slots never change a result)
            spec = manifest.provenance.get("spec") or {}
            assembler.max_elements = (manifest.padding.get("composition/elements", {}).get("max")
                                      or spec.get("max_elements") or S.MAX_ELEMENTS)

    def columns(self, assembler) -> list[str]:
        return ["composition/atomic_numbers", "composition/fractions"]

    def row_nbytes(self, assembler) -> int:
        return 9 * assembler.max_elements  # int32 element, float32 fraction, bool mask per slot

    def assemble(self, assembler, slots: Slots) -> dict:
        D, B, dev, slot = slots.n_dev, slots.n_slots, slots.dev, slots.slot
        _, ln, z = slots.ragged("composition/atomic_numbers")
        frac = slots.ragged("composition/fractions")[2]
        M = assembler.max_elements
        if len(ln) and ln.max() > M:
            raise ValueError(f"a composition has {ln.max()} elements, more than max_elements={M}")
        cz = np.zeros((D, B, M), np.int32)
        cf = np.zeros((D, B, M), np.float32)
        cm = np.zeros((D, B, M), bool)
        rows_d, rows_s = np.repeat(dev, ln), np.repeat(slot, ln)
        cols = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln)
        cz[rows_d, rows_s, cols] = z
        cf[rows_d, rows_s, cols] = frac
        cm[rows_d, rows_s, cols] = True
        return {"atomic_numbers": cz, "fractions": cf, "mask": cm}


MODALITY = Composition()
