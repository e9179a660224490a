"""Charge-density encoder (SPEC M5): 3-D ResNeXt on voxel grids float [B, X, Y, Z] (32^3 by
default; any size works, the network ends in a global average pool)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def _group_norm(channels: int, groups: int, name: str, dtype, param_dtype):
    g = groups
    while channels % g:
        g -= 1
    return nn.GroupNorm(num_groups=g, dtype=dtype, param_dtype=param_dtype, name=name)


class ResNeXtBottleneck3D(nn.Module):
    """ResNeXt bottleneck (Hara et al. 3D-ResNets; MultiMat ``ResNeXt_3D.py``).

    ``mid = cardinality * planes // 32``; 1^3 conv -> norm -> ReLU -> 3^3 grouped conv
    (``cardinality`` groups, ``stride``) -> norm -> ReLU -> 1^3 conv to ``planes * expansion``
    -> norm; shortcut type B (1^3 conv + norm when the shape changes); ReLU.

    Call: x [B, X, Y, Z, C_in] -> [B, X/stride, Y/stride, Z/stride, planes * expansion].
    """

    planes: int
    cardinality: int
    stride: int = 1
    expansion: int = 2
    norm_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        mid = self.cardinality * self.planes // 32
        out_c = self.planes * self.expansion
        if mid % self.cardinality or mid == 0:
            raise ValueError(f"ResNeXt width {mid} (cardinality * planes // 32) must be a positive "
                             f"multiple of cardinality {self.cardinality}")
        conv = lambda c, k, s, g, name: nn.Conv(c, (k, k, k), strides=(s, s, s), padding="SAME",  # noqa: E731
                                                feature_group_count=g, use_bias=False, dtype=self.dtype,
                                                param_dtype=self.param_dtype, name=name)
        norm = lambda c, name: _group_norm(c, self.norm_groups, name, self.dtype, self.param_dtype)  # noqa: E731
        h = nn.relu(norm(mid, "norm1")(conv(mid, 1, 1, 1, "conv1")(x)))
        h = nn.relu(norm(mid, "norm2")(conv(mid, 3, self.stride, self.cardinality, "conv2")(h)))
        h = norm(out_c, "norm3")(conv(out_c, 1, 1, 1, "conv3")(h))
        if self.stride != 1 or x.shape[-1] != out_c:
            x = norm(out_c, "norm_down")(conv(out_c, 1, self.stride, 1, "downsample")(x))
        return nn.relu(h + x)


class ResNeXt3D(nn.Module):
    """3-D ResNeXt (MultiMat charge-density encoder; ResNeXt-50 at the defaults).

    Stem: Conv(stem_channels, 7^3, stride 2) -> norm -> ReLU -> MaxPool(3^3, stride 2, SAME);
    stages ``blocks`` = [3, 4, 6, 3] with ``planes`` = [128, 256, 512, 1024] (expansion 2 ->
    2048 channels), strides 1, 2, 2, 2; global average pool; Dense(embed_dim = 128).
    MultiMat uses BatchNorm; here GroupNorm(``norm_groups``) (stateless).
    ``remat`` rematerialises each bottleneck.

    Call: density [B, X, Y, Z] -> float32 [B, embed_dim].
    """

    blocks: Sequence[int] = (3, 4, 6, 3)
    planes: Sequence[int] = (128, 256, 512, 1024)
    cardinality: int = 32
    stem_channels: int = 64
    expansion: int = 2
    embed_dim: int = 128
    norm_groups: int = 32
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, density):
        if density.ndim != 4:
            raise ValueError(f"charge density must be [B, X, Y, Z], got shape {density.shape}")
        x = density.astype(self.dtype)[..., None]
        x = nn.Conv(self.stem_channels, (7, 7, 7), strides=(2, 2, 2), padding="SAME", use_bias=False,
                    dtype=self.dtype, param_dtype=self.param_dtype, name="stem")(x)
        x = nn.relu(_group_norm(self.stem_channels, self.norm_groups, "stem_norm", self.dtype, self.param_dtype)(x))
        x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
        block_cls = nn.remat(ResNeXtBottleneck3D) if self.remat else ResNeXtBottleneck3D
        for s, (n, planes) in enumerate(zip(self.blocks, self.planes)):
            for i in range(n):
                stride = 2 if (i == 0 and s > 0) else 1
                x = block_cls(planes, self.cardinality, stride, self.expansion, self.norm_groups, self.dtype,
                              self.param_dtype, name=f"stage{s}_block{i}")(x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x).astype(jnp.float32)
