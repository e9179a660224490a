"""Modes end to end on the embedded default (tiny XxaCT-NN): featurise cache, train, probe,
evaluate, predict / embed with ids, and a dataset lacking a modality the config needs."""

import copy
import csv
import json
import sys

import jax
import numpy as np
import pytest

from mmjax.data.sources.prototypes import generate_one
from mmjax.data import cache as data_cache
from mmjax.data import spec as data_spec
from mmjax.train import data as data_lib
from mmjax.train.checkpoint import load_params
from mmjax.train.modes import (MODES, pretrain_config, probe_groups, run_embed, run_evaluate, run_predict, run_probe,
                               run_train)

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "systems"))
from xxact_helpers import load_config  # noqa: E402


def tiny_config(n=40):
    """configs/xxact.py:small on `n` prototype crystals with 1-layer, 8/16-d modules."""
    c = load_config("xxact")
    c.system.composition.update(dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, out_dim=16,
                                     resolution=100))
    c.system.xrd.update(dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, out_dim=16))
    c.system.fusion.update(dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16))
    c.data.num_materials = n
    c.data.num_workers = 0
    c.data.batch_per_device = 2  # 8 simulated devices -> 16 slots
    c.data.split = (0.6, 0.2, 0.2)
    c.data.targets = ("ewald_energy_per_atom", "crystal_system")
    c.pretrain.steps = 0
    c.train.steps = 3
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.progress = False
    c.checkpoint.every = 0
    c.optim.warmup_fraction = 0.0
    c.optim.warmup_steps = 1
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("xxact_run")
    config = tiny_config()
    summary = run_train(config, str(workdir))
    return config, workdir, summary


def test_train_writes_run_files_and_test_metrics(trained):
    config, workdir, summary = trained
    assert (workdir / "checkpoints" / "3").is_dir()
    assert (workdir / "metrics.jsonl").read_text().count("train/loss") == 3
    saved = json.loads((workdir / "summary.json").read_text())
    assert saved["steps"] == 3 and saved["devices"] == 8
    test = saved["test"]
    assert 0.0 <= test["crystal_system/accuracy"] <= 1.0 and test["crystal_system/n"] == 8  # 20 % of 40
    assert np.isfinite(test["ewald_energy_per_atom/mae"]) and test["ewald_energy_per_atom/mae"] > 0
    stats = json.loads((workdir / "targets.json").read_text())
    assert stats["crystal_system"] == {"kind": "class", "offset": 0}
    assert stats["ewald_energy_per_atom"]["kind"] == "regression" and stats["ewald_energy_per_atom"]["std"] > 0


def test_featurised_data_is_cached_and_reused(trained, monkeypatch):
    config, workdir, _ = trained
    folders = [p for p in (workdir / "data").iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("prototypes-")
    data_cache._DATASET_CACHE.clear()

    def refuse(*args, **kwargs):
        raise AssertionError("featurised again instead of re-using the cache")

    monkeypatch.setattr(data_cache, "featurize_dataset", refuse)  # the name prepare_dataset calls
    ds = data_cache.prepare_dataset(config, str(workdir))
    assert str(ds.root) == str(folders[0]) and len(ds) == 40
    # another num_materials is another dataset (its own folder)
    other = tiny_config(n=41)
    assert data_cache.dataset_dir(other, str(workdir)) != str(folders[0])


def test_predict_and_embed_on_an_input_folder_keep_the_ids(trained, tmp_path):
    config, workdir, _ = trained
    inputs = tmp_path / "cifs"
    inputs.mkdir()
    names = ["zeta", "alpha", "mid"]
    for i, name in enumerate(names):
        generate_one(1000 + i).structure.to(filename=str(inputs / f"{name}.cif"))
    cols = run_predict(config, str(workdir), input_path=str(inputs))
    with open(workdir / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["id"] for r in rows) == sorted(names)
    assert set(rows[0]) >= {"id", "ewald_energy_per_atom", "crystal_system"}
    from mmjax.data.schema import CRYSTAL_SYSTEMS

    for r in rows:
        assert 0 <= int(r["crystal_system"]) <= 6 and np.isfinite(float(r["ewald_energy_per_atom"]))
        assert r["crystal_system_name"] == CRYSTAL_SYSTEMS[int(r["crystal_system"])]
    assert list(cols["id"]) == [r["id"] for r in rows]
    with np.load(workdir / "predictions.npz", allow_pickle=False) as z:
        assert z["ids"].tolist() == [r["id"] for r in rows]
        p = z["crystal_system_probabilities"]
        assert p.shape == (3, 7) and np.allclose(p.sum(1), 1.0, atol=1e-5)
        assert (p.argmax(1) == np.array([int(r["crystal_system"]) for r in rows])).all()

    run_embed(config, str(workdir), input_path=str(inputs))
    with np.load(workdir / "embeddings.npz", allow_pickle=False) as z:
        assert sorted(z["ids"].tolist()) == sorted(names)
        assert z["fused"].shape == (3, 16) and z["composition"].shape == (3, 16) and z["xrd"].shape == (3, 16)
        assert np.isfinite(z["fused"]).all()


def test_input_labels_come_back_in_their_own_units_whatever_their_spread(trained, tmp_path):
    """Labels of an --input are batched with the training data's normalisation (targets.json):
    labels far from the training distribution come back exactly in predictions.csv, and the
    evaluate MAE is the one computed from the written columns (they were normalised with the
    input's own mean / std before, then de-normalised with the training one: silently wrong)."""
    config, workdir, _ = trained
    import json as _json

    doc, truth = {}, {}
    for i, value in enumerate([250.0, 260.0, 275.0, 300.0]):
        s = generate_one(2000 + i).structure
        doc[f"x{i}"] = {"poscar": s.to(fmt="poscar"), "ewald_energy_per_atom": value}
        truth[f"x{i}"] = value
    src = tmp_path / "labelled.json"
    src.write_text(_json.dumps(doc))
    cols = run_predict(config, str(workdir), input_path=str(src), output=str(tmp_path / "p.csv"))
    got = dict(zip(cols["id"], np.asarray(cols["ewald_energy_per_atom_true"], np.float64)))
    assert got == pytest.approx(truth, rel=1e-6)
    out = run_evaluate(config, str(workdir), input_path=str(src), output=str(tmp_path / "e.json"))
    pred = np.asarray(cols["ewald_energy_per_atom"], np.float64)
    true = np.array([truth[i] for i in cols["id"]])
    assert out["predict/ewald_energy_per_atom/mae"] == pytest.approx(np.mean(np.abs(pred - true)), rel=1e-5)
    assert out["predict/ewald_energy_per_atom/n"] == 4


def test_input_csv_labels_are_read_whatever_the_column_type(trained, tmp_path, capsys, monkeypatch):
    """An --input CSV's target column is read as the model's target even when pandas types it as
    integers or a cell is not a number (read without targets, only float columns were labels: the
    labels vanished and evaluate scored n = 0 with loss 0); the bad cell names its row; a reused
    featurised input says again what it skipped; an input without that label is said not scored."""
    config, workdir, _ = trained
    rows = [[f"x{i}", generate_one(3000 + i).structure.to(fmt="poscar"), str(v)]
            for i, v in enumerate([-11, -41, -7, 3])] + [["bad", generate_one(3010).structure.to(fmt="poscar"), "abc"]]
    src = tmp_path / "labelled.csv"
    with open(src, "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "poscar", "ewald_energy_per_atom"], *rows])
    cols = run_predict(config, str(workdir), input_path=str(src), output=str(tmp_path / "p.csv"))
    assert list(cols["id"]) == ["x0", "x1", "x2", "x3"]
    assert np.asarray(cols["ewald_energy_per_atom_true"], np.float64) == pytest.approx([-11, -41, -7, 3], rel=1e-6)
    first = capsys.readouterr().out
    assert "bad" in first and "is not a number" in first
    data_cache._DATASET_CACHE.clear()  # as a new command would: the featurised input is found on disk
    out = run_evaluate(config, str(workdir), input_path=str(src), output=str(tmp_path / "e.json"))
    assert out["predict/ewald_energy_per_atom/n"] == 4
    assert "1 skipped when it was featurised" in capsys.readouterr().out  # the reused input says it again
    unlabelled = tmp_path / "unlabelled.csv"
    with open(unlabelled, "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "poscar"], *[r[:2] for r in rows[:4]]])
    out = run_evaluate(config, str(workdir), input_path=str(unlabelled), output=str(tmp_path / "e2.json"))
    assert "predict/ewald_energy_per_atom/n" not in out and out["predict/crystal_system/n"] == 4
    assert "has no label for ['ewald_energy_per_atom']: not scored" in capsys.readouterr().out
    # no label for any target: an error, not a score of nothing
    import mmjax.train.inference as inference
    monkeypatch.setattr(inference, "prediction_metrics", lambda outputs, stats: {f"{n}/n": 0 for n in stats})
    with pytest.raises(ValueError, match=r"no row has a label for \['crystal_system', 'ewald_energy_per_atom'\]"):
        run_evaluate(config, str(workdir), input_path=str(unlabelled), output=str(tmp_path / "e3.json"))


def test_predict_without_input_uses_the_test_split_and_evaluate(trained):
    config, workdir, _ = trained
    cols = run_predict(config, str(workdir))
    ds = data_cache.prepare_dataset(config, str(workdir))
    test_ids = ds.ids[data_spec.split_indices(config, len(ds))["test"]]
    assert sorted(cols["id"]) == sorted(test_ids.tolist())
    # labels are in the output, in target units (crystal system index 0..6)
    truth = np.asarray(cols["crystal_system_true"])
    assert truth.shape == (8,) and set(truth.astype(int)) <= set(range(7))
    out = run_evaluate(config, str(workdir))
    assert out["step"] == 3 and 0.0 <= out["test/crystal_system/accuracy"] <= 1.0
    acc = np.mean(np.asarray(cols["crystal_system"]).astype(int) == truth.astype(int))
    assert out["test/crystal_system/accuracy"] == pytest.approx(acc)


def test_probe_trains_only_the_heads(trained, tmp_path):
    config, workdir, _ = trained
    probe = tiny_config()
    probe.train.init_from = str(workdir)
    probe.data.data_dir = str(workdir / "data")
    probe.train.steps = 2
    groups = probe_groups(__import__("mmjax.systems", fromlist=["x"]).build_system(probe), probe,
                          str(tmp_path / "probe"))
    assert groups == {g: 0.0 for g in ("encoder_composition", "encoder_xrd", "fusion", "mxm_head", "temperature")}
    run_probe(probe, str(tmp_path / "probe"))
    before, after = load_params(workdir), load_params(tmp_path / "probe")
    for group in before:
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[group]), jax.tree.leaves(after[group])))
        assert same == (group != "heads"), group


def test_pretraining_stage_freezes_the_heads_and_switches_the_objective(trained):
    config, workdir, _ = trained
    config = tiny_config()
    config.pretrain.steps = 7
    pre = pretrain_config(config, str(workdir))
    assert pre.optim.groups.to_dict() == {"head": 0.0}
    assert pre.train.steps == 7 and dict(pre.objective.terms) == {"supervised": 0.0, "mxm": 1.0, "clip": 1.0}
    assert dict(config.objective.terms) == {"supervised": 1.0, "mxm": 0.0, "clip": 0.0}  # the original is untouched


def test_probe_and_finetune_need_init_from(tmp_path):
    for mode in ("probe", "finetune"):
        with pytest.raises(ValueError, match="init_from"):
            MODES[mode](tiny_config(), str(tmp_path))


def test_dataset_without_a_needed_modality_is_named(tmp_path):
    path = tmp_path / "comps.csv"
    path.write_text("material_id,formula,y\nm1,NaCl,1.0\nm2,MgO,2.0\nm3,Fe2O3,0.5\n")
    config = tiny_config()
    config.data.source = str(path)
    config.data.targets = ("y",)
    with pytest.raises(ValueError, match="needs modality 'xrd'"):
        data_lib.build_iterator(config, "train", workdir=str(tmp_path))


@pytest.mark.parametrize("system", ["xxact", "cgcnn"])
def test_device_resident_batches_train_to_the_same_parameters(system, tmp_path, caplog):
    """``data.device_resident`` on vs off: the same batches reach the same compiled step, so the
    parameters after training are bit-identical (crystal graphs for CGCNN; a 1-based class label
    shifted to 0-based for XxaCT-NN)."""
    if system == "xxact":
        config = tiny_config()
        config.data.targets = ("ewald_energy_per_atom", "space_group")
    else:
        config = load_config("cgcnn")
        config.data.update(dict(num_materials=40, num_workers=0, batch_per_device=2, split=(0.6, 0.2, 0.2)))
        config.train.update(dict(steps=3, log_every=1, eval_every=0, progress=False))
    config.train.steps = 4
    config.data.data_dir = str(tmp_path / "data")
    params = {}
    for mode in ("off", "on"):
        config.data.device_resident = mode
        with caplog.at_level("INFO", logger="mmjax.train.data"):
            summary = run_train(config, str(tmp_path / mode))
        assert summary["feed"] == {"off": "host", "on": "device"}[mode]
        params[mode] = load_params(tmp_path / mode)
    assert "device-resident batches: 24 records" in caplog.text
    leaves_off, leaves_on = jax.tree.leaves(params["off"]), jax.tree.leaves(params["on"])
    assert jax.tree.structure(params["off"]) == jax.tree.structure(params["on"]) and len(leaves_on) > 3
    for a, b in zip(leaves_off, leaves_on):
        np.testing.assert_array_equal(a, b)


def test_device_resident_auto_respects_the_size_limit_and_rejects_bad_values(tmp_path):
    from mmjax.train.mesh import make_mesh

    config = tiny_config()
    config.data.data_dir = str(tmp_path / "data")
    it = data_lib.build_iterator(config, "train")
    mesh = make_mesh()
    config.data.device_resident_max_mb = 1e-6  # ~1 byte: the store does not fit
    source, put, store = data_lib.device_feed(it, config, mesh)
    assert source is it and store is None and put(next(source))["xrd"].shape[:2] == (8, 2)
    config.data.device_resident_max_mb = 100.0
    source, put, store = data_lib.device_feed(it, config, mesh)
    batch = next(source)
    assert set(batch) == {"record_index"} and batch["record_index"].shape == (8, 2)
    assert 0 < store.nbytes < 2**20 and store.put_fn(mesh)(put(batch))["xrd"].shape[:2] == (8, 2)
    config.data.device_resident = "yes"
    with pytest.raises(ValueError, match="device_resident='yes'"):
        data_lib.device_feed(it, config, mesh)


def test_device_resident_run_resumes_to_the_same_parameters(tmp_path):
    """A device-resident run whose last checkpoint is lost resumes from the one before (the record
    index stream's state is in it) and ends with the same parameters, bit for bit."""
    import shutil

    config = tiny_config()
    config.train.steps = 4
    config.checkpoint.every = 2
    config.checkpoint.keep = 3
    config.data.device_resident = "on"
    config.data.data_dir = str(tmp_path / "data")
    run_train(config, str(tmp_path / "run"))
    full = load_params(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "4")  # as if killed between steps 2 and 4
    summary = run_train(config, str(tmp_path / "run"))
    assert summary["start_step"] == 2 and summary["steps"] == 4 and summary["feed"] == "device"
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(load_params(tmp_path / "run"))):
        np.testing.assert_array_equal(a, b)


def test_embed_after_pretrain_reads_the_pretrained_model_and_moves_nothing(tmp_path):
    """The README's MatBind-style flow on one workdir: --mode=pretrain, then --mode=embed with the
    same config. The pretraining checkpoint (other stage, other optimiser state) is read for its
    parameters and left in place; a model that does not match names its keys and moves nothing."""
    from mmjax.train.checkpoint import CheckpointMismatch
    from mmjax.train.model_folder import ModelOverride
    from mmjax.train.modes import run_pretrain

    config = tiny_config()
    with config.unlocked():
        config.pretrain.steps = 2
    run_pretrain(config, str(tmp_path))
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    out = run_embed(config, str(tmp_path))
    assert out["ids"].shape[0] > 0
    other = tiny_config()
    other.system.composition.update(dict(d_model=16))
    # the same override given on the command line would build another model: refused, naming it
    with pytest.raises(ModelOverride, match=r"--config.system.composition.d_model=16 \(the model in .* trained with 8\)"):
        run_embed(other, str(tmp_path), overrides={"system.composition.d_model": 16})
    # without the model stored (checkpoints of an older version) the parameter check still names the keys
    with pytest.raises(CheckpointMismatch, match=r"composition/embed/kernel: checkpoint \(8, 8\) vs model \(8, 16\)"):
        from mmjax.systems import build_system
        from mmjax.train import inference
        from mmjax.train.data import build_iterator, peek

        inference._restore_params(build_system(other), other, str(tmp_path),
                                  peek(build_iterator(config, "predict", workdir=str(tmp_path))))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert not (tmp_path / "checkpoints_corrupt").exists()


def test_trained_workdir_is_a_self_contained_model_folder(trained, capsys):
    """predict / evaluate with the plain config file (none of the training run's overrides: other
    sizes, other data) read the model and its data settings from the workdir and give the same
    predictions; a data override the user gives (predict_split) is kept."""
    config, workdir, _ = trained
    want = run_predict(config, str(workdir))
    plain = load_config("xxact")  # configs/xxact.py:small as shipped: other widths, 3,000 materials
    assert plain.system.composition.d_model != config.system.composition.d_model
    got = run_predict(plain, str(workdir))
    assert "using the training config stored in" in capsys.readouterr().out
    assert list(got["id"]) == list(want["id"])
    np.testing.assert_allclose(np.asarray(got["ewald_energy_per_atom"], float),
                               np.asarray(want["ewald_energy_per_atom"], float), rtol=1e-6)
    plain.data.predict_split = "all"
    every = run_predict(plain, str(workdir), overrides={"data.predict_split": "all"})
    assert len(every["id"]) == 40
    ev = run_evaluate(load_config("xxact"), str(workdir))
    assert ev["test/crystal_system/n"] == 8


def test_predict_and_embed_to_an_output_path_leave_a_read_only_model_folder_alone(trained, tmp_path):
    import os
    import stat

    config, workdir, _ = trained
    inputs = tmp_path / "cifs"
    inputs.mkdir()
    generate_one(2000).structure.to(filename=str(inputs / "one.cif"))
    before = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*"))
    os.chmod(workdir, stat.S_IRUSR | stat.S_IXUSR)  # read-only model folder (root ignores it: compare listings too)
    try:
        out = tmp_path / "out" / "preds.csv"
        run_predict(config, str(workdir), input_path=str(inputs), output=str(out))
        run_embed(config, str(workdir), input_path=str(inputs), output=str(tmp_path / "out" / "emb.npz"))
    finally:
        os.chmod(workdir, stat.S_IRWXU)
    assert out.exists() and (tmp_path / "out" / "preds.npz").exists() and (tmp_path / "out" / "emb.npz").exists()
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")) == before


def test_a_resumed_run_rebuilds_its_summary_whole_and_logs_no_duplicate_rows(tmp_path):
    """Issue 13 item 5: the same command again on a finished workdir (a resume with nothing left
    to do) keeps the pretrain section and the final metrics, and metrics.jsonl keeps one row per step."""
    config = tiny_config()
    with config.unlocked():
        config.pretrain.steps = 2
    first = run_train(config, str(tmp_path))
    again = run_train(config, str(tmp_path))
    assert again["start_step"] == 3
    for key in ("final_train", "final_eval", "test"):
        assert again[key] == pytest.approx(first[key]) and again[key]
    assert again["pretrain"]["final_train"] == pytest.approx(first["pretrain"]["final_train"])
    assert again["pretrain"]["final_train"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["pretrain"]["steps"] == 2 and saved["final_train"]
    for log in (tmp_path / "metrics.jsonl", tmp_path / "pretrain" / "metrics.jsonl"):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        keys = [(r["step"], r.get("event", ""), min(k.split("/")[0] for k in r if "/" in k) if len(r) > 3 else "")
                for r in rows]
        assert len(keys) == len(set(keys)), log


def test_pretraining_config_on_a_workdir_trained_without_it_is_refused_before_any_work(trained):
    """Supervised checkpoints without a pretraining stage beside them: a config that pretrains is
    refused at once (before the pretraining stage would run and the supervised stage refuse)."""
    from mmjax.train.loop import ConfigMismatch

    config, workdir, _ = trained
    before = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*"))
    other = copy.deepcopy(config)
    with other.unlocked():
        other.pretrain.steps = 2
    with pytest.raises(ConfigMismatch, match=r"without a pretraining stage.*pretrain.steps=2"):
        run_train(other, str(workdir))
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")) == before
