"""Unimodal baselines (XxaCT-NN Table 1, X-MoPA/Matbench references): one encoder + prediction heads.

* ``cgcnn``: crystal graph -> `mmjax.nn.CGCNN` (92-d element table, 3 conv layers, 64-d atoms,
  mean pool, softplus Dense 128) -> linear head per target (Xie & Grossman 2018).
* ``crabnet``: composition -> `mmjax.nn.CrabNet` (512-d, 3 layers, 4 heads, FFN 2048, masked mean
  over elements) -> residual-free MLP head [1024, 512, 256, 128] per target (CrabNet's Roost-style
  head widths; its aleatoric uncertainty output and RobustL1 loss are not reproduced: MSE here).
* ``xrd_transformer``: XRD -> `mmjax.nn.XrdTransformer` (the XxaCT-NN XRD encoder: 17 tokens x 250,
  512-d, 3 layers, 4 heads, FFN 1024, [CLS] output) -> linear head per target.
* ``dense_mlp``: any dense modality (``config.system.modality``: xrd, text, charge_density or a
  registered one) -> the encoder ``config.system.encoder.name`` (an MLP by default) -> heads.

Loss: `mmjax.systems.supervised.supervised_loss` (MSE on regression targets as batched, i.e.
normalised; cross-entropy on 0-based class indices; mean over targets with labels in the batch).
Targets: ``config.data.targets`` (class counts from `mmjax.systems.xxact.KNOWN_CLASSES`).
Parameter groups: ``encoder_<modality>`` and ``head`` (probe mode freezes the encoder).
``embed`` returns ``{modality: encoder output [N, d]}``.
"""

from __future__ import annotations

import copy
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax.data import modalities
from mmjax.data.features.elements import element_features
from mmjax.data.spec import config_target_dims, config_targets, xrd_tokens
from mmjax.nn import CGCNN, CrabNet, XrdTransformer, make_encoder
from mmjax.nn.heads import CrabNetHead
from mmjax.nn.packing import auto_fraction, packed_or_padded
from mmjax.systems.common import MultimodalSystem, compute_dtype, config_dict, init_modality, modality_inputs
from mmjax.systems.supervised import is_regression, output_kind, supervised_loss
from mmjax.systems.xxact import task_outputs

BASELINES: dict[str, tuple[str, Callable]] = {}


class UnimodalBaseline(MultimodalSystem):
    """One encoder, supervised heads on its output (always the ``finetune`` stage of
    `MultimodalSystem`)."""

    def __init__(self, name: str, modality: str, encoder, outputs: dict[str, int], head_hidden=(),
                 target_losses: dict[str, str] | None = None):
        if not outputs:
            raise ValueError(f"baseline {name!r} needs targets: set config.data.targets")
        super().__init__({modality: encoder}, stage="finetune", targets=outputs, head_inputs=(modality,),
                         head_hidden=tuple(head_hidden), target_losses=target_losses)
        self.name = name
        self.modality = modality

    def pretrain_loss(self, params, latents, masks, rng, train):
        raise NotImplementedError(f"baseline {self.name!r} has no pretraining objective (supervised only)")


class CrabNetSystem(UnimodalBaseline):
    """CrabNet with its own head (``config.system.head = "crabnet"``): the Roost residual network
    [1024, 512, 256, 128] on every element token of the encoder, three outputs per target
    (value, log sigma, gate logit; per component for a vector target), masked mean over the
    elements, value x sigmoid(gate) (`mmjax.nn.heads.CrabNetHead`). Regression targets only.
    ``predict`` returns ``{name: [N], name + "/log_sigma": [N]}`` (``[N, d]`` for a vector target;
    batched units); ``embed`` the pooled encoder output.
    ``identical_layers``: every transformer layer starts as a copy of the first, as PyTorch's
    ``nn.TransformerEncoder(layer, num_layers)`` deep-copies the one layer CrabNet gives it.
    ``packed_tokens`` (``config.system.packed_tokens``, a fraction of the element slots; 0 = off):
    the transformer and the per-element head run on the batch's real element tokens only, packed
    into a static budget of that fraction of the ``[N, M]`` slots (`mmjax.nn.packing`); a batch
    with more real elements than the budget runs padded. Same predictions, loss and gradients as
    padded (float summation order aside); the dropout masks are drawn for the packed shape, so a
    training run's random stream differs from a padded run's.
    """

    def __init__(self, encoder, outputs: dict[str, int], head_hidden=(1024, 512, 256, 128),
                 target_losses: dict[str, str] | None = None, identical_layers: bool = False,
                 packed_tokens: float = 0.0):
        classes = sorted(k for k in outputs if not is_regression(outputs, k))
        if classes:
            raise ValueError(f"config.system.head='crabnet' predicts regression targets only; {classes} are "
                             "classification targets (use head='mlp')")
        super().__init__("crabnet", "composition", encoder, outputs, (), target_losses)
        self.identical_layers = bool(identical_layers)
        self.packed_tokens = float(packed_tokens or 0.0)
        if not 0.0 <= self.packed_tokens <= 1.0:
            raise ValueError(f"config.system.packed_tokens={self.packed_tokens}: a fraction of the element slots in "
                             "(0, 1], 0 for padded batches, or -1 for a fraction from the training set")
        self.head = CrabNetHead(tuple(outputs), tuple(int(h) for h in head_hidden),
                                widths=tuple(output_kind(k, n)[1] for k, n in self.targets.items()),
                                vectors=tuple(isinstance(n, tuple) for n in self.targets.values()))

    def _tokens(self, params, batch, train, rng, token_index=None):
        args = modality_inputs(batch, "composition")
        rngs = {"dropout": rng} if (train and rng is not None) else {}
        _, tokens, mask = self.encoders["composition"].apply(
            {"params": params["encoder_composition"]}, *args, deterministic=not train, return_tokens=True, rngs=rngs,
            token_index=token_index)
        return tokens, mask

    def _head_outputs(self, params, batch, train, rng):
        """Head outputs (`CrabNetHead`), packed when ``packed_tokens`` is set and the batch fits."""
        def run(token_index=None):
            tokens, mask = self._tokens(params, batch, train, rng, token_index)
            return self.head.apply({"params": params["head"]}, tokens, mask, token_index)

        mask = modality_inputs(batch, "composition")[2].astype(bool)
        return packed_or_padded(mask, self.packed_tokens, run, run)

    def init(self, rng, batch):
        k_enc, k_head = jax.random.split(rng)
        params = {"encoder_composition": init_modality(self.encoders["composition"], k_enc, "composition", batch)}
        if self.identical_layers:
            layers = params["encoder_composition"]["encoder"]
            params["encoder_composition"]["encoder"] = {  # copies: no buffer shared (donation)
                k: (jax.tree.map(jnp.copy, layers["block_0"]) if k.startswith("block_") else v) for k, v in layers.items()}
        tokens, mask = jax.eval_shape(lambda p: self._tokens(p, batch, False, None), params)
        params["head"] = self.head.init(k_head, jnp.zeros(tokens.shape, tokens.dtype),
                                        jnp.ones(mask.shape, bool))["params"]
        return params

    def predict(self, params, batch):
        return self._head_outputs(params, batch, False, None)

    def loss(self, params, batch, rng, train):
        preds = self._head_outputs(params, batch, train, rng)
        return supervised_loss(preds, batch, self.targets, self.target_weights, self.losses)


def _encoder_kwargs(config: ml_collections.ConfigDict) -> dict:
    enc = config.system.get("encoder", None)
    return enc.to_dict() if isinstance(enc, ml_collections.ConfigDict) else dict(enc or {})


def _outputs(config) -> dict[str, int | tuple[int]]:
    return task_outputs(config_targets(config), dims=config_target_dims(config))


def _head_hidden(config) -> tuple[int, ...]:
    return tuple(int(h) for h in (config.system.get("head_hidden", ()) or ()))


def target_losses(config) -> dict[str, str]:
    """``{target: loss}`` from ``config.system.loss`` (every regression target) and
    ``config.system.target_losses`` (per target, wins); names checked by the system."""
    outputs = _outputs(config)
    default = config.system.get("loss", None)
    losses = {k: str(default) for k in outputs if default and is_regression(outputs, k)}
    losses.update(config_dict(config.system.get("target_losses", None)))
    return losses


def _element_table(kw: dict) -> None:
    """Replace ``element_table`` (a table name or file) in encoder kwargs by ``element_features``."""
    table = kw.pop("element_table", "")
    if table:
        kw["element_features"] = np.asarray(element_features(table), np.float32)


def make_cgcnn(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `CGCNN` kwargs plus ``element_table`` ("cgcnn92" for
    the 92-d CGCNN element features, "" for a learned embedding); ``head_hidden``."""
    kw = _encoder_kwargs(config)
    _element_table(kw)
    enc = CGCNN(**kw, dtype=compute_dtype(config))
    return UnimodalBaseline("cgcnn", "crystal", enc, _outputs(config), _head_hidden(config), target_losses(config))


AUTO_PACKED = -1.0  # config.system.packed_tokens: a fraction from the training set


def resolve_packed_tokens(config: ml_collections.ConfigDict, dataset, global_batch: int, log=print,
                          devices: int = 1):
    """``config.system.packed_tokens == -1`` ("auto"): a copy of ``config`` whose value is
    `mmjax.nn.packing.auto_fraction` of ``dataset``'s element counts (a `mmjax.data.store.Dataset`:
    the training rows), its element slots and ``global_batch`` — 0.0 when packing would save
    little — so the saved config states what the run used. Any other config comes back as it is.
    A system built from an unresolved config runs padded (the same values, more work).
    ``devices`` > 1: 0.0 (padded). The packed gather spans the whole batch, so on a batch-sharded
    mesh the partitioner may gather the batch across devices; packing is a single-device speed-up
    until it is done per shard (an explicit fraction still packs, with the same values)."""
    system = config.get("system", None)
    if system is None or float(system.get("packed_tokens", 0.0) or 0.0) != AUTO_PACKED:
        return config
    c = copy.deepcopy(config)
    with c.unlocked():
        c.system.packed_tokens = 0.0
        if devices > 1:
            if log is not None:
                log(f"system.packed_tokens=-1 (auto): 0 (padded) on {devices} devices")
        elif "composition/atomic_numbers" in dataset.keys and len(dataset):
            counts = dataset.ragged_lengths("composition/atomic_numbers")
            padding = dataset.manifest.padding.get("composition/elements", {})
            slots = int(padding.get("max") or max(1, int(counts.max())))
            c.system.packed_tokens = auto_fraction(counts, slots, int(global_batch))
            if log is not None:
                log(f"system.packed_tokens=-1 (auto): {c.system.packed_tokens:.3g} of the {slots} element slots "
                    f"(mean {counts.mean():.2f} elements over {len(counts)} training materials, batch {global_batch})")
    return c


def make_crabnet(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `CrabNet` kwargs (``element_table``: a table name such
    as ``"mat2vec"`` or a file, frozen); ``head`` ("mlp": pooled -> MLP ``head_hidden``;
    "crabnet": `CrabNetSystem`, with ``identical_layers``); ``loss`` / ``target_losses``."""
    kw = _encoder_kwargs(config)
    _element_table(kw)
    enc = CrabNet(**kw, dtype=compute_dtype(config))
    if config.system.get("head", "mlp") == "crabnet":
        packed = float(config.system.get("packed_tokens", 0.0) or 0.0)
        packed = 0.0 if packed == AUTO_PACKED else packed  # not resolved from a training set: padded
        return CrabNetSystem(enc, _outputs(config), _head_hidden(config) or (1024, 512, 256, 128), target_losses(config),
                             identical_layers=bool(config.system.get("identical_layers", False)), packed_tokens=packed)
    if config.system.get("head", "mlp") != "mlp":
        raise ValueError(f"config.system.head={config.system.head!r}; expected 'mlp' or 'crabnet'")
    return UnimodalBaseline("crabnet", "composition", enc, _outputs(config), _head_hidden(config), target_losses(config))


def make_xrd_transformer(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.encoder`` = `XrdTransformer` kwargs; ``head_hidden``."""
    kwargs = xrd_tokens(config, _encoder_kwargs(config), "config.system.encoder", XrdTransformer.patch_size)
    enc = XrdTransformer(**kwargs, dtype=compute_dtype(config))
    return UnimodalBaseline("xrd_transformer", "xrd", enc, _outputs(config), _head_hidden(config), target_losses(config))


def make_dense_mlp(config: ml_collections.ConfigDict) -> UnimodalBaseline:
    """Factory: ``config.system.modality`` (any dense modality, built-in or registered with
    `mmjax.data.modalities.register`), ``config.system.encoder`` = ``{"name": <mmjax.nn.ENCODERS
    key or PAPER_CONFIGS key taking one [N, ...] array>, **kwargs}`` (default ``text_mlp``, an
    MLP); ``head_hidden``."""
    modality = str(config.system.get("modality", "") or "")
    dense = modalities.dense_keys()
    if modality not in dense:
        raise ValueError(f"config.system.modality={modality!r}: dense_mlp reads a dense modality, one of "
                         f"{sorted(dense)} (or one registered with mmjax.data.modalities.register)")
    kw = _encoder_kwargs(config)
    name = kw.pop("name", "text_mlp")
    if name in ("xrd_transformer", "xxact_xrd"):  # tokens from the XRD grid, as make_xrd_transformer
        kw = xrd_tokens(config, kw, "config.system.encoder", XrdTransformer.patch_size)
    enc = make_encoder(name, **kw, dtype=compute_dtype(config))
    return UnimodalBaseline("dense_mlp", modality, enc, _outputs(config), _head_hidden(config), target_losses(config))


BASELINES.update(cgcnn=("crystal", make_cgcnn), crabnet=("composition", make_crabnet),
                 xrd_transformer=("xrd", make_xrd_transformer), dense_mlp=("<config.system.modality>", make_dense_mlp))
