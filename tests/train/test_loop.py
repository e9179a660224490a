"""The loop in-process: outputs, divergence handling, config-mismatch refusal, modes on a finished run."""

import json

import jax
import numpy as np
import pytest

from mmjax.train.checkpoint import Checkpointer, load_params
from mmjax.train.loop import ConfigMismatch, TrainingDiverged, config_differences
from mmjax.train.modes import MODES, run_embed, run_evaluate, run_finetune, run_predict, run_train


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from toy_config import get_config

    workdir = tmp_path_factory.mktemp("run")
    summary = run_train(get_config(), str(workdir))
    return workdir, summary


def test_outputs_of_a_run(finished):
    workdir, summary = finished
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40]
    assert all(r["train/loss"] > 0 and r["perf/samples_per_s"] > 0 for r in train_rows)
    assert [r["step"] for r in rows if "eval/loss" in r] == [20, 40]
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"]  # it learns
    assert list((workdir / "tb").glob("events.out.tfevents.*"))
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["steps"] == 40 and on_disk["devices"] == 8 and on_disk["samples_per_step"] == 16
    assert on_disk["final_eval"]["eval/loss"] == pytest.approx(summary["final_eval"]["eval/loss"])
    best = on_disk["best"]
    assert best["metric"] == "eval/loss" and best["value"] == min(r["eval/loss"] for r in rows if "eval/loss" in r)
    with Checkpointer(workdir / "checkpoints", keep=2, best_metric="eval/loss") as ck:
        assert ck.all_steps()[-2:] == [30, 40] and best["step"] in ck.all_steps()
        assert ck.best_step() == best["step"]


def test_predict_embed_evaluate_modes(finished, toy_config):
    workdir, summary = finished
    preds = run_predict(toy_config, str(workdir))
    emb = run_embed(toy_config, str(workdir))
    # Predict split = 2 eval batches of 8 devices x 2 slots; batch 1 pads one slot per device.
    assert preds["y"].shape == (16 + 8,) and emb["xrd"].shape == (24, 16)
    assert np.all(np.isfinite(preds["y"]))
    with np.load(workdir / "predictions.npz") as z:  # ids in the CSV's row order, then the raw outputs
        assert sorted(z.files) == ["ids", "y"] and z["ids"].tolist() == [str(i) for i in preds["id"]]
    ev = run_evaluate(toy_config, str(workdir))
    assert ev["step"] == 40 and ev["eval/loss"] == pytest.approx(summary["final_eval"]["eval/loss"], rel=1e-6)
    # eval/mse (each batch's masked MSE weighted by its samples: 16 then 8) recomputed from the predictions.
    from mmjax.train.data import synthetic_source

    src, start, mses, weights = synthetic_source(toy_config, "predict"), 0, [], []
    for k in range(2):
        b = src.batch(k)
        valid = b["slot_valid"].reshape(-1)
        y, m = b["targets"]["y"].reshape(-1)[valid], b["target_mask"]["y"].reshape(-1)[valid]
        p = preds["y"][start:start + valid.sum()]
        start += valid.sum()
        mses.append(np.mean((p[m] - y[m]) ** 2))
        weights.append(valid.sum())
    assert weights == [16, 8]
    assert ev["eval/mse"] == pytest.approx(np.average(mses, weights=weights), rel=1e-5)
    with pytest.raises(ValueError, match="init_from"):  # probe needs the pretrained encoders named
        MODES["probe"](toy_config, str(workdir))


def test_finetune_from_pretrained_with_frozen_encoder(finished, toy_config, tmp_path):
    workdir, _ = finished
    toy_config.train.init_from = str(workdir)
    toy_config.train.steps = 6
    toy_config.train.eval_every = 0
    toy_config.optim.groups = {"encoder": 0.0}
    run_finetune(toy_config, str(tmp_path))
    before, after = load_params(workdir), load_params(tmp_path)
    for a, b in zip(jax.tree.leaves(before["encoder"]), jax.tree.leaves(after["encoder"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before["head"]["kernel"], after["head"]["kernel"])


def test_different_config_refused_unless_told(finished, toy_config):
    workdir, _ = finished
    toy_config.optim.peak_lr = 0.5
    with pytest.raises(ConfigMismatch, match=r"optim\.peak_lr: 0\.01 -> 0\.5.*resume_mismatch=True"):
        run_train(toy_config, str(workdir))
    toy_config.resume_mismatch = True
    summary = run_train(toy_config, str(workdir))  # resumes at the final step: nothing left to do
    assert summary["start_step"] == 40


def test_config_differences_ignores_cosmetic_keys():
    old = {"train": {"steps": 10, "log_every": 5}, "a": 1}
    new = {"train": {"steps": 12, "log_every": 1}, "b": 2}
    assert config_differences(old, new) == ["a: 1 -> '<absent>'", "b: '<absent>' -> 2", "train.steps: 10 -> 12"]


def test_nan_loss_stops_naming_step_and_keeps_good_checkpoint(toy_config, tmp_path):
    toy_config.data.nan_at_batch = 12  # batch 12 feeds update number 13
    toy_config.train.log_every = 5
    toy_config.checkpoint.every = 5
    toy_config.train.eval_every = 0
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf at step 13 \(detected at step 15\).*last checkpoint: step 10"):
        run_train(toy_config, str(tmp_path))
    with Checkpointer(tmp_path / "checkpoints") as ck:
        assert ck.all_steps() == [5, 10]
    params = load_params(tmp_path)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "diverged" and "step 13" in last["message"]


def test_keys_added_since_a_run_take_their_old_value_when_it_resumes():
    """A stored X-MoPA config from before ``system.head_source`` / ``system.text_dim`` existed
    resumes under the new config when the new values are the ones it ran with (latent heads;
    16 / 150 text width), and not when they differ; other systems are not waived; the derived XRD
    token count is written into the config a run saves (so old configs that stated 17 match)."""
    from mmjax.config_file import load_config
    from mmjax.systems import build_system
    from mmjax.train.loop import config_differences, config_json

    new = config_json(load_config("configs/xmopa.py:small"))
    old = json.loads(json.dumps(new))
    del old["system"]["head_source"], old["system"]["text_dim"]
    assert config_differences(old, new) == []
    changed = json.loads(json.dumps(new))
    changed["system"]["text_dim"] = 64
    assert config_differences(old, changed) == ["system.text_dim: 16 -> 64"]
    other = {"system": {"name": "multimat"}}
    assert config_differences(other, {"system": {"name": "multimat", "text_dim": 16}}) == [
        "system.text_dim: '<absent>' -> 16"]
    c = load_config("configs/xxact.py:small")
    build_system(c)
    stored_before = config_json(load_config("configs/xxact.py:small"))
    stored_before["system"]["xrd"]["num_tokens"] = 17  # configs stated it before it was derived
    assert config_differences(stored_before, config_json(c)) == []
