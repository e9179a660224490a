"""``xrd``: the smeared powder pattern of the structure on the spec's 2θ grid, float32 [L] in
[0, 100] (a dense modality: `mmjax.data.schema`)."""

from __future__ import annotations

import numpy as np

from mmjax.data.modalities.base import Modality, featurizer, finite, run_featurizer


class Xrd(Modality):
    name = "xrd"
    presence_key = dense_key = "xrd"
    scale_keys = ("xrd",)
    record_dtypes = {"xrd": np.float32}

    from_structure = True

    def add_features(self, material, spec, rec: dict) -> None:
        if material.structure is None:
            return
        x = run_featurizer(material.id, "xrd", featurizer("xrd_pattern"), material.structure,
                           two_theta_range=spec.xrd_two_theta_range, step=spec.xrd_step, sigma=spec.xrd_sigma)
        rec["xrd"] = finite(material.id, x, "float32", "xrd pattern")


MODALITY = Xrd()
