"""The README main command (``python -m mmjax.main --config=configs/xxact.py:small --workdir=...``)
as a subprocess with a few-step override, and config-override checking naming the key."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "xxact.py"

# Tiny, few-step version of the README command (same code path: featurise -> pretrain -> train -> test).
OVERRIDES = {
    "data.num_materials": 24, "data.num_workers": 1, "data.batch_per_device": 4, "data.split": "(0.5,0.25,0.25)",
    "pretrain.steps": 2, "train.steps": 2, "train.log_every": 1, "train.eval_every": 0, "checkpoint.every": 0,
    "system.composition.num_layers": 1, "system.xrd.num_layers": 1, "system.fusion.num_layers": 1,
    "system.composition.d_model": 8, "system.xrd.d_model": 8, "system.fusion.d_model": 16,
}
# A user's machine: one CPU device (the test session's 8 simulated devices are not inherited).
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def main_command(workdir, *extra, arg="small"):
    return [sys.executable, "-m", "mmjax.main", f"--config={CONFIG}:{arg}", f"--workdir={workdir}", *extra]


def test_main_command_trains_end_to_end(tmp_path):
    workdir = tmp_path / "xxact"
    cmd = main_command(workdir, *[f"--config.{k}={v}" for k, v in OVERRIDES.items()])
    out = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)  # not the repo cwd
    assert out.returncode == 0, out.stderr[-4000:]
    assert "run summary" in out.stdout and "test (target units)" in out.stdout
    for stage in (workdir / "pretrain", workdir):
        assert (stage / "checkpoints" / "2").is_dir(), stage
        assert any(p.name.startswith("events.out.tfevents") for p in (stage / "tb").iterdir())
        rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    pre = [json.loads(line) for line in (workdir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert all("train/mxm" in r and "train/clip" in r for r in pre if "train/loss" in r)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["pretrain"]["steps"] == 2 and summary["steps"] == 2
    assert set(summary["test"]) >= {"ewald_energy_per_atom/mae", "crystal_system/accuracy", "space_group/accuracy"}
    assert "initialised" in out.stdout  # supervised stage started from the pretrained parameters
    data = [p for p in (workdir / "data").iterdir() if p.is_dir()]
    assert len(data) == 1 and (data[0] / "manifest.json").is_file()
    manifest = json.loads((data[0] / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 24 and "xrd" in manifest["schema"]


def test_config_typo_is_rejected_naming_the_key(tmp_path):
    out = subprocess.run(main_command(tmp_path, "--config.optim.peek_lr=0.1"), cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "peek_lr" in out.stderr
    assert not (tmp_path / "data").exists()


def parse(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True)
    fv(argv)
    return fv.config


def test_overrides_types_and_tuples(monkeypatch):
    c = parse(["prog", f"--config={CONFIG}:small", "--config.data.targets=('crystal_system',)",
               "--config.pretrain.terms.clip=0.0", "--config.system.fusion.num_layers=3"], monkeypatch)
    assert c.data.targets == ("crystal_system",) and c.pretrain.terms.clip == 0.0 and c.system.fusion.num_layers == 3
    with pytest.raises(flags.IllegalFlagValueError, match="num_layers"):
        parse(["prog", f"--config={CONFIG}:small", "--config.system.fusion.num_layers=deep"], monkeypatch)
    with pytest.raises(Exception, match="mask_ratoi"):
        parse(["prog", f"--config={CONFIG}:small", "--config.system.mask_ratoi=0.1"], monkeypatch)
    with pytest.raises(Exception, match="unknown config argument"):
        parse(["prog", f"--config={CONFIG}:tiny"], monkeypatch)
