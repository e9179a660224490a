"""MultiMat: every objective = the public objective on the encoders' outputs; masks; training; finetune."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from systems_helpers import (adam_losses, first_batch, loss_grads_embed, make_dataset, paper_system_section,
                             present_masks, set_present)

from mmjax.objectives import (all_pairs_clip, anchored_clip, barlow_twins, barlow_twins_3d, info_nce,
                              tensor_clip)
from mmjax.systems import multimat
from mmjax.train.config import base_config

MODS = ("crystal", "dos", "charge_density", "text")
N = 8
# smallest 3-D ResNeXt (one stage) so the test compiles fast
TINY = {"charge_density": {"blocks": (1,), "planes": (32,), "cardinality": 2, "stem_channels": 8, "norm_groups": 2},
        "crystal": {"num_layers": 1}, "dos": {"num_layers": 1}}


def _config(**overrides):
    c = base_config()
    c.system = paper_system_section("multimat", MODS)
    c.system.encoder_overrides = TINY
    c.system.update(overrides)
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("multimat"), N, MODS,
                      missing={"dos": (1, 6), "charge_density": (3,)}, seed=2)
    batch = first_batch(ds, N, 2, modalities=MODS)
    system = multimat.make_system(_config())  # anchored on crystal (the code's default)
    params = jax.jit(system.init)(jax.random.PRNGKey(0), batch)

    return system, params, batch, jax.jit(loss_grads_embed(system))


def _masks(batch):
    return present_masks(batch, MODS)


def test_objectives_equal_public_functions(setup):
    system, params, batch, run = setup
    loss, _, _, z = run(params, batch)
    masks = _masks(batch)
    assert masks["dos"].sum() == N - 2 and masks["charge_density"].sum() == N - 1
    np.testing.assert_allclose(float(loss), float(anchored_clip(z, masks, 0.2, anchor="crystal")), rtol=1e-5)
    # hand-assembled anchored loss: mean over the three (crystal, m) pairs of masked info_nce
    by_hand = np.mean([float(info_nce(z["crystal"], z[m], 0.2, masks["crystal"] & masks[m]))
                       for m in ("dos", "charge_density", "text")])
    np.testing.assert_allclose(float(loss), by_hand, rtol=1e-5)
    variants = {
        "clip": dict(objective="clip", clip_pair=("crystal", "text")),
        "all_pairs": dict(objective="all_pairs"),
        "anchored_dos": dict(objective="anchored", anchor="dos"),
        "tensor_paper": dict(objective="tensor_clip"),
        "tensor_code_chunked": dict(objective="tensor_clip", tensor_clip_variant="multimat_code", chunk_size=3),
        "barlow_3d": dict(objective="barlow_3d"),
        "barlow": dict(objective="barlow"),
    }
    systems = {name: multimat.make_system(_config(**over)) for name, over in variants.items()}

    @jax.jit  # one program for all variants (eager dispatch of these small losses is slow on CI)
    def both(z, masks):
        all3 = masks["crystal"] & masks["dos"] & masks["charge_density"]
        expected = {
            "clip": info_nce(z["crystal"], z["text"], 0.2, masks["crystal"] & masks["text"]),
            "all_pairs": all_pairs_clip(z, masks, 0.2),
            "anchored_dos": anchored_clip(z, masks, 0.2, anchor="dos"),
            "tensor_paper": tensor_clip(z["crystal"], z["dos"], z["charge_density"], 0.2, present=all3),
            "tensor_code_chunked": tensor_clip(z["crystal"], z["dos"], z["charge_density"], 0.2, present=all3,
                                               variant="multimat_code"),
            "barlow_3d": barlow_twins_3d(z["crystal"], z["dos"], z["charge_density"], 0.0051, True, mask=all3),
            "barlow": barlow_twins(z["crystal"], z["dos"], 0.0051, mask=masks["crystal"] & masks["dos"]),
        }
        got = {name: sys_.pretrain_loss(params, z, masks, None, False)[0] for name, sys_ in systems.items()}
        return got, expected

    got, expected = both(z, masks)
    values = []
    for name in variants:
        np.testing.assert_allclose(float(got[name]), float(expected[name]), rtol=1e-4, err_msg=name)
        values.append(float(got[name]))
    assert len(set(np.round(values, 5))) == len(values)  # the variants really differ


def test_missing_modalities(setup):
    system, params, batch, run = setup
    loss0, _, _, z = run(params, batch)
    # charge density missing everywhere: the anchored loss is the mean of the two other pairs
    loss1, _, g1, _ = run(params, set_present(batch, "charge_density", range(N)))
    masks = _masks(batch)
    expected = np.mean([float(info_nce(z["crystal"], z[m], 0.2, masks["crystal"] & masks[m])) for m in ("dos", "text")])
    np.testing.assert_allclose(float(loss1), expected, rtol=1e-5)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g1))
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g1["encoder_charge_density"])) == 0.0
    # a modality absent from the Batch altogether (e.g. the embedded default has no DOS)
    no_dos = {k: v for k, v in batch.items() if k != "dos"}
    no_dos["present"] = {k: v for k, v in batch["present"].items() if k != "dos"}
    z_no_dos = {k: v for k, v in z.items() if k != "dos"}
    m_no_dos = {k: v for k, v in masks.items() if k != "dos"}
    got = system.pretrain_loss(params, z_no_dos, m_no_dos, None, False)[0]
    np.testing.assert_allclose(float(got), float(anchored_clip(z_no_dos, m_no_dos, 0.2)), rtol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        multimat.make_system(_config(objective="tensor_clip")).pretrain_loss(params, z_no_dos, m_no_dos, None, False)


def test_loss_decreases(setup):
    system, params, batch, run = setup
    losses = adam_losses(run, params, batch)
    assert losses[-1] < losses[0] - 0.05, losses


def test_finetune_linear_head_on_crystal(setup):
    _, _, batch, _ = setup
    crystal_only = {k: v for k, v in batch.items() if k in ("crystal", "slot_valid", "targets", "target_mask")}
    crystal_only["present"] = {"crystal": batch["present"]["crystal"]}
    system = multimat.make_system(_config(stage="finetune", modalities=("crystal",), targets={"gap": 1}))
    params = jax.jit(system.init)(jax.random.PRNGKey(0), crystal_only)
    assert set(params) == {"encoder_crystal", "head"}
    assert set(jax.tree.leaves(system.param_labels(params))) == {"encoder_crystal", "head"}
    (loss, _), pred = jax.jit(lambda p, b: (system.loss(p, b, jax.random.PRNGKey(0), False),
                                            system.predict(p, b)))(params, crystal_only)
    pred = np.asarray(pred["gap"])
    y = batch["targets"]["gap"].reshape(-1)
    lab = (batch["target_mask"]["gap"] & batch["slot_valid"]).reshape(-1)
    np.testing.assert_allclose(float(loss), np.mean((pred[lab] - y[lab]) ** 2), rtol=1e-5)
    # linear head: prediction is affine in the crystal encoder output
    assert set(params["head"]["head_gap"]) == {"out"}


def test_bad_config_errors():
    with pytest.raises(ValueError, match="objective"):
        multimat.make_system(_config(objective="siglip"))
    with pytest.raises(ValueError, match="not among"):
        multimat.make_system(_config(objective="tensor_clip", modalities=("crystal", "dos", "text")))
    with pytest.raises(ValueError, match="finetune"):
        multimat.make_system(_config(stage="finetune"))
