"""Flax Linen encoders, fusion and heads (SPEC M1-M8). Pure array code: nothing here imports
``mmjax.data``, ``mmjax.train`` or ``mmjax.eval``.

Registry: ``ENCODERS[name]`` is the module class; ``SMALL[name]`` its tiny test/debug
hyperparameters; ``PAPER_CONFIGS[key] = (encoder name, kwargs)`` the paper-size variants that
differ from the class defaults. ``make_encoder(name, small=False, **overrides)`` builds one.

Every encoder returns per-material float32 embeddings ``[B, d]``; graph encoders return
``[G - 1, d]`` (one row per graph, the trailing padding graph dropped — i.e. ``[B, d]`` for a
schema Batch with ``n_node`` of length B + 1). All modules take ``dtype`` (compute, e.g.
``jnp.bfloat16``) and ``param_dtype`` (keep float32); transformer-based ones take ``remat``.
"""

from __future__ import annotations

from typing import Any

from mmjax.nn.basis import fractional_encoding, gaussian_expansion, rbf_expansion, sinusoidal_positions
from mmjax.nn.composition import CrabNet
from mmjax.nn.density import ResNeXt3D, ResNeXtBottleneck3D
from mmjax.nn.dos import DosTransformer
from mmjax.nn.fusion import CrossAttentionFusion
from mmjax.nn.graph import CGCNN, CGCNNConv, CGConv, MatBindGCN, PotNet, PotNetConv, graph_masks, segment_mean_pool
from mmjax.nn.heads import (MLP, ClassificationHead, CrossModalPredictors, LatentPredictor, MultiTaskHead, MXMHead,
                            ProjectionHead, RegressionHead)
from mmjax.nn.text import TextMLP
from mmjax.nn.transformer import (CrossAttentionBlock, CrossAttentionDecoder, MultiHeadAttention, TransformerBlock,
                                  TransformerEncoder, masked_mean)
from mmjax.nn.xrd import XrdCNN, XrdFCN, XrdResNet1D, XrdTransformer

ENCODERS: dict[str, type] = {
    "cgcnn": CGCNN,
    "matbind_gcn": MatBindGCN,
    "potnet": PotNet,
    "xrd_cnn": XrdCNN,
    "xrd_transformer": XrdTransformer,
    "xrd_resnet": XrdResNet1D,
    "xrd_fcn": XrdFCN,
    "crabnet": CrabNet,
    "dos_transformer": DosTransformer,
    "resnext3d": ResNeXt3D,
    "text_mlp": TextMLP,
    "cross_attention_fusion": CrossAttentionFusion,
}

# Tiny sizes for tests and smoke runs (d <= 32). XRD transformer: 4 tokens x 8 points (L = 32).
SMALL: dict[str, dict[str, Any]] = {
    "cgcnn": dict(atom_fea_len=16, n_conv=2, h_fea_len=16),
    "matbind_gcn": dict(hidden=16, num_layers=2),
    "potnet": dict(hidden=16, out_dim=16, num_layers=2, local_bins=16, infinite_bins=8),
    "xrd_cnn": dict(filters=4, kernel_size=5, pool=4, hidden=16, embed_dim=16),
    "xrd_transformer": dict(num_tokens=4, patch_size=8, d_model=16, num_layers=2, num_heads=2, mlp_dim=32),
    "xrd_resnet": dict(stem_channels=8, group_channels=(8, 16), group_blocks=(1, 1), kernel_size=3,
                       group_stride=2, groups=4),
    "xrd_fcn": dict(channels=(4, 8, 16), kernel_size=3, embed_dim=16),
    "crabnet": dict(d_model=16, num_layers=2, num_heads=2, mlp_dim=32, element_dim=8, resolution=100),
    "dos_transformer": dict(d_model=16, embed_dim=8, num_layers=2, num_heads=2, qkv_features=16, mlp_dim=32),
    "resnext3d": dict(blocks=(1, 1), planes=(32, 64), cardinality=2, stem_channels=8, embed_dim=16,
                      norm_groups=2),
    "text_mlp": dict(hidden=16, depth=2, out_dim=16),
    "cross_attention_fusion": dict(num_layers=2, d_model=16, num_heads=2, mlp_dim=32),
}

# Paper-size variants (class defaults are already the paper sizes of the first-named system).
PAPER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # X-MoPA
    "xmopa_crystal": ("cgcnn", {}),
    "xmopa_xrd": ("xrd_cnn", {}),
    "xmopa_text": ("text_mlp", dict(depth=1, out_dim=150)),
    # XxaCT-NN (encoders project every token to the 768-d fusion width)
    "xxact_composition": ("crabnet", dict(use_cls_token=True, out_dim=768)),
    "xxact_xrd": ("xrd_transformer", dict(out_dim=768)),
    "xxact_fusion": ("cross_attention_fusion", {}),
    "xxact_xrd_fcn": ("xrd_fcn", {}),
    # MultiMat
    "multimat_crystal": ("potnet", {}),
    "multimat_dos": ("dos_transformer", {}),
    "multimat_charge_density": ("resnext3d", {}),
    "multimat_text": ("text_mlp", dict(depth=3, hidden=512, out_dim=128)),
    # MatBind
    "matbind_crystal": ("matbind_gcn", {}),
    "matbind_xrd": ("xrd_resnet", {}),
    "matbind_dos": ("dos_transformer", dict(d_model=512, num_layers=2, num_heads=8, qkv_features=None,
                                            qkv_bias=True, mlp_dim=2048, activation="relu", pre_norm=False,
                                            merge="sum", positional="sinusoidal")),
}


def make_encoder(name: str, small: bool = False, **overrides):
    """Build ``ENCODERS[name]`` (or a ``PAPER_CONFIGS`` key) with paper defaults, the
    ``SMALL`` preset when ``small``, and keyword ``overrides`` on top."""
    if name in PAPER_CONFIGS:
        base, kwargs = PAPER_CONFIGS[name]
        kwargs = dict(kwargs)
    elif name in ENCODERS:
        base, kwargs = name, {}
    else:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)} and {sorted(PAPER_CONFIGS)}")
    if small:
        kwargs.update(SMALL[base])
    kwargs.update(overrides)
    return ENCODERS[base](**kwargs)


__all__ = [
    "ENCODERS", "SMALL", "PAPER_CONFIGS", "make_encoder",
    "CGCNN", "CGCNNConv", "CGConv", "MatBindGCN", "PotNet", "PotNetConv", "graph_masks", "segment_mean_pool",
    "XrdCNN", "XrdTransformer", "XrdResNet1D", "XrdFCN", "CrabNet", "DosTransformer", "ResNeXt3D",
    "ResNeXtBottleneck3D", "TextMLP", "CrossAttentionFusion", "MLP", "ProjectionHead", "LatentPredictor",
    "CrossModalPredictors", "RegressionHead", "ClassificationHead", "MultiTaskHead", "MXMHead",
    "MultiHeadAttention", "TransformerBlock", "CrossAttentionBlock", "TransformerEncoder", "CrossAttentionDecoder",
    "masked_mean", "gaussian_expansion", "rbf_expansion", "sinusoidal_positions", "fractional_encoding",
]
