"""`benchmarks/matbench.py`'s data and resume logic: the 14,946 linked perovskite rows (real data,
skipped without ../shared) and per-fold resume that refuses folds of other settings."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("bench_matbench", ROOT / "benchmarks" / "matbench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_linked_items_are_the_links_file_with_matbench_labels(shared_data):
    from mmjax.eval.matbench import load_matbench_labels

    mb = _harness()
    labels = load_matbench_labels(mb.LABELS)
    items = mb.structure_items(labels, source="links")
    assert len(items) == 14946 and len({i[0] for i in items}) == 14946
    row_of = {m: i for i, m in enumerate(labels["ids"])}
    rows = [row_of[i[0]] for i in items]
    assert rows == sorted(rows)  # Matbench row order
    assert all(i[2]["e_form"] == float(labels["targets"][r]) for i, r in zip(items[:500], rows[:500]))
    assert items[0][1].lstrip().startswith("System") or "_cell_length_a" in items[0][1]  # POSCAR / CIF text
    energy = mb.structure_items(labels, source="labelled")
    assert len(energy) == 8100 and {i[0] for i in energy} <= {i[0] for i in items}
    with pytest.raises(ValueError, match="structures must be"):
        mb.mbid_links("other")


def test_finished_folds_resume_and_refuse_other_settings(tmp_path):
    mb = _harness()
    settings = {"epochs": 60, "lr": 5e-3, "protocol": "scratch"}
    (tmp_path / "folds").mkdir()
    record = {"fold": 2, "settings": settings, "run": {"mae": 0.05}, "params": {"best_step": 9},
              "predictions": {"mb-perovskites-00001": 1.0}}
    (tmp_path / "folds" / "fold_2.json").write_text(json.dumps(record))
    done = mb.finished_folds(tmp_path, settings)
    assert list(done) == [2] and done[2][0] == {"mb-perovskites-00001": 1.0} and done[2][1]["mae"] == 0.05
    with pytest.raises(ValueError, match=r"fold_2.json was written with other settings \(lr: 0.005 vs 0.001\)"):
        mb.finished_folds(tmp_path, dict(settings, lr=1e-3))
    assert mb.finished_folds(tmp_path / "none", settings) == {}
    # a fold file from before --train-fraction existed is a full-training-set fold
    assert list(mb.finished_folds(tmp_path, dict(settings, train_fraction=1.0))) == [2]
    with pytest.raises(ValueError, match=r"other settings \(train_fraction: 1.0 vs 0.5\)"):
        mb.finished_folds(tmp_path, dict(settings, train_fraction=0.5))


def test_folds_out_of_range_or_repeated_are_refused(capsys):
    mb = _harness()
    for argv, message in ((["--folds", "1", "1", "2"], "--folds names fold(s) [1] more than once"),
                          (["--folds", "5"], "--folds must be in 0..4")):
        with pytest.raises(SystemExit):
            mb.main(argv)
        assert message in capsys.readouterr().err


def test_training_subsets_are_seeded_nested_and_in_order():
    import numpy as np

    mb = _harness()
    rows = np.arange(100, 1100, 3)
    half, three_q = mb.training_subset(rows, 0.5, 7), mb.training_subset(rows, 0.75, 7)
    assert len(half) == round(0.5 * len(rows)) and len(three_q) == round(0.75 * len(rows))
    assert set(half) <= set(three_q) <= set(rows)
    assert (np.diff(half) > 0).all()  # original order kept
    np.testing.assert_array_equal(half, mb.training_subset(rows, 0.5, 7))
    assert set(mb.training_subset(rows, 0.5, 8)) != set(half)
    assert len(mb.training_subset(rows[:3], 0.01, 0)) == 1


def test_fold_pretraining_structures_exclude_the_test_fold_and_unlinked_ones():
    """--pretrain-scope fold: a fold's label-free pretraining set is the structures linked to its
    training rows only; a structure linked to a test row, or to no row, is never in it."""
    mb = _harness()
    links = {"s1": "mb-1", "s2": "mb-2", "s3": "mb-3", "s4": "mb-2"}  # s4: a second structure of row mb-2
    assert mb.fold_structure_ids(links, ["mb-2", "mb-3"]) == ["s2", "s3", "s4"]
    assert mb.fold_structure_ids(links, []) == []
    assert "s1" not in mb.fold_structure_ids(links, ["mb-2", "mb-3", "mb-9"])


def test_pretrain_scope_is_a_setting_that_keeps_old_folds_apart(tmp_path):
    """Folds of a pretraining protocol written before --pretrain-scope existed were pretrained on
    every structure ("all"): a per-fold-pretraining run refuses to resume them, an "all" run takes
    them. A scratch (or --control) run has no pretraining scope, so its old folds still resume."""
    import argparse

    mb = _harness()
    old = {"epochs": 60, "protocol": "xmopa", "control": False}
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "fold_0.json").write_text(json.dumps(
        {"fold": 0, "settings": old, "run": {"mae": 0.3}, "params": {}, "predictions": {}}))
    args = argparse.Namespace(epochs=60, control=False, pretrain_scope="fold")
    with pytest.raises(ValueError, match=r"other settings \(pretrain_scope: 'all' vs 'fold'\)"):
        mb.finished_folds(tmp_path, mb.fold_settings(args, "xmopa"))
    assert list(mb.finished_folds(tmp_path, mb.fold_settings(argparse.Namespace(**{**vars(args), "pretrain_scope": "all"}),
                                                            "xmopa"))) == [0]
    scratch = mb.fold_settings(args, "scratch")
    assert "pretrain_scope" not in scratch and "pretrain_scope" not in mb.fold_settings(
        argparse.Namespace(**{**vars(args), "control": True}), "xmopa")


def test_pretraining_and_downstream_settings_keep_folds_apart(tmp_path):
    """A fold finished with other pretraining steps / lr / batch / source, or another downstream
    form, is refused, not resumed; old fold files count as the protocol's default form (xmopa
    frozen, multimat fine-tuned). A control run carries no pretraining setting (nothing is
    pretrained) but keeps its downstream form; a scratch run carries neither."""
    import argparse

    mb = _harness()
    base = dict(epochs=60, control=False, pretrain_scope="fold", pretrain_steps=600, pretrain_batch=64,
                pretrain_lr=1e-3, pretrain_source="all", downstream="frozen")
    (tmp_path / "folds").mkdir()
    rec = {"fold": 0, "settings": dict(mb.fold_settings(argparse.Namespace(**base), "xmopa")), "run": {"mae": 0.3},
           "params": {}, "predictions": {}}
    (tmp_path / "folds" / "fold_0.json").write_text(json.dumps(rec))
    assert list(mb.finished_folds(tmp_path, mb.fold_settings(argparse.Namespace(**base), "xmopa"))) == [0]
    for key, value in [("pretrain_steps", 2000), ("pretrain_lr", 3e-3), ("pretrain_batch", 128),
                       ("pretrain_source", "labelled"), ("downstream", "finetune")]:
        with pytest.raises(ValueError, match=rf"other settings \({key}: "):
            mb.finished_folds(tmp_path, mb.fold_settings(argparse.Namespace(**{**base, key: value}), "xmopa"))
    old = {k: v for k, v in rec["settings"].items() if k != "downstream"}  # written before --downstream
    (tmp_path / "folds" / "fold_0.json").write_text(json.dumps({**rec, "settings": old}))
    assert list(mb.finished_folds(tmp_path, mb.fold_settings(argparse.Namespace(**base), "xmopa"))) == [0]
    (tmp_path / "folds" / "fold_0.json").write_text(json.dumps({**rec, "settings": {**old, "protocol": "multimat"}}))
    with pytest.raises(ValueError, match=r"downstream: 'finetune' vs 'frozen'"):
        mb.finished_folds(tmp_path, mb.fold_settings(argparse.Namespace(**base), "multimat"))
    control = mb.fold_settings(argparse.Namespace(**{**base, "control": True}), "xmopa")
    # a control pretrains nothing, but its supervised store is the pretraining source's
    assert set(control) & set(mb.PRETRAIN_SETTINGS) == {"pretrain_source"} and control["downstream"] == "frozen"
    assert not set(mb.fold_settings(argparse.Namespace(**base), "scratch")) & {"downstream", *mb.PRETRAIN_SETTINGS}
    # 0 = the protocol preset: a fold that ran the preset matches one that names its values
    preset = argparse.Namespace(**{**base, "pretrain_steps": 0, "pretrain_batch": 0, "pretrain_lr": 0.0})
    assert mb.fold_settings(preset, "xmopa") == mb.fold_settings(argparse.Namespace(**base), "xmopa")
    assert mb.fold_settings(preset, "multimat")["pretrain_steps"] == mb.PRESETS["multimat"]["pretrain_steps"]


def test_a_pretraining_workdir_of_another_request_is_refused_not_reused(tmp_path):
    """A finished (or started) pretraining workdir is reused only for the request it was made
    from: other steps, structures (source bytes) or system settings raise naming the key; a
    workdir that recorded no request raises too; nothing in it is touched."""
    import ml_collections

    mb = _harness()
    src = tmp_path / "src.json.gz"
    src.write_bytes(b"structures A")
    cfg = ml_collections.ConfigDict({"system": {"name": "xmopa", "latent_dim": 64, "hidden": (64,)}})
    req = mb.pretraining_request("xmopa", cfg, src, steps=600, batch=64, lr=1e-3)
    wd = tmp_path / "wd"
    mb.check_pretraining_request(wd, req)  # nothing there yet: fine
    wd.mkdir()
    (wd / "summary.json").write_text(json.dumps({"steps": 600}))
    with pytest.raises(mb.PretrainingMismatch, match="recorded no bench_request.json"):
        mb.check_pretraining_request(wd, req)
    (wd / mb.PRETRAIN_REQUEST).write_text(json.dumps(req))
    mb.check_pretraining_request(wd, req)
    with pytest.raises(ValueError, match=r"other settings \(steps: 600 vs 300\)"):
        mb.check_pretraining_request(wd, mb.pretraining_request("xmopa", cfg, src, steps=300, batch=64, lr=1e-3))
    src.write_bytes(b"structures B")  # another fold's (or --train-fraction's) structure set
    with pytest.raises(ValueError, match=r"other settings \(source_sha256"):
        mb.check_pretraining_request(wd, mb.pretraining_request("xmopa", cfg, src, steps=600, batch=64, lr=1e-3))
    assert json.loads((wd / "summary.json").read_text()) == {"steps": 600}
    # head-only keys are not part of a pretraining request; keys added since take their old value
    src.write_bytes(b"structures A")
    new = ml_collections.ConfigDict({"system": {"name": "xmopa", "latent_dim": 64, "hidden": (64,),
                                                "text_dim": 150, "head_source": "encoder", "head_hidden": (8,)}})
    mb.check_pretraining_request(wd, mb.pretraining_request("xmopa", new, src, steps=600, batch=64, lr=1e-3))
    new.system.text_dim = 64
    with pytest.raises(ValueError, match=r"other settings \(system: "):
        mb.check_pretraining_request(wd, mb.pretraining_request("xmopa", new, src, steps=600, batch=64, lr=1e-3))
