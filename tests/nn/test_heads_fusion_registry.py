"""Heads, X-MoPA predictors, XxaCT fusion, the ENCODERS registry and paper parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import init_and_apply

from mmjax.nn import (ENCODERS, PAPER_CONFIGS, SMALL, CrossModalPredictors, MultiTaskHead, MXMHead, ProjectionHead,
                      make_encoder)


def test_projection_head_layernorm_input_and_bias_free_output():
    x = np.random.default_rng(0).normal(size=(4, 12)).astype(np.float32)
    head = ProjectionHead(out_dim=6, hidden=(10,))
    out, params = init_and_apply(head, x)
    assert out.shape == (4, 6) and "bias" not in params["params"]["out"]
    # LayerNorm on the input: a per-row affine change of the input leaves the output unchanged.
    out2 = jax.jit(head.apply)(params, 3.0 * x + 2.0)
    np.testing.assert_allclose(out2, out, rtol=1e-4, atol=1e-4)


def test_cross_modal_predictors_use_only_the_other_modalities():
    rng = np.random.default_rng(1)
    z = {m: rng.normal(size=(3, d)).astype(np.float32) for m, d in (("crystal", 4), ("text", 5), ("xrd", 6))}
    pred = CrossModalPredictors(hidden=(8,))
    out, params = init_and_apply(pred, z)
    assert {m: v.shape for m, v in out.items()} == {"crystal": (3, 4), "text": (3, 5), "xrd": (3, 6)}
    assert params["params"]["predict_text"]["mlp"]["fc_0"]["kernel"].shape == (4 + 6, 8)  # [z_crystal, z_xrd]
    z2 = dict(z, text=z["text"] + 5.0)
    out2 = jax.jit(pred.apply)(params, z2)
    np.testing.assert_array_equal(out2["text"], out["text"])  # h_text never sees z_text
    assert not np.allclose(out2["crystal"], out["crystal"])
    with pytest.raises(KeyError, match="xrd"):
        pred.apply(params, {"crystal": z["crystal"], "text": z["text"]})


def test_multitask_and_mxm_heads():
    x = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
    out, _ = init_and_apply(MultiTaskHead(tasks={"formation_energy": 1, "crystal_system": 7}), x)
    assert out["formation_energy"].shape == (3, 1) and out["crystal_system"].shape == (3, 7)
    rec, _ = init_and_apply(MXMHead(patch_size=5), x.reshape(3, 2, 4))
    assert rec.shape == (3, 2, 5) and np.all(np.asarray(rec) >= 0)  # ReLU(Linear(f))


def test_xxact_pipeline_fusion_masks_and_remat():
    """XRD transformer tokens (queries) x CrabNet tokens (keys/values) -> fused [CLS] + per-token."""
    rng = np.random.default_rng(3)
    cfg = SMALL["xrd_transformer"]
    xrd = rng.uniform(0, 100, (2, cfg["num_tokens"] * cfg["patch_size"])).astype(np.float32)
    z = np.array([[8, 22, 0], [3, 0, 0]], np.int32)
    f = np.array([[0.5, 0.5, 0], [1.0, 0, 0]], np.float32)
    xrd_enc = make_encoder("xrd_transformer", small=True)
    comp_enc = make_encoder("crabnet", small=True, use_cls_token=True)
    (cls, tokens), _ = init_and_apply(xrd_enc, xrd, return_tokens=True)
    (_, ctoks, cmask), _ = init_and_apply(comp_enc, z, f, z > 0, return_tokens=True)
    queries = jnp.concatenate([cls[:, None], tokens], axis=1)
    fusion = make_encoder("cross_attention_fusion", small=True)
    (pooled, fused), params = init_and_apply(fusion, queries, ctoks, cmask)
    assert pooled.shape == (2, 16) and fused.shape == (2, cfg["num_tokens"], 16)
    # Masked composition tokens (keys/values) never matter.
    ctoks2 = jnp.where(cmask[..., None], ctoks, 123.0)
    remat = make_encoder("cross_attention_fusion", small=True, remat=True)
    pooled2, fused2 = jax.jit(remat.apply)(params, queries, ctoks2, cmask)
    np.testing.assert_allclose(pooled2, pooled, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused2, fused, rtol=1e-5, atol=1e-5)


def test_registry_small_presets_and_errors():
    assert {"cgcnn", "matbind_gcn", "potnet", "xrd_cnn", "xrd_transformer", "xrd_resnet", "xrd_fcn", "crabnet",
            "dos_transformer", "resnext3d", "text_mlp"} <= set(ENCODERS)
    assert set(SMALL) == set(ENCODERS)
    for name in ENCODERS:
        m = make_encoder(name, small=True)
        assert isinstance(m, ENCODERS[name])
        for k, v in SMALL[name].items():
            assert getattr(m, k) == v
    assert make_encoder("xrd_transformer", small=True, d_model=8).d_model == 8
    with pytest.raises(KeyError, match="unknown encoder"):
        make_encoder("no_such_encoder")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_xxact_paper_parameter_counts_match_the_paper():
    """XxaCT-NN reports 9.7 M (composition), 6.8 M (XRD), 94.5 M (fusion) parameters."""
    b = 2
    xrd = jax.ShapeDtypeStruct((b, 4250), jnp.float32)
    comp = (jax.ShapeDtypeStruct((b, 8), jnp.int32), jax.ShapeDtypeStruct((b, 8), jnp.float32),
            jax.ShapeDtypeStruct((b, 8), jnp.bool_))
    fusion_in = (jax.ShapeDtypeStruct((b, 18, 768), jnp.float32), jax.ShapeDtypeStruct((b, 9, 768), jnp.float32),
                 jax.ShapeDtypeStruct((b, 9), jnp.bool_))
    key = jax.random.key(0)
    counts = {
        "xxact_xrd": _count(jax.eval_shape(make_encoder("xxact_xrd").init, key, xrd)),
        "xxact_composition": _count(jax.eval_shape(make_encoder("xxact_composition").init, key, *comp)),
        "xxact_fusion": _count(jax.eval_shape(make_encoder("xxact_fusion").init, key, *fusion_in)),
    }
    reported = {"xxact_xrd": 6.8e6, "xxact_composition": 9.7e6, "xxact_fusion": 94.5e6}
    for k, v in reported.items():
        assert abs(counts[k] - v) / v < 0.04, (k, counts[k])
    assert PAPER_CONFIGS["xmopa_text"][1]["out_dim"] == 150
