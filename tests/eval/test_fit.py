"""fit_predict: learns a tiny synthetic task, restores the best validation step, keys predictions by id.

The toy system (Dense -> gelu -> Dense -> Dense on ``xrd`` [16]) keeps compiles short; its forward
pass is re-implemented in NumPy to check the returned predictions row by row.
"""

import numpy as np
import pytest

from mmjax.data import store, store_writer
from mmjax.data.normalise import moments
from mmjax.eval.fit import fit_predict, target_values
from mmjax.systems.toy import toy_system_config
from mmjax.train.config import base_config
from mmjax.train.optim import optim_config

L = 16
W = np.random.default_rng(123).normal(size=L) / np.sqrt(L)


def make_store(root, n, sign=1.0, seed=0, prefix="m"):
    """n records: xrd ~ N(0, 1) [16], y = sign * (3 x.w + 5) (+ NaN label on every 7th record)."""
    rng = np.random.default_rng(seed)
    writer = store_writer.StoreWriter(root, records_per_file=64)
    for i in range(n):
        x = rng.normal(size=L).astype(np.float32)
        y = np.nan if i % 7 == 6 else sign * (3.0 * float(x @ W) + 5.0)
        writer.add(f"{prefix}-{i:03d}", {"xrd": x, "target/y": np.float32(y)})
    store_writer.finish_manifest(root, writer, skipped=[], num_input=n)
    return store.Dataset.open(root)


def toy_config(lr=3e-2):
    c = base_config()
    c.system = toy_system_config()
    c.system.dropout = 0.0
    c.data.modalities = ("xrd",)
    c.optim = optim_config("generic", peak_lr=lr)
    c.train.progress = False
    return c


def numpy_toy_forward(params, x):
    gelu = lambda h: 0.5 * h * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (h + 0.044715 * h**3)))  # noqa: E731
    enc = params["encoder"]
    h = gelu(x @ enc["Dense_0"]["kernel"] + enc["Dense_0"]["bias"])
    h = h @ enc["Dense_1"]["kernel"] + enc["Dense_1"]["bias"]
    return (h @ params["head"]["kernel"] + params["head"]["bias"])[:, 0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = make_store(tmp_path_factory.mktemp("fit_ds"), 200)
    return {"train": ds.subset(np.arange(0, 140)), "val": ds.subset(np.arange(140, 170)),
            "test": ds.subset(np.arange(199, 169, -1))}  # test in reversed order


def test_fit_predict_learns_and_keys_predictions_by_id(data):
    res = fit_predict(toy_config(), data["train"], data["val"], data["test"], target="y", steps=300,
                      batch_size=32, eval_every=50, patience=10, keep_params=True)
    y_train, y_test = target_values(data["train"], "y"), target_values(data["test"], "y")
    ok = np.isfinite(y_test)
    mean_mae = np.mean(np.abs(y_test[ok] - np.nanmean(y_train)))
    mae = np.mean(np.abs(res.predictions[ok] - y_test[ok]))
    assert mae < 0.25 * mean_mae, (mae, mean_mae)
    # normalisation from the training rows only (NaN labels ignored), population std
    finite = y_train[np.isfinite(y_train)]
    assert (res.target_mean, res.target_std) == pytest.approx((finite.mean(), finite.std()))
    assert res.counts == {"train": int(np.isfinite(y_train).sum()), "val": 26, "test": 30}
    # predictions are aligned with test.ids (reversed store order) and equal a NumPy forward pass
    assert list(res.ids) == [f"m-{i:03d}" for i in range(199, 169, -1)]
    assert list(res.as_dict()) == list(res.ids)
    x_test = np.stack([data["test"][i]["xrd"] for i in range(len(data["test"]))]).astype(np.float64)
    expected = numpy_toy_forward(res.params, x_test) * res.target_std + res.target_mean
    np.testing.assert_allclose(res.predictions, expected, rtol=1e-4, atol=1e-4)


def test_early_stopping_restores_best_validation_step(tmp_path, data):
    # validation labels are the negated training relation: the better the fit, the worse val gets
    anti = make_store(tmp_path / "anti", 40, sign=-1.0, seed=5, prefix="a")
    res = fit_predict(toy_config(), data["train"], anti, anti, target="y", steps=600, batch_size=32,
                      eval_every=20, patience=3)
    vals = [h["val/mae"] for h in res.history]
    best = int(np.argmin(vals))
    assert res.best_step == res.history[best]["step"]
    assert res.steps_run == res.best_step + 3 * 20 < 600  # stopped after 3 evaluations without a new best
    assert vals[-1] > res.best_val_mae
    # the returned predictions come from the best step's parameters: their val MAE is the best one
    y = target_values(anti, "y")
    ok = np.isfinite(y)
    assert np.mean(np.abs(res.predictions[ok] - y[ok])) == pytest.approx(res.best_val_mae, rel=1e-5)


def test_bad_inputs_are_named(data):
    with pytest.raises(KeyError, match="no regression target 'gap'"):
        fit_predict(toy_config(), data["train"], data["val"], data["test"], target="gap", steps=10, batch_size=32)
    with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
        fit_predict(toy_config(), data["train"], data["val"], data["test"], target="y", steps=10, batch_size=12)
    with pytest.raises(ValueError, match="no finite target values"):
        moments(np.array([np.nan, np.inf]))
