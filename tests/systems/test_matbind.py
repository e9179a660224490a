"""MatBind: hub-and-spoke loss = masked info_nce on the encoders' outputs; missing modalities; training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from systems_helpers import (adam_losses, first_batch, loss_grads_embed, make_dataset, paper_system_section,
                             present_masks, set_present)

from mmjax.objectives import anchored_clip, info_nce
from mmjax.systems import matbind
from mmjax.train.config import base_config

MODS = ("crystal", "xrd", "dos", "text")
N = 8
# tiny 1-D ResNet (one group) so the test compiles fast; the wiring is what is tested here
TINY = {"xrd": {"stem_channels": 8, "group_channels": (8,), "group_blocks": (1,), "groups": 4},
        "crystal": {"num_layers": 1}}


def _system(**overrides):
    c = base_config()
    c.system = paper_system_section("matbind", MODS)
    c.system.encoder_overrides = TINY
    c.system.update(overrides)
    return matbind.make_system(c)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("matbind"), N, MODS, missing={"xrd": (4,)}, seed=1)
    batch = first_batch(ds, N, 2, modalities=MODS)
    system = _system()
    params = jax.jit(system.init)(jax.random.PRNGKey(0), batch)

    return system, params, batch, jax.jit(loss_grads_embed(system))


def _masks(batch):
    return present_masks(batch, MODS)


def test_loss_is_mean_of_spoke_info_nce(setup):
    system, params, batch, run = setup
    loss, metrics, grads, z = run(params, batch)
    assert set(z) == set(MODS) and all(v.shape == (N, 16) for v in z.values())
    masks = _masks(batch)
    assert not masks["xrd"][4] and masks["xrd"].sum() == N - 1
    terms = [float(info_nce(z["crystal"], z[s], 0.07, masks["crystal"] & masks[s])) for s in ("xrd", "dos", "text")]
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["nce/crystal_xrd"]), terms[0], rtol=1e-5)
    # all spokes have valid rows, so the mean equals the library's anchored_clip
    np.testing.assert_allclose(float(loss), float(anchored_clip(z, masks, 0.07, anchor="crystal")), rtol=1e-5)
    # the sum reduction and a text hub (MatBind's paper config), through the same objective code path
    s_sum = _system(spoke_reduction="sum")
    np.testing.assert_allclose(float(s_sum.pretrain_loss(params, z, masks, None, False)[0]), np.sum(terms), rtol=1e-5)
    s_text = _system(central_modality="text")
    expected = np.mean([float(info_nce(z["text"], z[s], 0.07, masks["text"] & masks[s]))
                        for s in ("crystal", "xrd", "dos")])
    np.testing.assert_allclose(float(s_text.pretrain_loss(params, z, masks, None, False)[0]), expected, rtol=1e-5)


def test_missing_modality_leaves_other_pairs_unchanged(setup):
    system, params, batch, run = setup
    _, m0, _, _ = run(params, batch)
    loss1, m1, g1, _ = run(params, set_present(batch, "dos", [0, 1, 2]))
    for pair in ("nce/crystal_xrd", "nce/crystal_text"):
        assert float(m1[pair]) == pytest.approx(float(m0[pair]), rel=1e-6)
    assert float(m1["nce/crystal_dos"]) != pytest.approx(float(m0["nce/crystal_dos"]), rel=1e-3)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g1))
    # DOS missing everywhere: its pair drops out of the mean and the DOS encoder gets zero gradient
    loss2, m2, g2, _ = run(params, set_present(batch, "dos", range(N)))
    assert float(m2["nce/crystal_dos"]) == 0.0
    np.testing.assert_allclose(float(loss2), (float(m0["nce/crystal_xrd"]) + float(m0["nce/crystal_text"])) / 2,
                               rtol=1e-5)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g2))
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g2["encoder_dos"])) == 0.0


def test_loss_decreases(setup):
    system, params, batch, run = setup
    losses = adam_losses(run, params, batch)
    assert losses[-1] < losses[0] - 0.05, losses


def test_bad_config_errors():
    with pytest.raises(ValueError, match="central_modality"):
        _system(central_modality="composition")
    with pytest.raises(ValueError, match="spoke_reduction"):
        _system(spoke_reduction="max")
    with pytest.raises(ValueError, match="no encoder"):
        _system(modalities=("crystal", "charge_density"))
