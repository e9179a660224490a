"""``charge_density``: the material's voxel grid (any shape in the source) resampled to the spec's
``charge_density_size``³, float32 (a dense modality: `mmjax.data.schema`)."""

from __future__ import annotations

import numpy as np

from mmjax.data.modalities.base import Modality, featurizer, finite, run_featurizer


class ChargeDensity(Modality):
    name = "charge_density"
    presence_key = dense_key = "charge_density"
    scale_keys = ("charge_density",)
    record_dtypes = {"charge_density": np.float32}

    def add_features(self, material, spec, rec: dict) -> None:
        if material.charge_density is None:
            return
        v = run_featurizer(material.id, "charge density", featurizer("charge_density_features"),
                           material.charge_density, size=spec.charge_density_size)
        rec["charge_density"] = finite(material.id, v, "float32", "charge density")


MODALITY = ChargeDensity()
