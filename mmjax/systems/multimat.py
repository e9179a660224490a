"""MultiMat: crystal / DOS / charge density / text aligned in one 128-d space (SPEC table; O1-O4).

Encoders (MultiMat code, ``vmoro1/multimat``; see implementations.md §1.1), each ending at
``latent_dim`` = 128 (no separate projector, the code's default):
  crystal         PotNet-style GNN on PotNet graphs (``mmjax.nn.PotNet``, 3 conv, 256 hidden,
                  CGCNN 92-d element features) -> [N, 128]
  dos             transformer with an energy-value embedding, no positions (``DosTransformer``)
  charge_density  3-D ResNeXt-50 (32x4d-style, ``ResNeXt3D``) on [32, 32, 32] grids
  text            frozen MatBERT embedding [N, 768] -> TextMLP (768-512-512-128, ReLU)

Objectives (``config.system.objective``), every one masked per row by ``slot_valid & present``:
  "clip"         info_nce(z_a, z_b) for ``clip_pair`` = (a, b)
  "all_pairs"    all_pairs_clip over the modalities in the batch
  "anchored"     anchored_clip with ``anchor`` (crystal by default; mean over pairs)
  "tensor_clip"  tensor_clip(z_1, z_2, z_3) over ``triple`` (default crystal, dos, charge_density),
                 ``tensor_clip_variant`` "paper" | "multimat_code", ``chunk_size`` (None = B^3)
  "barlow_3d"    barlow_twins_3d over ``triple`` (``barlow_lambda`` 0.0051, ``barlow_half``)
  "barlow"       2-D barlow_twins over ``clip_pair``
The temperature is fixed at 0.2 (code default) or learnable (``learnable_temperature``).

A configured modality that a Batch does not carry (e.g. DOS on the embedded default dataset) is
missing on every row: "all_pairs"/"anchored" use the remaining modalities; the objectives that
name modalities explicitly ("clip", "tensor_clip", "barlow_3d", "barlow") raise a clear error.

Downstream: ``stage="finetune"`` trains a linear head (``head_hidden=()``) on the crystal
encoder output together with the crystal encoder (fine-tuning, as the paper).
"""

from __future__ import annotations

import ml_collections

from mmjax.data.features.elements import element_features
from mmjax.objectives import (all_pairs_clip, anchored_clip, barlow_twins, barlow_twins_3d, info_nce,
                              tensor_clip)
from mmjax.systems import common

OBJECTIVES = ("clip", "all_pairs", "anchored", "tensor_clip", "barlow_3d", "barlow")
ALL_MODALITIES = ("crystal", "dos", "charge_density", "text")


class MultiMat(common.MultimodalSystem):
    """MultiMat system (see module docstring). Extra group ``temperature`` when learnable."""

    name = "multimat"

    def __init__(self, encoders, *, objective="anchored", anchor="crystal", clip_pair=("crystal", "dos"),
                 triple=("crystal", "dos", "charge_density"), temperature=0.2, learnable_temperature=False,
                 tensor_clip_variant="paper", chunk_size=None, barlow_lambda=0.0051, barlow_half=True, **kwargs):
        super().__init__(encoders, None, **kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(f"config.system.objective={objective!r}; expected one of {OBJECTIVES}")
        self.objective = objective
        self.anchor = anchor
        self.clip_pair = tuple(clip_pair)
        self.triple = tuple(triple)
        named = {"clip": self.clip_pair, "barlow": self.clip_pair, "tensor_clip": self.triple,
                 "barlow_3d": self.triple, "anchored": (anchor,)}.get(objective, ())
        unknown = [m for m in named if m not in self.modalities]
        if unknown:
            raise ValueError(f"objective {objective!r} uses modalities {unknown} that are not among "
                             f"config.system.modalities={self.modalities}")
        if objective in ("clip", "barlow") and len(set(self.clip_pair)) != 2:
            raise ValueError(f"clip_pair must name two different modalities, got {self.clip_pair}")
        if objective in ("tensor_clip", "barlow_3d") and len(set(self.triple)) != 3:
            raise ValueError(f"triple must name three different modalities, got {self.triple}")
        self.temperature, self.learnable_temperature = float(temperature), bool(learnable_temperature)
        self.tensor_clip_variant = tensor_clip_variant
        self.chunk_size = None if not chunk_size else int(chunk_size)
        self.barlow_lambda, self.barlow_half = float(barlow_lambda), bool(barlow_half)

    def init_extra(self, rng, latents):
        return {"temperature": common.init_temperature(self.temperature)} if self.learnable_temperature else {}

    def _need(self, latents, names):
        missing = [m for m in names if m not in latents]
        if missing:
            raise ValueError(f"MultiMat objective {self.objective!r} needs {list(names)} in the batch; missing "
                             f"{missing} (the dataset lacks them: use 'all_pairs' or 'anchored', or other data)")
        return [latents[m] for m in names]

    def pretrain_loss(self, params, latents, masks, rng, train):
        tau = common.temperature_value(params.get("temperature"), self.temperature)
        obj = self.objective
        if obj == "clip":
            a, b = self._need(latents, self.clip_pair)
            loss = info_nce(a, b, tau, masks[self.clip_pair[0]] & masks[self.clip_pair[1]])
        elif obj == "all_pairs":
            if len(latents) < 2:
                raise ValueError(f"all_pairs needs >= 2 modalities in the batch, got {sorted(latents)}")
            loss = all_pairs_clip(latents, masks, tau)
        elif obj == "anchored":
            self._need(latents, (self.anchor,))
            if len(latents) < 2:
                raise ValueError(f"anchored needs >= 2 modalities in the batch, got {sorted(latents)}")
            loss = anchored_clip(latents, masks, tau, anchor=self.anchor)
        elif obj == "barlow":
            a, b = self._need(latents, self.clip_pair)
            loss = barlow_twins(a, b, self.barlow_lambda, mask=masks[self.clip_pair[0]] & masks[self.clip_pair[1]])
        else:
            zs = self._need(latents, self.triple)
            all3 = masks[self.triple[0]] & masks[self.triple[1]] & masks[self.triple[2]]
            if obj == "tensor_clip":
                loss = tensor_clip(*zs, tau, present=all3, chunk_size=self.chunk_size,
                                   variant=self.tensor_clip_variant)
            else:
                loss = barlow_twins_3d(*zs, lambd=self.barlow_lambda, half_targets=self.barlow_half, mask=all3)
        return loss, {obj: loss, "temperature": tau}


def _encoder(modality: str, small: bool, dtype, latent: int, table, overrides):
    """MultiMat's encoder of ``modality`` (``overrides``: the system config, whose
    ``encoder_overrides.<modality>`` may name another encoder, `common.configured_encoder`)."""
    kw = {"crystal": dict(out_dim=latent, element_features=table), "dos": dict(d_model=latent),
          "charge_density": dict(embed_dim=latent), "text": dict(out_dim=latent)}
    if modality not in kw:
        raise ValueError(f"MultiMat has no encoder for modality {modality!r}; known: {ALL_MODALITIES}")
    return common.configured_encoder(overrides, modality, f"multimat_{modality}", small, dtype, **kw[modality])


def make_system(config: ml_collections.ConfigDict) -> MultiMat:
    """Factory for ``config.system.name == "multimat"`` (keys: see ``configs/multimat.py``)."""
    s = config.system
    small = bool(s.get("small", False))
    dtype = common.compute_dtype(config)
    table = None
    if s.get("element_features", "cgcnn92") == "cgcnn92":
        table = element_features("cgcnn92")
    encoders = {m: _encoder(m, small, dtype, int(s.latent_dim), table, s) for m in s.modalities}
    return MultiMat(
        encoders, objective=s.objective, anchor=s.anchor, clip_pair=tuple(s.clip_pair), triple=tuple(s.triple),
        temperature=s.temperature, learnable_temperature=s.learnable_temperature,
        tensor_clip_variant=s.tensor_clip_variant, chunk_size=s.chunk_size, barlow_lambda=s.barlow_lambda,
        barlow_half=s.barlow_half, stage=s.stage, targets=common.config_dict(s.get("targets")),
        head_inputs=("crystal",), head_source="encoder", head_hidden=tuple(s.head_hidden),
    )

