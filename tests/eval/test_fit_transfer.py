"""fit_predict from pretrained parameters: ``init_from`` (pytree or checkpoint folder) and
``trainable`` groups (frozen encoder + trained head = the X-MoPA / probe protocol).

Uses the toy system of tests/eval/test_fit.py (groups ``encoder`` and ``head``).
"""

import jax
import numpy as np
import pytest

from mmjax.eval.fit import fit_predict
from mmjax.train.checkpoint import Checkpointer

from test_fit import make_store, numpy_toy_forward, toy_config


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    ds = make_store(tmp_path_factory.mktemp("transfer_ds"), 160, seed=3)
    return ds.subset(np.arange(0, 112)), ds.subset(np.arange(112, 136)), ds.subset(np.arange(136, 160))


@pytest.fixture(scope="module")
def pretrained(splits):
    train, val, test = splits
    return fit_predict(toy_config(), train, val, test, target="y", steps=60, batch_size=32, eval_every=30,
                       patience=5, seed=1, keep_params=True).params


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_frozen_encoder_keeps_pretrained_values_and_head_learns(splits, pretrained):
    train, val, test = splits
    res = fit_predict(toy_config(), train, val, test, target="y", steps=40, batch_size=32, eval_every=20,
                      patience=5, seed=7, keep_params=True, init_from=pretrained, trainable=("head",))
    assert res.n_init_loaded == len(jax.tree.leaves(pretrained)) == 6  # 2 Dense encoder layers + head
    assert res.frozen_groups == ("encoder",)
    assert res.summary()["frozen_groups"] == ["encoder"]
    # the encoder is exactly the pretrained one (bit for bit); the head moved away from it
    assert leaves_equal(res.params["encoder"], pretrained["encoder"])
    assert not leaves_equal(res.params["head"], pretrained["head"])
    # predictions are the NumPy forward pass of the returned (pretrained encoder, trained head)
    x = np.stack([test[i]["xrd"] for i in range(len(test))]).astype(np.float64)
    np.testing.assert_allclose(res.predictions, numpy_toy_forward(res.params, x) * res.target_std + res.target_mean,
                               rtol=1e-4, atol=1e-4)


def test_init_from_checkpoint_folder_matches_pytree(tmp_path, splits, pretrained):
    train, val, test = splits
    with Checkpointer(tmp_path / "checkpoints", async_save=False) as ck:
        ck.save(5, {"params": pretrained}, {"step": 5})
    # learning rate 0: the loaded parameters come back unchanged
    cfg = toy_config(lr=0.0)
    from_dir = fit_predict(cfg, train, val, test, target="y", steps=20, batch_size=32, eval_every=20, patience=1,
                           keep_params=True, init_from=str(tmp_path))
    assert from_dir.n_init_loaded == 6 and from_dir.frozen_groups == ()
    assert leaves_equal(from_dir.params, pretrained)
    # same through config.train.init_from (the --mode=finetune route)
    cfg.train.init_from = str(tmp_path)
    via_cfg = fit_predict(cfg, train, val, test, target="y", steps=20, batch_size=32, eval_every=20, patience=1,
                          keep_params=True)
    assert via_cfg.n_init_loaded == 6
    np.testing.assert_array_equal(via_cfg.predictions, from_dir.predictions)


def test_bad_transfer_arguments_are_named(splits, pretrained):
    train, val, test = splits
    with pytest.raises(ValueError, match=r"trainable groups \['decoder'\] are not parameter groups"):
        fit_predict(toy_config(), train, val, test, target="y", steps=5, batch_size=32, trainable=("decoder",))
    wrong = jax.tree.map(lambda a: np.zeros(np.shape(a) + (2,), np.float32), pretrained)
    with pytest.raises(ValueError, match="no parameter array has the path and shape"):
        fit_predict(toy_config(), train, val, test, target="y", steps=5, batch_size=32, init_from=wrong)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        fit_predict(toy_config(), train, val, test, target="y", steps=5, batch_size=32, init_from="/nonexistent/x")
