"""``text``: a description of the material. Featurisation stores the raw text (``text/raw``,
``text/source``: the source's own text, else a template / robocrystallographer description of the
structure); `mmjax.data.text_embed` later adds the frozen encoder's embedding ``text_embedding``
float32 [D], the record key the Batch carries (a dense modality: `mmjax.data.schema`)."""

from __future__ import annotations

import numpy as np

from mmjax.data.modalities.base import Modality, featurizer, run_featurizer


class Text(Modality):
    name = "text"
    presence_key = dense_key = "text_embedding"
    scale_keys = ("text_embedding",)
    record_dtypes = {"text_embedding": np.float32}

    def add_features(self, material, spec, rec: dict) -> None:
        if material.text:
            rec["text/raw"], rec["text/source"] = str(material.text), str(material.text_source or "source")
        elif material.structure is not None and spec.describe_missing_text:
            text, source = run_featurizer(material.id, "text description", featurizer("describe_structure"),
                                          material.structure, use_robocrys=spec.text_robocrys,
                                          record_id=material.id)
            rec["text/raw"], rec["text/source"] = str(text), str(source)


MODALITY = Text()
