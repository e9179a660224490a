"""CrabNet as published: RobustL1, the per-element residual head with the gated average, fraction
jitter, mat2vec, CrabNet's SWA rule and batch rule — each against NumPy or a hand-computed case."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.features.elements import load_element_table
from mmjax.eval.crabnet_protocol import crabnet_batch_size
from mmjax.nn import CrabNet
from mmjax.nn.heads import ResidualMLP, gated_element_average
from mmjax.objectives.supervised import masked_huber, masked_robust_l1, regression_loss
from mmjax.systems import build_system
from mmjax.train.swa import CrabNetSWA
from xxact_helpers import first_batch, load_config, make_dataset, tiny_crabnet_config

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "element_properties"


def test_robust_l1_and_huber_match_numpy():
    rng = np.random.default_rng(0)
    p, s, y = rng.normal(size=6), rng.normal(size=6) * 0.3, rng.normal(size=6)
    mask = np.array([1, 1, 0, 1, 1, 1], bool)
    y_nan = np.where(mask, y, np.nan)
    ref = np.mean((np.sqrt(2) * np.abs(p - y) * np.exp(-s) + s)[mask])
    got = masked_robust_l1(jnp.asarray(p), jnp.asarray(s), jnp.asarray(y_nan), jnp.asarray(mask))
    assert float(got) == pytest.approx(ref, rel=1e-6)
    g = jax.grad(lambda s_: masked_robust_l1(jnp.asarray(p), s_, jnp.asarray(y_nan), jnp.asarray(mask)))(jnp.asarray(s))
    assert np.all(np.isfinite(np.asarray(g))) and float(g[2]) == 0.0  # the missing label gets no gradient
    r = np.abs(p - y)
    huber = np.mean(np.where(r <= 1, 0.5 * r ** 2, r - 0.5)[mask])
    assert float(masked_huber(jnp.asarray(p), jnp.asarray(y_nan), jnp.asarray(mask))) == pytest.approx(huber, rel=1e-6)
    assert float(regression_loss("l1", jnp.asarray(p), jnp.asarray(y_nan), jnp.asarray(mask))) == \
        pytest.approx(np.mean(r[mask]), rel=1e-6)
    with pytest.raises(ValueError, match="log sigma"):
        regression_loss("robust_l1", jnp.asarray(p), jnp.asarray(y), None)
    with pytest.raises(ValueError, match="unknown regression loss"):
        regression_loss("mape", jnp.asarray(p), jnp.asarray(y), None)


def test_gated_average_and_residual_mlp_match_numpy():
    rng = np.random.default_rng(1)
    per = rng.normal(size=(2, 3, 6)).astype(np.float32)  # 2 targets
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    pred, ls = gated_element_average(jnp.asarray(per), jnp.asarray(mask))
    for b in range(2):
        mean = per[b][mask[b]].mean(0)
        sig = 1 / (1 + np.exp(-mean[2::3]))
        np.testing.assert_allclose(np.asarray(pred[b]), mean[0::3] * sig, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ls[b]), mean[1::3], rtol=1e-5)
    mlp = ResidualMLP(hidden=(4, 4, 2), out_dim=3)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    v = mlp.init(jax.random.PRNGKey(0), x)["params"]
    assert "res_1" not in v and {"res_0", "res_2"} <= set(v)  # identity where the width does not change
    h = x.astype(np.float64)
    lrelu = lambda z: np.where(z > 0, z, 0.01 * z)  # noqa: E731
    for i in range(3):
        d = v[f"fc_{i}"]["dense"]
        res = h if f"res_{i}" not in v else h @ np.asarray(v[f"res_{i}"]["dense"]["kernel"])
        h = lrelu(h @ np.asarray(d["kernel"]) + np.asarray(d["bias"])) + res
    ref = h @ np.asarray(v["out"]["dense"]["kernel"]) + np.asarray(v["out"]["dense"]["bias"])
    np.testing.assert_allclose(np.asarray(mlp.apply({"params": v}, x)), ref, rtol=1e-4, atol=1e-5)


def tiny_published(dataset_root):
    return tiny_crabnet_config()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("crabnet_pub"), n=16)


def test_published_crabnet_loss_is_robust_l1_of_predict(dataset):
    c = tiny_published(dataset)
    assert (c.system.head, c.system.loss, c.system.encoder.element_table) == ("crabnet", "robust_l1", "")
    system = build_system(c)
    batch = first_batch(dataset, 8, 1, ("composition",), ("y",))
    params = system.init(jax.random.PRNGKey(0), batch)
    assert set(params) == {"encoder_composition", "head"}
    out = system.predict(params, batch)
    assert set(out) == {"y", "y/log_sigma"} and out["y"].shape == (8,)
    mask = batch["target_mask"]["y"].reshape(-1) & batch["slot_valid"].reshape(-1)
    y = batch["targets"]["y"].reshape(-1)
    p, s = np.asarray(out["y"], np.float64), np.asarray(out["y/log_sigma"], np.float64)
    ref = np.mean((np.sqrt(2) * np.abs(p - y) * np.exp(-s) + s)[mask])
    loss, metrics = system.loss(params, batch, jax.random.PRNGKey(1), True)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert float(metrics["y/robust_l1"]) == pytest.approx(ref, rel=1e-5)
    # an extra, empty element slot changes nothing (padding)
    comp = batch["composition"]
    padded = dict(batch, composition={k: np.concatenate([v, np.zeros_like(v[..., :1])], axis=-1)
                                      for k, v in comp.items()})
    np.testing.assert_allclose(np.asarray(system.predict(params, padded)["y"]), p, rtol=1e-5, atol=1e-6)


def test_head_rejects_classification_and_unknown_loss(dataset):
    c = tiny_published(dataset)
    c.data.targets = ("y", "crystal_system")
    with pytest.raises(ValueError, match="regression targets only"):
        build_system(c)
    c = tiny_published(dataset)
    c.system.loss = "cubic"
    with pytest.raises(ValueError, match="loss 'cubic'"):
        build_system(c)


def test_fraction_jitter_only_in_training():
    """(The jitter reaches the model through the fraction-table index, so it needs the 5000-row table.)"""
    enc = CrabNet(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, resolution=5000, fraction_noise=0.02)
    z = jnp.asarray([[8, 26, 0]])
    f = jnp.asarray([[0.6, 0.4, 0.0]])
    m = jnp.asarray([[True, True, False]])
    v = enc.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, z, f, m)
    a = enc.apply(v, z, f, m, deterministic=True)
    b = enc.apply(v, z, f, m, deterministic=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = enc.apply(v, z, f, m, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(np.asarray(a), np.asarray(c))
    quiet = CrabNet(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, resolution=5000)
    d = quiet.apply(v, z, f, m, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    np.testing.assert_allclose(np.asarray(a), np.asarray(d), rtol=1e-6)


def test_crabnet_swa_rule_by_hand():
    swa = CrabNetSWA(discard_n=2)
    p = lambda x: {"w": jnp.asarray([x])}  # noqa: E731
    assert swa.update(p(1.0), 10.0)          # reset (10 < 0.98e9), buf = 1; minimum 10; add: buf stays 1
    assert swa.n_avg == 2 and float(swa.buffer["w"][0]) == pytest.approx(1.0)
    assert swa.update(p(4.0), 10.05)         # no reset (10.05 >= 9.8); 10.05 <= 10.1: add with (1/3)^(1/3)
    d = (1 / 3) ** (1 / 3)
    assert float(swa.buffer["w"][0]) == pytest.approx(1 + 3 * d, rel=1e-6)
    assert not swa.update(p(9.0), 11.0)      # no minimum: buffer unchanged
    assert float(swa.buffer["w"][0]) == pytest.approx(1 + 3 * d, rel=1e-6)
    assert swa.update(p(2.0), 9.0)           # 9 < 0.98 * 10: reset to 2, then added again
    assert swa.n_avg == 2 and float(swa.averaged(p(0.0))["w"][0]) == pytest.approx(2.0)
    swa.end_epoch(False)
    assert not swa.stop
    swa.end_epoch(True)
    swa.end_epoch(False)
    assert swa.stop
    assert float(CrabNetSWA().averaged(p(5.0))["w"][0]) == 5.0  # no average taken: the weights as they are


def test_crabnet_batch_rule():
    # train_crabnet.py: 2 ** round(log2(N) - 4), clipped to [2^7, 2^12]
    assert crabnet_batch_size(3428) == 256 and crabnet_batch_size(19330) == 1024
    assert crabnet_batch_size(100) == 128 and crabnet_batch_size(10 ** 6) == 4096
    with pytest.raises(ValueError):
        crabnet_batch_size(0)


def test_element_table_loader_on_fixtures(tmp_path):
    csv_path = tmp_path / "tiny.csv"
    csv_path.write_text("element,a,b\nO,1.5,2\nH,0.5,\nFe,3,4\n")
    t = load_element_table(str(csv_path))
    assert t.shape == (27, 2) and not t[0].any() and not t[2].any()
    np.testing.assert_array_equal(t[[1, 8, 26]], [[0.5, 0.0], [1.5, 2.0], [3.0, 4.0]])
    js = tmp_path / "atom_init.json"
    js.write_text('{"1": [0, 1], "3": [1, 0]}')
    np.testing.assert_array_equal(load_element_table(str(js)), [[0, 0], [0, 1], [0, 0], [1, 0]])
    bad = tmp_path / "bad.csv"
    bad.write_text("element,a\nXx,1\n")
    with pytest.raises(ValueError, match="line 2: 'Xx' is not an element"):
        load_element_table(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_element_table(str(tmp_path / "missing.csv"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/element_properties is not beside the repository")
def test_shared_tables_mat2vec_and_cgcnn_atom_init():
    m = load_element_table("mat2vec")
    assert m.shape == (119, 200) and not m[0].any() and np.all(np.abs(m[1:]).sum(1) > 0)
    a = load_element_table("cgcnn_atom_init")
    assert a.shape == (101, 92) and set(np.unique(a)) == {0.0, 1.0} and np.all(a[1:].sum(1) >= 1)


def test_torch_dense_init_scale():
    """PyTorch nn.Linear init: kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (std 1/sqrt(3 fan_in))."""
    from mmjax.nn.heads import TorchDense

    v = TorchDense(400).init(jax.random.PRNGKey(0), jnp.zeros((1, 300)))["params"]["dense"]
    k, b = np.asarray(v["kernel"]), np.asarray(v["bias"])
    bound = 1 / np.sqrt(300)
    assert np.abs(k).max() <= bound and np.abs(b).max() <= bound and np.abs(b).max() > 0.8 * bound
    assert k.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_predict_mode_writes_sigma_for_robust_l1(tmp_path):
    """configs/crabnet.py with the published head + RobustL1 through the real train/predict modes:
    predictions.csv carries <target>_sigma = exp(log sigma) x std (positive, target units)."""
    import csv

    from mmjax.train.modes import run_predict, run_train

    c = load_config("crabnet")  # :small (learned element table, no data folder needed)
    c.system.head, c.system.loss = "crabnet", "robust_l1"
    c.system.head_hidden = (8, 4)
    c.system.encoder.update(dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, resolution=100,
                                 fraction_noise=0.02))
    c.data.num_materials, c.data.num_workers, c.data.batch_per_device = 40, 0, 2
    c.train.steps, c.train.eval_every, c.train.progress, c.checkpoint.every = 3, 0, False, 0
    run_train(c, str(tmp_path))
    cols = run_predict(c, str(tmp_path))
    name = c.data.targets[0]
    assert f"{name}_sigma" in cols and np.all(np.asarray(cols[f"{name}_sigma"]) > 0)
    with open(tmp_path / "predictions.csv") as fh:
        header = next(csv.reader(fh))
    assert f"{name}_sigma" in header


def test_transformer_torch_init_bounds():
    from mmjax.nn.transformer import TransformerBlock

    blk = TransformerBlock(num_heads=4, mlp_dim=64, pre_norm=False, torch_init=True)
    v = blk.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 32)))["params"]
    q = np.asarray(v["attn"]["query"]["kernel"])
    assert np.abs(q).max() <= np.sqrt(6 / (4 * 32)) and np.abs(q).max() > 0.9 * np.sqrt(6 / (4 * 32))
    assert not np.asarray(v["attn"]["query"]["bias"]).any() and not np.asarray(v["attn"]["out"]["bias"]).any()
    f2 = np.asarray(v["ffn"]["fc2"]["kernel"])
    assert np.abs(f2).max() <= 64 ** -0.5 and np.abs(np.asarray(v["ffn"]["fc2"]["bias"])).max() > 0


def test_crabnet_protocol_end_to_end_on_a_tiny_set(tmp_path):
    """fit_predict_crabnet runs CrabNet's procedure: epochs cut to a multiple of 2, SWA updates in
    every second epoch, predictions and sigma for every test row (finite, sigma > 0)."""
    from mmjax.eval.crabnet_protocol import fit_predict_crabnet

    ds = make_dataset(tmp_path / "ds", n=40)
    c = tiny_published(ds)
    c.system.encoder.dropout_rate = 0.1  # exercises the eval-mode (no-dropout) step of SWA epochs
    tr, va, te = ds.subset(np.arange(0, 25)), ds.subset(np.arange(25, 32)), ds.subset(np.arange(32, 40))
    res = fit_predict_crabnet(c, tr, va, te, target="y", epochs=5, epochs_step=1, batch_size=8, seed=0)
    assert res.batch_size == 8 and res.steps_per_epoch == 3  # 20 labelled training rows
    assert res.epochs_run == 4 and [h["epoch"] for h in res.history] == [0, 1, 2, 3]
    assert ["swa/minimum_found" in h for h in res.history] == [False, True, False, True]
    assert res.swa["updates"] == 6  # one per batch of the two SWA epochs
    assert res.predictions.shape == (8,) and np.all(np.isfinite(res.predictions)) and np.all(res.sigma > 0)


def test_crabnet_protocol_epochs_step_10_is_the_table_2_schedule(tmp_path):
    """The default epochs_step = 10 (the code behind Table 2): the cyclic rate rises for 10 epochs
    and falls for 10, SWA epochs are only those with (e + 1) % 20 == 0 (e >= 19), and the epoch cap
    is cut to a multiple of 20."""
    from mmjax.eval.crabnet_protocol import fit_predict_crabnet
    from mmjax.train.optim import build_schedule

    ds = make_dataset(tmp_path / "ds", n=40)
    c = tiny_published(ds)
    tr, va, te = ds.subset(np.arange(0, 25)), ds.subset(np.arange(25, 32)), ds.subset(np.arange(32, 40))
    res = fit_predict_crabnet(c, tr, va, te, target="y", epochs=45, batch_size=8, seed=0, discard_n=1)
    swa_epochs = [h["epoch"] for h in res.history if "swa/minimum_found" in h]
    assert res.epochs_run <= 40 and swa_epochs == [e for e in (19, 39) if e < res.epochs_run]
    assert res.swa["updates"] == 3 * len(swa_epochs)  # every batch of each SWA epoch
    cfg = c.optim
    cfg.steps_per_epoch, cfg.cycle_half_epochs = res.steps_per_epoch, 10
    lr = np.asarray([float(build_schedule(cfg, 120)(i)) for i in range(0, 61, 3)])
    assert np.isclose(lr[0], 1e-4) and np.isclose(lr[10], 6e-3) and np.isclose(lr[20], 1e-4)  # 30 steps up, 30 down
    assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:]) < 0)


def test_crabnet_protocol_resumes_after_a_kill_to_the_same_predictions(tmp_path):
    """A fit stopped after epoch 2 (here: the log callback raises, as a kill would end it) and run
    again on the same resume folder continues at epoch 3 (SWA state, data position, history
    restored) and gives the uninterrupted run's predictions; other settings are refused."""
    import json

    from mmjax.eval.crabnet_protocol import ResumeMismatch, fit_predict_crabnet

    ds = make_dataset(tmp_path / "ds", n=40)
    c = tiny_published(ds)
    c.system.encoder.dropout_rate = 0.1
    tr, va, te = ds.subset(np.arange(0, 25)), ds.subset(np.arange(25, 32)), ds.subset(np.arange(32, 40))
    kw = dict(target="y", epochs=6, epochs_step=1, batch_size=8, seed=0)
    want = fit_predict_crabnet(c, tr, va, te, **kw)

    class Killed(Exception):
        pass

    def kill_after_epoch_2(line):
        if line.strip().startswith("epoch 2 "):
            raise Killed

    progress = tmp_path / "progress.jsonl"
    with pytest.raises(Killed):
        fit_predict_crabnet(c, tr, va, te, **kw, log=kill_after_epoch_2, resume_dir=str(tmp_path / "resume"),
                            progress_path=str(progress))
    lines = []
    got = fit_predict_crabnet(c, tr, va, te, **kw, log=lines.append, resume_dir=str(tmp_path / "resume"),
                              progress_path=str(progress))
    assert any("resumed after epoch 2" in line for line in lines)
    assert [h["epoch"] for h in got.history] == [h["epoch"] for h in want.history]
    assert [json.loads(r)["epoch"] for r in progress.read_text().splitlines()] == [h["epoch"] for h in want.history]
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_array_equal(got.sigma, want.sigma)
    assert got.swa == want.swa
    with pytest.raises(ResumeMismatch, match=r"seed|epochs"):
        fit_predict_crabnet(c, tr, va, te, target="y", epochs=8, epochs_step=1, batch_size=8, seed=0,
                            resume_dir=str(tmp_path / "resume"))


def test_identical_layers_start_as_copies_of_the_first_and_then_train_apart(dataset):
    """``identical_layers`` (the published config): every transformer layer's initial parameters
    equal the first layer's, as PyTorch's TransformerEncoder deep-copies its layer; without it
    they differ; the head and embedding are untouched by the switch."""
    from mmjax.data.pipeline import make_batches
    from mmjax.systems import build_system

    assert load_config("crabnet", None).system.identical_layers is True
    c = tiny_published(dataset.root)
    c.system.encoder.num_layers = 3
    batch = next(make_batches(dataset, 8, modalities=["composition"], targets=["y"]))
    on = build_system(c).init(jax.random.PRNGKey(1), batch)
    c.system.identical_layers = False
    off = build_system(c).init(jax.random.PRNGKey(1), batch)
    enc_on, enc_off = on["encoder_composition"]["encoder"], off["encoder_composition"]["encoder"]
    for i in (1, 2):
        for a, b in zip(jax.tree.leaves(enc_on[f"block_{i}"]), jax.tree.leaves(enc_on["block_0"])):
            np.testing.assert_array_equal(a, b)
    q = lambda p, i: np.asarray(p[f"block_{i}"]["attn"]["query"]["kernel"])  # noqa: E731
    assert not np.array_equal(q(enc_off, 1), q(enc_off, 0))
    np.testing.assert_array_equal(q(enc_on, 0), q(enc_off, 0))
    for a, b in zip(jax.tree.leaves(on["head"]), jax.tree.leaves(off["head"])):
        np.testing.assert_array_equal(a, b)
