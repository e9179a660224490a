"""Projection heads, latent predictors and prediction heads (SPEC M7). All take float [B, d]
(or tokens [B, T, d] for :class:`MXMHead`) and return float32."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmjax.nn.packing import unpack
from mmjax.nn.transformer import get_activation, uniform_init

Dtype = Any


class MLP(nn.Module):
    """``len(hidden)`` x (Dense -> activation), then Dense(out_dim). [..., D] -> float32 [..., out_dim]."""

    hidden: Sequence[int] = ()
    out_dim: int = 1
    activation: str = "relu"
    out_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = get_activation(self.activation)
        x = x.astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = act(nn.Dense(h, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc_{i}")(x))
        return nn.Dense(self.out_dim, use_bias=self.out_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="out")(x).astype(jnp.float32)


class ProjectionHead(nn.Module):
    """MatBind projection head: LayerNorm(in) -> [Dense(h) -> LayerNorm -> act]* -> Dense(out_dim,
    no bias) ("as in CLIP"). MatBind: crystal [128 -> 128], DOS/pXRD [512 -> 128],
    text [768 -> 512 (GELU) -> 128]; LeakyReLU default.

    Call: x [B, D] -> float32 [B, out_dim].
    """

    out_dim: int = 128
    hidden: Sequence[int] = ()
    activation: str = "leaky_relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = get_activation(self.activation)
        x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm_in")(x.astype(self.dtype))
        for i, h in enumerate(self.hidden):
            x = nn.Dense(h, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc_{i}")(x)
            x = act(nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm_{i}")(x))
        return nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="out")(x).astype(jnp.float32)


class LatentPredictor(nn.Module):
    """X-MoPA predictor ``h_m([z_a, z_b])``: a light MLP on the concatenation of the other
    modalities' latents.

    Call: *latents each [B, d_i] (concatenated in the given order) -> float32 [B, out_dim].
    """

    out_dim: int
    hidden: Sequence[int] = (256,)
    activation: str = "gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, *latents):
        if len(latents) < 1:
            raise ValueError("LatentPredictor needs at least one input latent")
        return MLP(self.hidden, self.out_dim, self.activation, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="mlp")(jnp.concatenate(latents, axis=-1))


class CrossModalPredictors(nn.Module):
    """One :class:`LatentPredictor` per modality m, predicting ``z_m`` from the others.

    Call: latents {modality: [B, d]} (keys = ``modalities``) ->
    {m: float32 [B, d_m]}, where predictor m sees the other modalities in ``modalities`` order.
    """

    modalities: Sequence[str] = ("crystal", "text", "xrd")
    hidden: Sequence[int] = (256,)
    activation: str = "gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, latents: Mapping[str, Any]):
        missing = [m for m in self.modalities if m not in latents]
        if missing:
            raise KeyError(f"CrossModalPredictors: latents missing modalities {missing}")
        out = {}
        for m in self.modalities:
            others = [latents[o] for o in self.modalities if o != m]
            out[m] = LatentPredictor(latents[m].shape[-1], self.hidden, self.activation, self.dtype,
                                     self.param_dtype, name=f"predict_{m}")(*others)
        return out


class RegressionHead(nn.Module):
    """Regression head: MLP(hidden) -> Dense(num_outputs). [B, d] -> float32 [B, num_outputs]."""

    num_outputs: int = 1
    hidden: Sequence[int] = ()
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, self.num_outputs, self.activation, name="mlp")(x)


class ClassificationHead(nn.Module):
    """Classification head returning logits. [B, d] -> float32 [B, num_classes]."""

    num_classes: int
    hidden: Sequence[int] = ()
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, self.num_classes, self.activation, name="mlp")(x)


class MultiTaskHead(nn.Module):
    """Target-specific linear (or MLP) heads on one shared representation (XxaCT-NN).

    ``tasks``: mapping or sequence of ``(name, num_outputs)`` — regression targets use 1,
    classification targets their class count (crystal system 7, space group 230).

    Call: x [B, d] -> {name: float32 [B, num_outputs]}.
    """

    tasks: Any
    hidden: Sequence[int] = ()
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        items = self.tasks.items() if hasattr(self.tasks, "items") else self.tasks
        return {name: MLP(self.hidden, int(n), self.activation, name=f"head_{name}")(x) for name, n in items}


class MXMHead(nn.Module):
    """Masked-XRD-modelling reconstruction ``x_hat = ReLU(Linear(f))`` per fused token
    (XxaCT-NN Eq. 3). tokens [B, T, d] -> float32 [B, T, patch_size]. Predictions are in the
    units the XRD encoder sees (raw intensity x ``input_scale``, i.e. [0, 1] by default).
    """

    patch_size: int = 250

    @nn.compact
    def __call__(self, tokens):
        return nn.relu(nn.Dense(self.patch_size, name="out")(tokens.astype(jnp.float32)))


# PyTorch ``nn.Linear`` weight init (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class TorchDense(nn.Module):
    """``nn.Dense`` with PyTorch's ``nn.Linear`` initialisation (kernel and bias U(±1/sqrt(fan_in))).
    Where a reference model is PyTorch, its training dynamics can depend on this scale (CrabNet's
    gated head collapses from Flax's default lecun-normal init within a few steps)."""

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=TORCH_KERNEL_INIT, bias_init=uniform_init(max(x.shape[-1], 1) ** -0.5),
                        name="dense")(x)


class ResidualMLP(nn.Module):
    """Roost's residual network, as CrabNet uses it (``ResidualNetwork`` in crabnet/kingcrab.py).

    For widths ``[d_in] + hidden``: ``x <- leaky_relu(Dense(h)(x)) + R(x)`` per layer, where R is a
    bias-free Dense(h) when the width changes and the identity when it does not; then
    ``Dense(out_dim)``. LeakyReLU slope 0.01 (PyTorch's default). ``torch_init`` (default on):
    every layer initialised as PyTorch's ``nn.Linear`` (`TorchDense`), as in CrabNet.

    Call: x [..., d_in] -> float32 [..., out_dim] (applied to the last axis, e.g. per element).
    """

    hidden: Sequence[int] = (1024, 512, 256, 128)
    out_dim: int = 3
    torch_init: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        def dense(features, name, use_bias=True):
            if self.torch_init:
                return TorchDense(features, use_bias, self.dtype, self.param_dtype, name=name)
            return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

        x = x.astype(self.dtype)
        for i, h in enumerate(self.hidden):
            res = x if x.shape[-1] == h else dense(h, f"res_{i}", use_bias=False)(x)
            x = nn.leaky_relu(dense(h, f"fc_{i}")(x), 0.01) + res
        return dense(self.out_dim, "out")(x).astype(jnp.float32)


def gated_element_average(per_element, mask):
    """CrabNet's output rule on per-element head outputs.

    Args:
      per_element: float [B, M, 3T]: for target t the columns (3t, 3t+1, 3t+2) are
        (value, log sigma, gate logit) of every element row.
      mask: bool [B, M] (True = real element).
    Returns:
      (prediction [B, T], log_sigma [B, T]): the masked mean over elements of each column, then
      ``prediction = value * sigmoid(gate)`` (CrabNet: ``output * sigmoid(logits)``).
    """
    m = mask.astype(jnp.float32)[..., None]
    mean = jnp.sum(per_element * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    value, log_sigma, gate = mean[:, 0::3], mean[:, 1::3], mean[:, 2::3]
    return value * nn.sigmoid(gate), log_sigma


class CrabNetHead(nn.Module):
    """CrabNet's head: `ResidualMLP` on every element token, then `gated_element_average`.

    ``targets``: names of the regression targets (3 outputs per component); ``widths``: components
    per target (default 1 each); ``vectors``: which targets are vectors (their outputs keep a
    component axis, even of width 1).
    Call: tokens [B, M, d], mask bool [B, M] -> {name: [B] (vector: [B, d]), name + "/log_sigma": same}.
    Packed (``token_index`` [T], `mmjax.nn.packing`): tokens [T, d] are the packed element tokens;
    the residual network runs on those T rows only, then they go back to [B, M] for the average.
    """

    targets: Sequence[str] = ("target",)
    hidden: Sequence[int] = (1024, 512, 256, 128)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    widths: Sequence[int] = ()
    vectors: Sequence[bool] = ()

    @nn.compact
    def __call__(self, tokens, mask, token_index=None):
        widths = tuple(self.widths) or (1,) * len(self.targets)
        vectors = tuple(self.vectors) or (False,) * len(self.targets)
        if len(widths) != len(self.targets) or len(vectors) != len(self.targets):
            raise ValueError(f"CrabNetHead: {len(self.targets)} targets, {len(widths)} widths, {len(vectors)} vector flags")
        per = ResidualMLP(tuple(self.hidden), 3 * sum(widths), torch_init=True, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="residual")(tokens)
        if token_index is not None:
            per = unpack(per, token_index, *mask.shape)
        pred, log_sigma = gated_element_average(per, mask)
        out, start = {}, 0
        for name, w, vec in zip(self.targets, widths, vectors):
            cols = slice(start, start + w) if vec else start
            out[name], out[f"{name}/log_sigma"] = pred[:, cols], log_sigma[:, cols]
            start += w
        return out
