"""X-MoPA: loss = prediction + alpha VICReg + beta InfoNCE on the encoders' outputs; masks; 1 vs 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from systems_helpers import (adam_losses, first_batch, loss_grads_embed, make_dataset, paper_system_section,
                             present_masks, set_present)

from mmjax.objectives import all_pairs_clip, cross_modal_prediction, vicreg
from mmjax.systems import xmopa
from mmjax.train.config import base_config

MODS = ("crystal", "text", "xrd")
N = 8


def _config(**overrides):
    c = base_config()
    c.system = paper_system_section("xmopa")
    c.system.encoder_overrides = {"crystal": {"n_conv": 1}}  # fast compile; wiring is what is tested
    c.system.update(overrides)
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("xmopa"), N, MODS, missing={"text": (5,)}, seed=4)
    system = xmopa.make_system(_config())
    batch8 = first_batch(ds, N, 8, modalities=MODS)  # 8 devices x 1 slot
    batch1 = first_batch(ds, N, 1, modalities=MODS)  # 1 device x 8 slots
    params = jax.jit(system.init)(jax.random.PRNGKey(0), batch1)
    return system, params, batch1, batch8, jax.jit(loss_grads_embed(system))


def _masks(batch):
    return present_masks(batch, MODS)


def test_loss_is_hand_assembled_objective(setup):
    system, params, batch, _, run = setup
    for b in (batch, set_present(batch, "xrd", [0, 2])):
        loss, metrics, grads, z = run(params, b)
        masks = _masks(b)
        preds = system.predictors.apply({"params": params["predictors"]}, z)
        l_pred = cross_modal_prediction(preds, z, masks)  # sum over dims, all three terms at evaluation
        l_vic = np.mean([float(vicreg(z[m], mask=masks[m])) for m in MODS])
        l_con = all_pairs_clip(z, masks, 0.07)
        np.testing.assert_allclose(float(metrics["prediction"]), float(l_pred), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["vicreg"]), l_vic, rtol=1e-5)
        np.testing.assert_allclose(float(loss), float(l_pred) + 0.01 * l_vic + 0.1 * float(l_con), rtol=1e-5)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads))
    # the prediction term only uses rows where all three modalities exist: changing a row that lacks
    # text (record 5) elsewhere must not move it
    assert not _masks(batch)["text"][5]
    moved = jax.tree.map(lambda x: x, batch)
    moved["xrd"] = np.array(batch["xrd"])
    moved["xrd"][0, 5] += 50.0
    _, m_moved, _, _ = run(params, moved)
    _, m_ref, _, _ = run(params, batch)
    assert float(m_moved["prediction"]) == pytest.approx(float(m_ref["prediction"]), rel=1e-6)
    assert float(m_moved["contrastive"]) != pytest.approx(float(m_ref["contrastive"]), rel=1e-6)


def test_train_mode_samples_one_target_per_row(setup):
    system, params, batch, _, run = setup
    _, _, _, z = run(params, batch)
    masks = _masks(batch)
    rng = jax.random.PRNGKey(3)
    loss_eval, m_eval = system.pretrain_loss(params, z, masks, rng, False)
    loss_a, m_a = system.pretrain_loss(params, z, masks, rng, True)
    loss_b, _ = system.pretrain_loss(params, z, masks, rng, True)
    assert float(loss_a) == float(loss_b)  # deterministic given the step rng
    # training: each row scores one randomly drawn target modality (index into sorted names)
    index = jax.random.randint(rng, (N,), 0, 3)
    preds = system.predictors.apply({"params": params["predictors"]}, z)
    expected = cross_modal_prediction(preds, z, masks, target_index=index)
    np.testing.assert_allclose(float(m_a["prediction"]), float(expected), rtol=1e-5)
    assert float(m_a["prediction"]) != pytest.approx(float(m_eval["prediction"]), rel=1e-4)
    assert float(m_a["vicreg"]) == pytest.approx(float(m_eval["vicreg"]), rel=1e-6)


def test_loss_decreases(setup):
    system, params, batch, _, run = setup
    losses = adam_losses(run, params, batch)
    assert losses[-1] < losses[0] * 0.95, losses


def test_one_vs_eight_devices(setup):
    system, params, batch1, batch8, run = setup
    assert batch8["slot_valid"].shape == (8, 1) and batch1["slot_valid"].shape == (1, N)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(batch8, NamedSharding(mesh, P("data")))
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    loss8, m8, g8, z8 = jax.jit(loss_grads_embed(system))(replicated, sharded)
    loss1, m1, g1, z1 = run(params, batch1)
    for m in MODS:
        np.testing.assert_allclose(np.asarray(z8[m]), np.asarray(z1[m]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-5)


def test_probe_heads_on_latents(setup):
    system, params, batch, _, _ = setup
    probe = xmopa.make_system(_config(stage="finetune", targets={"gap": 1, "crystal_system": 7}))
    shapes = jax.eval_shape(probe.init, jax.random.PRNGKey(0), batch)
    assert set(shapes) == set(params) | {"head"}
    # the heads read the concatenated latents of the three modalities (3 x latent_dim = 96)
    assert shapes["head"]["head_gap"]["fc_0"]["kernel"].shape == (96, 32)
    pred = jax.eval_shape(probe.predict, shapes, batch)
    assert pred["gap"].shape == (N,) and pred["crystal_system"].shape == (N, 7)


def test_vicreg_std_hinge_option(setup):
    """``vicreg_use_std`` switches the system's VIC term to the original std hinge (same params)."""
    _, params, batch, _, _ = setup
    system = xmopa.make_system(_config(vicreg_use_std=True))
    loss, metrics, _, z = jax.jit(loss_grads_embed(system))(params, batch)
    masks = _masks(batch)
    l_std = np.mean([float(vicreg(z[m], mask=masks[m], use_std=True)) for m in MODS])
    l_var = np.mean([float(vicreg(z[m], mask=masks[m])) for m in MODS])
    np.testing.assert_allclose(float(metrics["vicreg"]), l_std, rtol=1e-5)
    assert abs(l_std - l_var) > 1e-3  # the two hinges differ on these latents


def test_text_width_is_a_config_key(setup):
    """``system.text_dim`` sets the [CLS] projection's width (the text encoder's output);
    ``head_source="encoder"`` heads read the encoder outputs (crystal 16 + text 24 + xrd 16 in the
    small sizes), ``"latent"`` the three projected latents (3 x 32)."""
    _, _, batch, _, _ = setup
    shapes = {}
    for source in ("encoder", "latent"):
        system = xmopa.make_system(_config(text_dim=24, stage="finetune", targets={"gap": 1}, head_source=source))
        shapes[source] = jax.eval_shape(system.init, jax.random.PRNGKey(0), batch)
    assert shapes["encoder"]["encoder_text"]["fc_0"]["kernel"].shape[-1] == 24
    assert shapes["encoder"]["head"]["head_gap"]["fc_0"]["kernel"].shape[0] == 16 + 24 + 16
    assert shapes["latent"]["head"]["head_gap"]["fc_0"]["kernel"].shape[0] == 3 * 32


def test_an_encoder_is_named_in_the_config(setup):
    """``encoder_overrides.<modality>.name`` builds another encoder for that modality (here the
    XRD fully-convolutional net instead of the CNN), with the other keys as its arguments; the
    system's wiring of its default encoder is not passed to it; it trains (finite loss and
    gradients); an unknown name is one error."""
    _, _, batch, _, _ = setup
    default = xmopa.make_system(_config())
    named = xmopa.make_system(_config(encoder_overrides={"crystal": {"n_conv": 1},
                                                         "xrd": {"name": "xrd_fcn", "embed_dim": 12}}))
    assert type(default.encoders["xrd"]).__name__ == "XrdCNN" and type(named.encoders["xrd"]).__name__ == "XrdFCN"
    params = jax.jit(named.init)(jax.random.PRNGKey(0), batch)
    assert params["projection_xrd"]["out"]["kernel"].shape == (12, 32)  # FCN's 12-d output -> the 32-d latent
    loss, _, grads, z = jax.jit(loss_grads_embed(named))(params, batch)
    assert np.isfinite(float(loss)) and z["xrd"].shape == (N, 32)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads["encoder_xrd"]))
    with pytest.raises(ValueError, match=r"encoder_overrides.xrd.name='xrd_nope'"):
        xmopa.make_system(_config(encoder_overrides={"xrd": {"name": "xrd_nope"}}))
