"""The command line end to end: config locking, kill-and-resume, 2 processes x 4 devices."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from mmjax.train.checkpoint import load_params
from mmjax.train.modes import run_train

HERE = pathlib.Path(__file__).resolve().parent
REPO, TOY_CONFIG = HERE.parents[1], HERE / "toy_config.py"

# One short run shape shared by the resume and multi-process tests and their in-process reference.
OVERRIDES = {"train.steps": 30, "train.log_every": 5, "train.eval_every": 0, "checkpoint.every": 5}


def cli(workdir, *extra):
    return [sys.executable, "-m", "mmjax.main", f"--config={TOY_CONFIG}", f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in OVERRIDES.items()], *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted single-process, 8-device run (in this process)."""
    from toy_config import get_config

    config = get_config()
    for k, v in OVERRIDES.items():
        section, key = k.split(".")
        config[section][key] = v
    workdir = tmp_path_factory.mktemp("reference")
    run_train(config, str(workdir))
    return workdir


def train_losses(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def assert_same_params(a_dir, b_dir):
    a, b = load_params(a_dir), load_params(b_dir)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)


def test_locked_config_rejects_typo_naming_the_key(tmp_path):
    out = subprocess.run(cli(tmp_path, "--config.optim.peek_lr=0.1"), cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "peek_lr" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_out_of_range_value_stops_before_any_work_in_one_line(tmp_path):
    """A negative learning rate is refused before featurising or compiling: one line naming the
    key, no traceback, exit status 2, nothing written."""
    out = subprocess.run(cli(tmp_path / "w", "--config.optim.peak_lr=-0.01"), cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "config.optim.peak_lr=-0.01" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_fractions_out_of_range_are_refused_before_any_work_naming_the_key():
    """Dropout rates, CrabNet's packed-token fraction (also when the head does not read it), the split
    fractions and the budget percentile are checked with the config, each error naming its key; every
    shipped config passes."""
    from mmjax.config_file import load_config
    from mmjax.main import validate_config

    shipped = sorted(p for p in (REPO / "configs").glob("*.py") if p.stem not in ("base", "__init__"))
    assert len(shipped) >= 8
    for path in shipped:
        for arg in ("", ":small"):
            validate_config(load_config(f"{path}{arg}"))
    for key, value, message in (("system.encoder.dropout_rate", 1.5, "config.system.encoder.dropout_rate=1.5: a dropout"),
                                ("system.encoder.dropout_rate", float("nan"), "dropout_rate=nan: a dropout rate"),
                                ("system.packed_tokens", 2.0, "config.system.packed_tokens=2.0: a fraction"),
                                ("data.split", (0.8, 0.3, 0.1), r"config.data.split=\(0.8, 0.3, 0.1\): fractions"),
                                ("data.budget_percentile", 150.0, "config.data.budget_percentile=150.0: must be in")):
        c = load_config(f"{REPO}/configs/crabnet.py:small")
        section, leaf = key.rsplit(".", 1)
        node = c
        for part in section.split("."):
            node = node[part]
        node[leaf] = value
        with pytest.raises(ValueError, match=message):
            validate_config(c)


def parse_config_flags(argv, monkeypatch):
    """main.py's --config flag (locked) on fresh FlagValues; config_flags reads overrides from sys.argv."""
    monkeypatch.setattr(sys, "argv", argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True)
    fv(argv)
    return fv.config


def test_wrong_type_rejected_naming_the_key(monkeypatch):
    with pytest.raises(flags.IllegalFlagValueError, match="steps"):
        parse_config_flags(["prog", f"--config={TOY_CONFIG}", "--config.train.steps=many"], monkeypatch)
    with pytest.raises(Exception, match="peek_lr"):
        parse_config_flags(["prog", f"--config={TOY_CONFIG}", "--config.optim.peek_lr=1"], monkeypatch)
    config = parse_config_flags(["prog", f"--config={TOY_CONFIG}", "--config.train.steps=7",
                                 "--config.optim.peak_lr=3e-4"], monkeypatch)
    assert (config.train.steps, config.optim.peak_lr) == (7, 3e-4)
    assert config.is_locked
    with pytest.raises(AttributeError, match="new_key"):
        config.train.new_key = 1


def test_killed_run_resumes_to_the_same_parameters(reference, tmp_path):
    cmd = cli(tmp_path, "--config.data.delay_s=0.15")  # slow input so the kill lands mid-run
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (tmp_path / "checkpoints" / "10").is_dir():
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stderr.close()
    steps = sorted(int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit())
    assert 10 <= steps[-1] < 30, steps

    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["start_step"] >= 10 and summary["steps"] == 30
    assert_same_params(reference, tmp_path)
    assert train_losses(tmp_path)[30] == pytest.approx(train_losses(reference)[30], rel=1e-6)
    # the steps logged between the last checkpoint and the kill are not repeated
    steps_logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                    if "train/loss" in json.loads(line)]
    assert steps_logged == sorted(set(steps_logged)) == [5, 10, 15, 20, 25, 30]
    assert "cleared the stale lock of dead process" in out.stdout


def test_damaged_latest_checkpoint_is_one_warning_line_and_resumes_from_the_previous(reference, tmp_path):
    """The array files of the newest step truncated (a disk filled mid-copy): the resumed run says
    so in one line, naming the step, moves it aside, resumes from the step before and ends with the
    reference's parameters. None of tensorstore's aborted-read tracebacks (thousands of lines of
    "Event loop is closed" / "Task exception was never retrieved") reach the terminal."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(reference, work)
    assert (work / "checkpoints" / "25").is_dir()
    # every OCDBT data file of the step (orbax keeps the arrays under ocdbt.process_*/d or, once
    # merged, beside the b-tree in state/d: which one varies run to run, so both are cut)
    data = [f for f in (work / "checkpoints" / "30" / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert data
    for f in data:
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    out = subprocess.run(cli(work), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    warned = [line for line in out.stderr.splitlines() if line.startswith("warning: checkpoint step 30 ")]
    assert len(warned) == 1 and "is unreadable: its " in warned[0] and "failed to read" in warned[0], \
        out.stderr[-3000:]
    for noise in ("Traceback", "Event loop is closed", "never retrieved", "TensorStore({"):
        assert noise not in out.stderr, out.stderr[-3000:]
    assert len(out.stderr.splitlines()) < 10, out.stderr[-3000:]
    assert "resumed from step 25" in out.stdout or "resumed from" in out.stdout
    assert (tmp_path / "run" / "checkpoints_corrupt" / "30").is_dir()
    assert_same_params(reference, work)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_of_four_devices_match_one_process_of_eight(reference, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["bash", str(REPO / "launch" / "local_multiprocess.sh"), "-n", "2", "-c", "4", "-p", str(free_port()),
           "--", *cli(tmp_path)[3:]]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 8
    mp, ref = train_losses(tmp_path), train_losses(reference)
    assert sorted(mp) == [5, 10, 15, 20, 25, 30]
    np.testing.assert_allclose([mp[s] for s in sorted(mp)], [ref[s] for s in sorted(mp)], rtol=1e-6)
    assert_same_params(reference, tmp_path)


def test_two_processes_with_device_resident_data_match_one_process(tmp_path):
    """CGCNN :small on the embedded default with the store on every device (data.device_resident=on):
    2 processes x 4 CPU devices train to the parameters of one process with 8 devices."""
    sys.path.insert(0, str(HERE.parent / "systems"))
    from xxact_helpers import load_config

    overrides = {"data.num_materials": 48, "data.num_workers": 0, "data.batch_per_device": 2,
                 "data.device_resident": "on", "data.data_dir": str(tmp_path / "data"), "train.steps": 4,
                 "train.log_every": 2, "train.eval_every": 0, "train.progress": False}
    config = load_config("cgcnn")
    for k, v in overrides.items():
        section, key = k.split(".")
        config[section][key] = v
    run_train(config, str(tmp_path / "one"))  # also featurises into data_dir, which both processes re-use
    args = [f"--config={REPO / 'configs' / 'cgcnn.py'}:small", f"--workdir={tmp_path / 'two'}",
            *[f"--config.{k}={v}" for k, v in overrides.items()]]
    cmd = ["bash", str(REPO / "launch" / "local_multiprocess.sh"), "-n", "2", "-c", "4", "-p", str(free_port()),
           "--", *args]
    out = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 8 and summary["feed"] == "device"
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["feed"] == "device"
    assert_same_params(tmp_path / "one", tmp_path / "two")


def test_predict_reads_the_model_from_the_workdir_and_refuses_model_overrides(tmp_path):
    """Issue 13 item 1 through the CLI: a model trained with --config.system.hidden=24 predicts
    without that override; an override that changes the model is one line naming it; a misspelt
    key is one line too (no traceback), and the workdir is not changed by either."""
    base = [sys.executable, "-m", "mmjax.main", f"--config={TOY_CONFIG}", f"--workdir={tmp_path}"]
    train = subprocess.run(base + ["--config.train.steps=8", "--config.checkpoint.every=4", "--config.system.hidden=24"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "checkpoints").rglob("*"))
    ok = subprocess.run(base + ["--mode=predict"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "system.hidden=24" in ok.stdout and (tmp_path / "predictions.csv").exists()
    bad = subprocess.run(base + ["--mode=predict", "--config.system.hidden=32"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--config.system.hidden=32" in bad.stderr and "trained with 24" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = subprocess.run(base + ["--mode=predict", "--config.system.hiden=32"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "--config.system.hiden: no such key" in typo.stderr and len(typo.stderr.strip().splitlines()) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "checkpoints").rglob("*")) == before
