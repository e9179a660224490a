"""Unimodal baselines (XxaCT-NN Table 1, X-MoPA/Matbench references): one encoder + prediction heads.

* ``cgcnn``: crystal graph -> `mmjax.nn.CGCNN` (92-d element table, 3 conv layers, 64-d atoms,
  mean pool, softplus Dense 128) -> linear head per target (Xie & Grossman 2018).
* ``crabnet``: composition -> `mmjax.nn.CrabNet` (512-d, 3 layers, 4 heads, FFN 2048, masked mean
  over elements) -> residual-free MLP head [1024, 512, 256, 128] per target (CrabNet's Roost-style
  head widths; its aleatoric uncertainty output and RobustL1 loss are not reproduced: MSE here).
* ``xrd_transformer``: XRD -> `mmjax.nn.XrdTransformer` (the XxaCT-NN XRD encoder: 17 tokens x 250,
  512-d, 3 layers, 4 heads, FFN 1024, [CLS] output) -> linear head per target.

Loss: `mmjax.systems.common.supervised_loss` (MSE on regression targets as batched, i.e.
normalised; cross-entropy on 0-based class indices; mean over targets with labels in the batch).
Targets: ``config.data.targets`` (class counts from `mmjax.systems.xxact.KNOWN_CLASSES`).
Parameter groups: ``encoder_<modality>`` and ``head`` (probe mode freezes the encoder).
``embed`` returns ``{modality: encoder output [N, d]}``.
"""

from __future__ import annotations

from typing import Callable

import ml_collections
import numpy as np

from mmjax.nn import CGCNN, CrabNet, XrdTransformer
from mmjax.systems.common import MultimodalSystem, compute_dtype
from mmjax.systems.xxact import task_outputs

BASELINES: dict[str, tuple[str, Callable]] = {}


class UnimodalBaseline(MultimodalSystem):
    """One encoder, supervised heads on its output (always the ``finetune`` stage of
    `MultimodalSystem`)."""

    def __init__(self, name: str, modality: str, encoder, outputs: dict[str, int], head_hidden=()):
        if not outputs:
            raise ValueError(f"baseline {name!r} needs targets: set config.data.targets")
        super().__init__({modality: encoder}, stage="finetune", targets=outputs, head_inputs=(modality,),
                         head_hidden=tuple(head_hidden))
        self.name = name
        self.modality = modality

    def pretrain_loss(self, params, latents, masks, rng, train):
        raise NotImplementedError(f"baseline {self.name!r} has no pretraining objective (supervised only)")


def _encoder_kwargs(config: ml_collections.ConfigDict) -> dict:
    enc = config.system.get("encoder", None)
    return enc.to_dict() if isinstance(enc, ml_collections.ConfigDict) else dict(enc or {})


def _outputs(config) -> dict[str, int]:
    from mmjax.train.data import config_targets

    return task_outputs(config_targets(config))


def _head_hidden(config) -> tuple[int, ...]:
    return tuple(int(h) for h in (config.system.get("head_hidden", ()) or ()))


def make_cgcnn(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `CGCNN` kwargs plus ``element_table`` ("cgcnn92" for
    the 92-d CGCNN element features, "" for a learned embedding); ``head_hidden``."""
    kw = _encoder_kwargs(config)
    table = kw.pop("element_table", "")
    if table:
        from mmjax.features import element_features

        kw["element_features"] = np.asarray(element_features(table), np.float32)
    enc = CGCNN(**kw, dtype=compute_dtype(config))
    return UnimodalBaseline("cgcnn", "crystal", enc, _outputs(config), _head_hidden(config))


def make_crabnet(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `CrabNet` kwargs; ``head_hidden``."""
    enc = CrabNet(**_encoder_kwargs(config), dtype=compute_dtype(config))
    return UnimodalBaseline("crabnet", "composition", enc, _outputs(config), _head_hidden(config))


def make_xrd_transformer(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `XrdTransformer` kwargs; ``head_hidden``."""
    enc = XrdTransformer(**_encoder_kwargs(config), dtype=compute_dtype(config))
    return UnimodalBaseline("xrd_transformer", "xrd", enc, _outputs(config), _head_hidden(config))


BASELINES.update(cgcnn=("crystal", make_cgcnn), crabnet=("composition", make_crabnet),
                 xrd_transformer=("xrd", make_xrd_transformer))
