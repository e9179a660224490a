"""`python -m mmjax.analyze` commands end to end on a tiny XxaCT-NN config (few steps, 32 prototype
crystals), each command's JSON checked against values recomputed independently from the files
it wrote (metrics.jsonl, predictions.csv, embeddings.npz, the stored dataset)."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mmjax.eval.experiments import convergence as convergence_lib, elastic, learning_curve, per_class, probes
from mmjax.config_file import load_config
from mmjax.data.cache import prepare_dataset
from mmjax.data.spec import split_indices

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "xxact.py"

TINY = {
    "data.num_materials": 32, "data.num_workers": 0, "data.batch_per_device": 2, "data.split": (0.5, 0.25, 0.25),
    "pretrain.steps": 2, "train.steps": 4, "train.log_every": 1, "train.eval_every": 0, "train.progress": False,
    "checkpoint.every": 0, "checkpoint.async_save": False,
    "system.composition.num_layers": 1, "system.xrd.num_layers": 1, "system.fusion.num_layers": 1,
    "system.composition.d_model": 8, "system.xrd.d_model": 8, "system.fusion.d_model": 16,
}


def tiny_config(data_dir):
    c = load_config(CONFIG, "small")
    for dotted, value in {**TINY, "data.data_dir": str(data_dir)}.items():
        *path, last = dotted.split(".")
        node = c
        for p in path:
            node = node[p]
        node[last] = value
    c.lock()
    return c


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("analyze")


@pytest.fixture(scope="module")
def config(root):
    return tiny_config(root / "data")


def cli(root, command, workdir, *extra):
    """``python -m mmjax.analyze <command>`` on the tiny config (one featurised cache; one persistent
    compilation cache, so runs with the same shapes compile once across the commands)."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    overrides = [f"--config.{k}={v}" for k, v in {**TINY, "data.data_dir": root / "data"}.items()]
    cmd = [sys.executable, "-m", "mmjax.analyze", command, f"--config={CONFIG}:small", f"--workdir={workdir}",
           *overrides, *extra]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def convergence(root):
    """`xxact-convergence` with variants none + both (clip and mxm differ only in their pretraining
    terms, see `test_variant_configs`); its none-run is the trained model of the later tests."""
    wd = root / "conv"
    done = cli(root, "xxact-convergence", wd, "--variants=both", "--eval_points=4")
    return json.loads((wd / "convergence.json").read_text()), done.stdout, wd


def test_variant_configs(config):
    terms = {v: dict(convergence_lib.variant_config(config, v).pretrain.terms) for v in convergence_lib.VARIANTS}
    assert convergence_lib.variant_config(config, "none").pretrain.steps == 0
    assert terms["clip"] == {"supervised": 0.0, "mxm": 0.0, "clip": 1.0}
    assert terms["mxm"] == {"supervised": 0.0, "mxm": 1.0, "clip": 0.0}
    assert terms["both"] == {"supervised": 0.0, "mxm": 1.0, "clip": 1.0}
    assert all(convergence_lib.variant_config(config, v).train.steps == config.train.steps for v in convergence_lib.VARIANTS)
    with pytest.raises(ValueError, match="unknown variant"):
        convergence_lib.variant_config(config, "vicreg")


def _curve(path, key):
    rows = [json.loads(line) for line in open(path)]
    return [(r["step"], r[key]) for r in rows if key in r]


def test_convergence_from_metrics_logs(convergence):
    res, stdout, wd = convergence
    key = "eval/ewald_energy_per_atom/mae"
    assert res["key"] == key and res["mode"] == "min" and set(res["runs"]) == {"none", "both"}
    curves = {v: _curve(wd / v / "metrics.jsonl", key) for v in ("none", "both")}
    assert [s for s, _ in curves["none"]] == [1, 2, 3, 4]  # train.steps 4, eval_points 4
    thr = min(v for _, v in curves["none"])
    assert res["threshold"] == pytest.approx(thr)
    for v, curve in curves.items():
        first = next((s for s, x in curve if x <= thr), None)
        assert res["runs"][v]["steps_to_threshold"] == first
        assert res["runs"][v]["best"] == pytest.approx(min(x for _, x in curve))
    base = res["runs"]["none"]["steps_to_threshold"]
    both = res["runs"]["both"]["steps_to_threshold"]
    assert res["runs"]["both"]["speedup"] == (pytest.approx(base / both) if both else None)
    assert res["variants"]["both"]["pretrain_steps"] == 2 and res["variants"]["none"]["pretrain_steps"] == 0
    assert (wd / "both" / "pretrain" / "metrics.jsonl").is_file() and not (wd / "none" / "pretrain").exists()
    saved = json.loads((wd / "convergence.json").read_text())
    assert saved["runs"]["none"]["steps_to_threshold"] == base
    assert (wd / "convergence.png").stat().st_size > 1000 and "speedup" in stdout and "Table 2" in stdout


def test_per_class_accuracy_matches_predictions_csv(root, config, convergence):
    out = root / "per_class"
    cli(root, "per-class-accuracy", out, f"--init_from={convergence[2] / 'none'}")
    res = json.loads((out / "per_class_accuracy.json").read_text())
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    ds = prepare_dataset(config)
    test_ids = set(np.asarray(ds.ids)[split_indices(config, len(ds))["test"]])
    assert {r["id"] for r in rows} == test_ids and len(rows) == res["n"] == 8
    from mmjax.data.schema import CRYSTAL_SYSTEMS

    present, labels = ds.column("label/crystal_system")
    true_by_id = dict(zip(np.asarray(ds.ids), labels))
    for r in rows:  # the true labels come from the stored dataset
        assert int(r["crystal_system_true"]) == true_by_id[r["id"]]
    for c in {int(r["crystal_system_true"]) for r in rows}:
        members = [r for r in rows if int(r["crystal_system_true"]) == c]
        hits = sum(r["crystal_system_pred"] == r["crystal_system_true"] for r in members)
        assert res["accuracy"][CRYSTAL_SYSTEMS[c]] == pytest.approx(hits / len(members))
    assert res["accuracy"]["mean"] == pytest.approx(np.mean([r["crystal_system_pred"] == r["crystal_system_true"]
                                                             for r in rows]))
    assert (out / "per_class_accuracy.png").is_file()
    with pytest.raises(ValueError, match="not a classification target"):
        per_class.per_class_accuracy_analysis(config, str(out), target="ewald_energy_per_atom",
                                            init_from=str(convergence[2] / "none"))


def test_learning_curve_subsets_and_fit(root, config):
    sizes = (4, 8, 16)
    ds = prepare_dataset(config)
    train_ids = set(np.asarray(ds.ids)[split_indices(config, len(ds))["train"]])
    subsets = [set(learning_curve.subset_train_iterator(config, None, n).dataset.ids) for n in sizes]
    assert [len(s) for s in subsets] == list(sizes)
    assert subsets[0] <= subsets[1] <= subsets[2] == train_ids  # nested, inside the training split
    with pytest.raises(ValueError, match="outside"):
        learning_curve.train_subset_indices(config, len(ds), 17)
    out = root / "lc"
    cli(root, "learning-curve", out, "--sizes=4,8,16")
    res = json.loads((out / "learning_curve.json").read_text())
    assert res["sizes"] == list(sizes) and [res["runs"][str(n)]["n_train"] for n in sizes] == list(sizes)
    for n in sizes:  # each run's test metrics are those its summary holds
        summary = json.loads((out / f"n{n}" / "summary.json").read_text())
        assert summary["steps"] == 4
        assert res["runs"][str(n)]["test"]["ewald_energy_per_atom/mae"] > 0
    err = np.array([res["runs"][str(n)]["test"]["ewald_energy_per_atom/mae"] for n in sizes])
    b, log_a = np.polyfit(np.log(sizes), np.log(err), 1)
    fit = res["fits"]["ewald_energy_per_atom/mae"]
    assert fit["b"] == pytest.approx(b, rel=1e-6) and fit["a"] == pytest.approx(np.exp(log_a), rel=1e-6)
    assert (out / "learning_curve.png").is_file()


def test_linear_probe_on_frozen_embeddings(root, config, convergence):
    out = root / "probe"
    cli(root, "linear-probe", out, f"--init_from={convergence[2] / 'none'}", "--targets=density")
    res = json.loads((out / "linear_probe.json").read_text())
    assert res["splits"] == {"train": 16, "eval": 8, "test": 8}
    assert set(res["probes"]) == {"composition", "xrd", "fused"}
    emb = np.load(out / "linear_probe" / "embeddings.npz")
    ds = prepare_dataset(config)
    assert sorted(emb["ids"][emb["split_test"]]) == sorted(np.asarray(ds.ids)[split_indices(config, len(ds))["test"]])
    sg = json.loads((out / "linear_probe" / "probe_fused_space_group.json").read_text())
    assert sg["n_classes"] == 231 and sg["test"]["n"] == 8
    # ridge for density on the fused embedding, recomputed with plain numpy at the chosen alpha
    present, dens = ds.column("target/density")
    y_by_id = dict(zip(np.asarray(ds.ids), dens))
    x, ids = emb["fused"].astype(np.float64), emb["ids"]
    y = np.array([y_by_id[i] for i in ids])
    tr, te = emb["split_train"], emb["split_test"]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd == 0] = 1
    xs = (x - mu) / sd
    alpha = res["probes"]["fused"]["density"]["alpha"]
    xc = xs[tr] - xs[tr].mean(0)
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y[tr] - y[tr].mean()))
    pred = xs[te] @ w + (y[tr].mean() - xs[tr].mean(0) @ w)
    assert res["probes"]["fused"]["density"]["test_mae"] == pytest.approx(np.mean(np.abs(pred - y[te])), rel=1e-6)
    assert (out / "linear_probe.png").is_file() and (out / "linear_probe.json").is_file()


def test_finetune_tasks_from_pretrained(root, config, convergence):
    out = root / "ft"
    cli(root, "finetune-tasks", out, f"--init_from={convergence[2] / 'both' / 'pretrain'}", "--targets=density")
    res = json.loads((out / "finetune_tasks.json").read_text())
    task = res["tasks"]["density"]
    summary = json.loads((out / "density" / "summary.json").read_text())
    assert task["test_mae"] == pytest.approx(summary["test"]["density/mae"]) and task["n_test"] == 8
    ds = prepare_dataset(config)
    parts = split_indices(config, len(ds))
    _, y = ds.column("target/density")
    assert task["dummy_mae"] == pytest.approx(np.mean(np.abs(y[parts["test"]] - y[parts["train"]].mean())))
    assert (out / "finetune_tasks.png").is_file()
    with pytest.raises(ValueError, match="not regression targets"):
        probes.finetune_tasks(config, str(out), init_from=str(convergence[2] / "none"), targets=("crystal_system",))


def test_elastic_tensor_probe_on_real_dos(tmp_path, shared_data):
    res, _ = elastic.elastic_tensor_probe(str(shared_data), str(tmp_path), train_head=False)
    ids, x, mask, y = elastic.load_dos_moduli(str(shared_data))
    assert y.shape == (99, 15) and x.shape == (99, 601) and len(set(ids)) == 99  # 99 of 100 have a DOS
    import pandas as pd

    mod = pd.read_csv(shared_data / "dos" / "moduli_mp100.csv.gz").set_index("material_id")
    np.testing.assert_allclose(y, mod.loc[ids, list(elastic.ELASTIC_COLUMNS)].to_numpy())
    test = np.isin(ids, res["test_ids"])
    assert res["n"] == {"train": 59, "val": 20, "test": 20} and test.sum() == 20
    # the baseline: training-mean prediction, per component
    from mmjax.data.splits import random_split

    tr, _, te = random_split(99, (0.6, 0.2, 0.2), seed=0)
    base = np.mean(np.abs(y[tr].mean(0) - y[te]), axis=0)
    got = res["test_mae_per_component"]["train_mean"]
    np.testing.assert_allclose([got[c] for c in elastic.ELASTIC_COLUMNS], base)
    assert res["test_mae"]["ridge"] == pytest.approx(np.mean(list(res["test_mae_per_component"]["ridge"].values())))
    assert (tmp_path / "elastic_tensor.png").is_file()


def test_command_line_usage_errors(root):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    bad = subprocess.run([sys.executable, "-m", "mmjax.analyze", "speedup", f"--workdir={root}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "xxact-convergence" in bad.stderr
    no_cfg = subprocess.run([sys.executable, "-m", "mmjax.analyze", "learning-curve", f"--workdir={root}"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert no_cfg.returncode != 0 and "needs --config" in no_cfg.stderr
