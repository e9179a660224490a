"""MatBind: hub-and-spoke InfoNCE binding crystal, pXRD, DOS and text (SPEC table; O1, O2).

Encoders + projection heads (``HFMI-SOL-AI/MatBind``; implementations.md §2.1):
  crystal  MatBindGCN: one-hot(Z, 96) -> Dense(128) -> 6 x (CGConv over 41 Gaussians, 8 A x 12
           neighbours) -> ReLU -> LayerNorm -> mean pool [N, 128]; projection [128 -> 128]
  xrd      1-D ResNet (spec 777, GroupNorm 32) -> [N, 512]; projection [512 -> 128]
  dos      transformer, bias-free value embeddings merged 2 -> 1, sinusoidal positions, 2 post-LN
           layers, 8 heads, FFN 2048, ReLU -> [N, 512]; projection [512 -> 128]
  text     frozen MatBERT attention-mask mean-pooled embedding [N, 768] (precomputed; no
           trainable encoder); projection [768 -> 512 (GELU) -> 128]
Projection heads: LayerNorm(in) -> [Dense -> LayerNorm -> act]* -> Dense(128, no bias).

Objective: with hub h (``central_modality``, crystal by default; MatBind's paper config uses
text) and spokes s != h present in the batch::

    L = reduce_s info_nce(z_h, z_s, tau, mask_h & mask_s)

``spoke_reduction="mean"`` (MatBind code) averages over the spokes that have a valid row;
``"sum"`` adds them. tau = 0.07 fixed (``learnable_temperature`` gives MatBind's learnable
logit scale, clipped at 100). MatBind builds a separate sub-batch per pair; here one batch
carries every modality and the per-pair masks select the rows (same loss per pair when the
pair's rows are the same). Metrics ``nce/<hub>_<spoke>`` per pair.

Downstream: heads on the crystal encoder output (linear probe, ``head_hidden=()``).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from mmjax.nn import ProjectionHead
from mmjax.objectives import info_nce
from mmjax.systems import common

ALL_MODALITIES = ("crystal", "xrd", "dos", "text")
REDUCTIONS = ("mean", "sum")

# MatBind main config: projection hidden widths and activation per modality.
PROJECTIONS = {
    "crystal": ((), "leaky_relu"),
    "xrd": ((), "leaky_relu"),
    "dos": ((), "leaky_relu"),
    "text": ((512,), "gelu"),
}


class MatBind(common.MultimodalSystem):
    """MatBind system (see module docstring). Extra group ``temperature`` when learnable."""

    name = "matbind"

    def __init__(self, encoders, projections, *, central_modality="crystal", spoke_reduction="mean",
                 temperature=0.07, learnable_temperature=False, **kwargs):
        super().__init__(encoders, projections, **kwargs)
        if central_modality not in self.modalities:
            raise ValueError(f"central_modality {central_modality!r} is not among the modalities {self.modalities}")
        if spoke_reduction not in REDUCTIONS:
            raise ValueError(f"spoke_reduction={spoke_reduction!r}; expected one of {REDUCTIONS}")
        if len(self.modalities) < 2:
            raise ValueError(f"MatBind needs at least two modalities, got {self.modalities}")
        self.hub = central_modality
        self.spoke_reduction = spoke_reduction
        self.temperature, self.learnable_temperature = float(temperature), bool(learnable_temperature)

    def init_extra(self, rng, latents):
        return {"temperature": common.init_temperature(self.temperature)} if self.learnable_temperature else {}

    def spokes(self, latents) -> tuple[str, ...]:
        """The non-hub modalities present in ``latents`` (configuration order)."""
        return tuple(m for m in self.modalities if m != self.hub and m in latents)

    def pretrain_loss(self, params, latents, masks, rng, train):
        if self.hub not in latents:
            raise ValueError(f"the central modality {self.hub!r} is not in the batch (has {sorted(latents)})")
        spokes = self.spokes(latents)
        if not spokes:
            raise ValueError(f"no spoke modality in the batch besides the hub {self.hub!r}")
        tau = common.temperature_value(params.get("temperature"), self.temperature)
        metrics, total, n_valid = {}, 0.0, 0
        for s in spokes:
            mask = masks[self.hub] & masks[s]
            term = info_nce(latents[self.hub], latents[s], tau, mask)
            metrics[f"nce/{self.hub}_{s}"] = term
            total = total + term
            n_valid = n_valid + jnp.any(mask).astype(jnp.int32)
        if self.spoke_reduction == "mean":
            loss = jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1), 0.0)
        else:
            loss = jnp.asarray(total)
        metrics["temperature"] = tau
        return loss, metrics


def make_system(config: ml_collections.ConfigDict) -> MatBind:
    """Factory for ``config.system.name == "matbind"`` (keys: see ``configs/matbind.py``)."""
    s = config.system
    small = bool(s.get("small", False))
    dtype = common.compute_dtype(config)
    latent = int(s.latent_dim)
    encoders, projections = {}, {}
    for m in s.modalities:
        if m == "crystal":
            encoders[m] = common.configured_encoder(s, m, "matbind_crystal", small, dtype)
        elif m == "xrd":
            encoders[m] = common.configured_encoder(s, m, "matbind_xrd", small, dtype)
        elif m == "dos":
            kw = dict(d_model=16, num_layers=1, num_heads=2, qkv_features=None, mlp_dim=32) if small else {}
            encoders[m] = common.configured_encoder(s, m, "matbind_dos", False, dtype,
                                                    dropout_rate=float(s.dos_dropout), **kw)
        elif m == "text":
            encoders[m] = None  # frozen precomputed MatBERT embedding
        else:
            raise ValueError(f"MatBind has no encoder for modality {m!r}; known: {ALL_MODALITIES}")
        hidden, act = PROJECTIONS[m]
        if small:
            hidden = tuple(16 for _ in hidden)
        projections[m] = ProjectionHead(latent, hidden, act, dtype=dtype)
    return MatBind(
        encoders, projections, central_modality=s.central_modality, spoke_reduction=s.spoke_reduction,
        temperature=s.temperature, learnable_temperature=s.learnable_temperature, stage=s.stage,
        targets=common.config_dict(s.get("targets")), head_inputs=("crystal",), head_source="encoder",
        head_hidden=tuple(s.head_hidden),
    )

