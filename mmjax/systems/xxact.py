"""XxaCT-NN (SPEC table; ``shared/seeds/xxact-nn.txt``): composition + XRD, cross-attention fusion.

Model (``config.system``; paper sizes in ``configs/xxact.py``)::

    composition [N, M] --CrabNet (+[CLS], out 768)--> c_cls [N, 768], c_tokens [N, M+1, 768]
    xrd [N, 4250] -> 17 tokens x 250 --XRD transformer (+[CLS], out 768)--> x_cls, x_tokens [N, 17, 768]
    fusion: 12-layer decoder, queries = [x_cls, x_tokens], keys/values = c_tokens (768-d, 12 heads,
            FFN 2048) --> f_cls [N, 768], f_tokens [N, 17, 768]
    heads:  one linear head per target on f_cls (regression: [N]; classification: logits [N, C])
    MXM:    ReLU(Linear(f_tokens)) -> [N, 17, 250] reconstruction of the masked XRD tokens

Objective (``config.objective.terms``, weights; a zero weight skips the term's computation):

* ``mxm``: 5 % of the XRD tokens (``mask_ratio``; at least one per pattern) replaced by [MASK];
  `masked_xrd_loss` between the reconstruction and the true tokens in encoder units
  (intensity / 100). Rows need both modalities.
* ``clip``: `info_nce` between c_cls and x_cls with a learnable temperature (init 0.07,
  ``temperature_init``), rows with both modalities. x_cls is that of the MXM pass (5 % of the
  tokens masked) when MXM is on too — one forward for the combined objective — else of the
  unmasked pattern. Under `jax.jit`
  with the batch sharded over ``"data"`` the negatives are the global batch.
* ``supervised``: per-example uniform task sampling (``task_sampling="uniform"``, the paper's
  multi-target strategy): each example is scored only on one randomly drawn target, MSE for
  regression (targets as batched, i.e. normalised) and cross-entropy for classification
  (0-based class indices); ``"all"`` scores every labelled (example, target) pair.

Targets: ``config.data.targets``; ``crystal_system`` (7 classes) and ``space_group`` (230) are
classification (`KNOWN_CLASSES`), every other name is a regression target.

Parameter groups (`param_labels`, for ``config.optim.groups`` and probe mode):
``encoder_composition``, ``encoder_xrd``, ``fusion``, ``head``, ``mxm_head``, ``temperature``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.data import modalities
from mmjax.data.spec import config_target_dims, config_targets, xrd_tokens
from mmjax.nn import CrabNet, CrossAttentionFusion, MultiTaskHead, MXMHead, XrdTransformer
from mmjax.objectives import info_nce, masked_xrd_loss, multitask_loss, sample_task, sample_token_mask
from mmjax.objectives.temperature import LearnableTemperature
from mmjax.systems.base import System
from mmjax.systems.common import compute_dtype, flatten_tree
from mmjax.systems.masks import modality_mask
from mmjax.systems.supervised import head_outputs, supervised_loss

PyTree = Any

KNOWN_CLASSES = {"crystal_system": 7, "space_group": 230}
TERMS = ("supervised", "mxm", "clip")
LABELS = {"composition": "encoder_composition", "xrd": "encoder_xrd", "fusion": "fusion", "heads": "head",
          "mxm_head": "mxm_head", "temperature": "temperature"}


def task_outputs(names: Sequence[str], num_classes: Mapping[str, int] | None = None,
                 dims: Mapping[str, int] | None = None) -> dict[str, int | tuple[int]]:
    """``{target: outputs}``: the class count for classification targets (`KNOWN_CLASSES`, or
    `num_classes`), ``(d,)`` for a vector regression target of `dims` (``config.data.target_dims``),
    1 for other (scalar regression) targets."""
    table = {**KNOWN_CLASSES, **dict(num_classes or {})}
    dims = dict(dims or {})
    clash = sorted(set(dims) & set(table) & set(names))
    if clash:
        raise ValueError(f"targets {clash} are classification targets; config.data.target_dims declares them as vectors")
    return {str(n): ((int(dims[n]),) if n in dims else int(table.get(n, 1))) for n in names}


def term_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
    """``config.objective.terms`` as ``{term: weight}``; names outside `TERMS` are rejected."""
    terms = {k: float(v) for k, v in config.objective.terms.items()}
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"config.objective.terms has unknown terms {unknown}; XxaCT-NN knows {list(TERMS)}")
    if not any(w > 0 for w in terms.values()):
        raise ValueError(f"config.objective.terms={terms}: give at least one term a positive weight")
    return terms


class XxactNet(nn.Module):
    """Encoders, fusion, heads, MXM head and temperature of XxaCT-NN (see module docstring).

    Methods (each usable with ``apply(..., method=...)``):
      ``encode_composition(z [N, M], frac [N, M], mask [N, M])`` -> (c_cls [N, d], c_tokens
        [N, M + 1, d], c_mask [N, M + 1]);
      ``encode_xrd(xrd [N, T * P], token_mask bool [N, T])`` -> (x_cls [N, d], x_tokens [N, T, d]);
      ``fuse(x_cls, x_tokens, c_tokens, c_mask)`` -> (f_cls [N, d], f_tokens [N, T, d]);
      ``predict_heads(f_cls)`` -> {target: [N, n_out]}; ``reconstruct(f_tokens)`` -> [N, T, P];
      ``temperature_value()`` -> tau [].
    ``__call__`` runs all of them (used for init) and returns a dict of the outputs.
    """

    composition: nn.Module
    xrd: nn.Module
    fusion: nn.Module
    tasks: tuple
    patch_size: int
    temperature_init: float = 0.07
    learnable_temperature: bool = True

    def setup(self):
        self.heads = MultiTaskHead(self.tasks) if self.tasks else None
        self.mxm_head = MXMHead(self.patch_size)
        self.temperature = LearnableTemperature(self.temperature_init, self.learnable_temperature)

    def encode_composition(self, z, frac, mask, deterministic: bool = True):
        return self.composition(z, frac, mask, deterministic=deterministic, return_tokens=True)

    def encode_xrd(self, xrd, token_mask, deterministic: bool = True):
        return self.xrd(xrd, token_mask, deterministic=deterministic, return_tokens=True)

    def fuse(self, x_cls, x_tokens, c_tokens, c_mask, deterministic: bool = True):
        queries = jnp.concatenate([x_cls[:, None], x_tokens], axis=1)  # XRD [CLS] first
        return self.fusion(queries, c_tokens, c_mask, None, deterministic)

    def predict_heads(self, f_cls):
        return self.heads(f_cls)

    def reconstruct(self, f_tokens):
        return self.mxm_head(f_tokens)

    def temperature_value(self):
        return self.temperature()

    def __call__(self, z, frac, comp_mask, xrd, token_mask, deterministic: bool = True):
        c_cls, c_tokens, c_mask = self.encode_composition(z, frac, comp_mask, deterministic)
        x_cls, x_tokens = self.encode_xrd(xrd, token_mask, deterministic)
        f_cls, f_tokens = self.fuse(x_cls, x_tokens, c_tokens, c_mask, deterministic)
        out = {"c_cls": c_cls, "x_cls": x_cls, "f_cls": f_cls, "mxm": self.reconstruct(f_tokens),
               "tau": self.temperature_value()}
        if self.heads is not None:
            out["predictions"] = self.predict_heads(f_cls)
        return out


class XxactSystem(System):
    """XxaCT-NN as a `mmjax.systems.base.System` (composition + xrd)."""

    name = "xxact"
    modalities = ("composition", "xrd")

    def __init__(self, net: XxactNet, outputs: Mapping[str, int], terms: Mapping[str, float], *,
                 mask_ratio: float = 0.05, task_sampling: str = "uniform"):
        if task_sampling not in ("uniform", "all"):
            raise ValueError(f"config.system.task_sampling={task_sampling!r}; expected 'uniform' or 'all'")
        self.net, self.outputs, self.terms = net, dict(outputs), dict(terms)
        vectors = sorted(k for k, v in self.outputs.items() if isinstance(v, (tuple, list)))
        if vectors:
            raise ValueError(f"XxaCT-NN's sampled multi-task loss scores one scalar per example and task; {vectors} "
                             "are vector targets (config.data.target_dims): train them with a baseline (cgcnn, "
                             "crabnet, xrd_transformer) or a multimodal system")
        self.mask_ratio, self.task_sampling = float(mask_ratio), task_sampling
        self.num_tokens = int(net.xrd.num_tokens)
        if self.terms.get("supervised", 0) > 0 and not self.outputs:
            raise ValueError("the supervised term needs targets: set config.data.targets")

    # ---------------------------------------------------------------- forward pieces
    def _inputs(self, batch) -> tuple:
        for m in self.modalities:
            if m not in batch:
                raise KeyError(f"XxaCT-NN needs modality {m!r} in the batch (it has "
                               f"{sorted(k for k in batch if k in modalities.known())}): add it to "
                               "config.data.modalities")
        comp = flatten_tree(batch["composition"])
        xrd = flatten_tree(batch["xrd"])
        return comp["atomic_numbers"], comp["fractions"], comp["mask"], xrd

    def _call(self, params, method, *args, train: bool = False, rng=None):
        rngs = {"dropout": rng} if (train and rng is not None) else {}
        kwargs = {"deterministic": not train} if method in ("encode_composition", "encode_xrd", "fuse") else {}
        return self.net.apply({"params": params}, *args, rngs=rngs, method=getattr(XxactNet, method), **kwargs)

    def _no_mask(self, xrd):
        """All-False token mask (init only: creates the [MASK] parameter). Unmasked forward
        passes give ``token_mask=None`` instead: a constant all-False mask made XLA
        constant-fold the [MASK] embedding's (zero) gradient, which took minutes to compile
        at paper size."""
        return jnp.zeros((xrd.shape[0], self.num_tokens), bool)

    def _fused_cls(self, params, batch):
        z, frac, cmask, xrd = self._inputs(batch)
        _, c_tokens, c_mask = self._call(params, "encode_composition", z, frac, cmask)
        x_cls, x_tokens = self._call(params, "encode_xrd", xrd, None)
        return self._call(params, "fuse", x_cls, x_tokens, c_tokens, c_mask)[0]

    # ---------------------------------------------------------------- System interface
    def init(self, rng, batch):
        z, frac, cmask, xrd = self._inputs(batch)
        return self.net.init({"params": rng, "dropout": rng}, z, frac, cmask, xrd, self._no_mask(xrd), True)["params"]

    def loss(self, params, batch, rng, train):
        """Weighted sum of the configured terms. One composition pass; the XRD encoder runs on the
        masked pattern when MXM is on (CLIP then uses that pass's [CLS], as one forward of the
        combined objective) and on the clean pattern for the supervised term (and CLIP alone)."""
        r_mask, r_comp, r_xm, r_xc, r_fm, r_fc, r_task = jax.random.split(rng, 7)
        both = modality_mask(batch, "composition") & modality_mask(batch, "xrd")
        w_sup, w_mxm, w_clip = (self.terms.get(t, 0.0) for t in TERMS)
        z, frac, cmask, xrd = self._inputs(batch)
        call = lambda method, *a, rng=None: self._call(params, method, *a, train=train, rng=rng)  # noqa: E731
        c_cls, c_tokens, c_mask = call("encode_composition", z, frac, cmask, rng=r_comp)
        total, metrics = jnp.zeros((), jnp.float32), {}
        masked = clean = None
        if w_mxm > 0:
            token_mask = sample_token_mask(r_mask, xrd.shape[0], self.num_tokens, self.mask_ratio)
            masked = call("encode_xrd", xrd, token_mask, rng=r_xm)
        if w_sup > 0 or (w_clip > 0 and masked is None):
            clean = call("encode_xrd", xrd, None, rng=r_xc)
        if w_sup > 0:
            f_cls, _ = call("fuse", *clean, c_tokens, c_mask, rng=r_fc)
            preds = head_outputs(call("predict_heads", f_cls), self.outputs)
            names = tuple(self.outputs)
            sup_batch = dict(batch, slot_valid=batch["slot_valid"] & jnp.reshape(both, batch["slot_valid"].shape))
            _, per_target = supervised_loss(preds, sup_batch, self.outputs)
            labels = {n: flatten_tree(batch["targets"][n]) for n in names}
            label_mask = {n: flatten_tree(batch["target_mask"][n]) & both for n in names}
            kinds = {n: ("mse" if self.outputs[n] == 1 else "ce") for n in names}
            task_index = sample_task(r_task, names, both.shape[0]) if self.task_sampling == "uniform" else None
            sup = multitask_loss(preds, labels, label_mask, kinds, names, task_index)
            metrics.update(per_target)
            metrics["supervised"] = sup
            total = total + w_sup * sup
        if w_clip > 0:
            x_cls = (masked if masked is not None else clean)[0]
            tau = call("temperature_value")
            clip = info_nce(c_cls, x_cls, tau, mask=both)
            metrics.update(clip=clip, temperature=tau)
            total = total + w_clip * clip
        if w_mxm > 0:
            _, f_tokens = call("fuse", *masked, c_tokens, c_mask, rng=r_fm)
            recon = call("reconstruct", f_tokens)
            target = (xrd.astype(jnp.float32) * self.net.xrd.input_scale).reshape(recon.shape)
            mxm = masked_xrd_loss(recon, target, token_mask, sample_mask=both)
            metrics["mxm"] = mxm
            total = total + w_mxm * mxm
        metrics["n_valid"] = jnp.sum(both).astype(jnp.float32)
        return total, metrics

    def predict(self, params, batch):
        if not self.outputs:
            raise NotImplementedError("XxaCT-NN has no prediction heads: set config.data.targets")
        return head_outputs(self._call(params, "predict_heads", self._fused_cls(params, batch)), self.outputs)

    def embed(self, params, batch):
        """``composition`` / ``xrd``: the encoders' [CLS] embeddings; ``fused``: the fusion [CLS]
        (the heads' input). Each float32 [N, d]."""
        z, frac, cmask, xrd = self._inputs(batch)
        c_cls, c_tokens, c_mask = self._call(params, "encode_composition", z, frac, cmask)
        x_cls, x_tokens = self._call(params, "encode_xrd", xrd, None)
        f_cls, _ = self._call(params, "fuse", x_cls, x_tokens, c_tokens, c_mask)
        return {"composition": c_cls, "xrd": x_cls, "fused": f_cls}

    def param_labels(self, params):
        unknown = sorted(set(params) - set(LABELS))
        if unknown:
            raise ValueError(f"unexpected top-level parameter groups {unknown}")
        return {k: jax.tree.map(lambda _, k=k: LABELS[k], v) for k, v in params.items()}


def _section(config: ml_collections.ConfigDict, key: str) -> dict:
    value = config.system.get(key, None)
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value or {})


def make_xxact(config: ml_collections.ConfigDict) -> XxactSystem:
    """Factory: ``config.system.{composition, xrd, fusion}`` (module kwargs), ``mask_ratio``,
    ``temperature_init``, ``learnable_temperature``, ``task_sampling``, ``remat``;
    ``config.objective.terms``; ``config.data.targets``; ``config.train.compute_dtype``."""
    s = config.system
    dtype = compute_dtype(config)
    remat = bool(s.get("remat", False))
    comp = CrabNet(**_section(config, "composition"), use_cls_token=True, remat=remat, dtype=dtype)
    xrd_kwargs = xrd_tokens(config, _section(config, "xrd"), "config.system.xrd", XrdTransformer.patch_size)
    xrd = XrdTransformer(**xrd_kwargs, remat=remat, dtype=dtype)
    fusion = CrossAttentionFusion(**_section(config, "fusion"), remat=remat, dtype=dtype)
    outputs = task_outputs(config_targets(config), dims=config_target_dims(config))
    net = XxactNet(comp, xrd, fusion, tuple(outputs.items()), xrd.patch_size,
                   float(s.get("temperature_init", 0.07)), bool(s.get("learnable_temperature", True)))
    return XxactSystem(net, outputs, term_weights(config), mask_ratio=float(s.get("mask_ratio", 0.05)),
                       task_sampling=str(s.get("task_sampling", "uniform")))
