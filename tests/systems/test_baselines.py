"""Unimodal baselines (CGCNN, CrabNet, XRD transformer): loss = NumPy MSE of predict(), overfitting, groups."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.systems import build_system
from xxact_helpers import XRD_PATCH, XRD_TOKENS, first_batch, load_config, make_dataset, tiny_xrd_grid

TINY = {
    "cgcnn": dict(atom_fea_len=8, n_conv=1, h_fea_len=8, element_table=""),
    "crabnet": dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, resolution=100,
                    element_table="", fraction_noise=0.0),
    "xrd_transformer": dict(num_tokens=XRD_TOKENS, patch_size=XRD_PATCH, d_model=8, num_layers=1, num_heads=2,
                            mlp_dim=16),
}
MODALITY = {"cgcnn": "crystal", "crabnet": "composition", "xrd_transformer": "xrd"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("baseline_ds"), n=16)


def tiny_config(name):
    c = load_config(name)
    c.system.encoder.update(TINY[name])
    c.system.head_hidden = (8,) if name == "crabnet" else ()
    if name == "crabnet":  # the MLP head + MSE form; the published head is tested in test_crabnet_published.py
        c.system.head, c.system.loss = "mlp", "mse"
    c.data.targets = ("y",)
    tiny_xrd_grid(c)
    return c


@pytest.mark.parametrize("name", ["cgcnn", "crabnet", "xrd_transformer"])
def test_baseline_loss_matches_numpy_and_overfits(name, dataset):
    batch = first_batch(dataset, 8, 1, (MODALITY[name],), ("y",))
    system = build_system(tiny_config(name))
    assert system.name == name
    params = jax.jit(system.init)(jax.random.PRNGKey(0), batch)
    labels = set(jax.tree.leaves(system.param_labels(params)))
    assert labels == {f"encoder_{MODALITY[name]}", "head"}
    tx = optax.adam(1e-2)
    opt = tx.init(params)
    rng = jax.random.PRNGKey(1)

    @jax.jit
    def step(params, opt):
        (loss, metrics), grads = jax.value_and_grad(system.loss, has_aux=True)(params, batch, rng, True)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss, metrics, grads

    # loss at the initial parameters == NumPy MSE of predict() over labelled slots (record 3 has no y)
    pred = np.asarray(jax.jit(system.predict)(params, batch)["y"], np.float64)
    assert pred.shape == (8,)
    mask = batch["target_mask"]["y"].reshape(-1) & batch["slot_valid"].reshape(-1)
    assert mask.sum() == 7
    y = batch["targets"]["y"].reshape(-1)
    expected = float(np.mean((pred[mask] - y[mask]) ** 2))
    losses = []
    for i in range(30):
        params, opt, loss, metrics, grads = step(params, opt)
        if i == 0:
            assert float(loss) == pytest.approx(expected, rel=1e-4)
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
            assert float(metrics["y/n"]) == 7
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], losses
    emb = jax.jit(system.embed)(params, batch)
    assert set(emb) == {MODALITY[name]} and emb[MODALITY[name]].shape[0] == 8


def test_baseline_without_targets_is_rejected():
    c = tiny_config("crabnet")
    c.data.targets = ()
    with pytest.raises(ValueError, match="needs targets"):
        build_system(c)
