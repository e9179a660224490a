"""benchmarks/train_command.py: variant parsing and the command it runs, and one tiny end-to-end
round of two variants on the embedded default data (samples/s read back from summary.json)."""

import argparse
import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "train_command.py"
spec = importlib.util.spec_from_file_location("train_command_bench", SCRIPT)
tc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tc)


def test_parse_variant_and_command(tmp_path):
    assert tc.parse_variant("padded:system.packed_tokens=0") == ("padded", ["--config.system.packed_tokens=0"])
    assert tc.parse_variant("a:x=1, y=2") == ("a", ["--config.x=1", "--config.y=2"])
    assert tc.parse_variant("plain:") == ("plain", [])
    for bad in (":x=1", "a:x"):
        with pytest.raises(ValueError):
            tc.parse_variant(bad)
    args = argparse.Namespace(config="configs/crabnet.py", work=tmp_path, steps=8, source="d.csv", targets=["target"],
                              batch=16, set=["--config.seed=3"])
    cmd = tc.command(args, tmp_path / "w", ["--config.system.packed_tokens=0"])
    assert cmd[1:3] == ["-m", "mmjax.main"] and "--mode=train" in cmd
    assert {f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.steps=8", "--config.data.source=d.csv",
            "--config.data.targets=('target',)", "--config.data.batch_per_device=16"} <= set(cmd)
    assert cmd[-2:] == ["--config.seed=3", "--config.system.packed_tokens=0"]  # variant overrides last


def test_two_variants_one_round_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    assert tc.main(["--config", "configs/crabnet.py:small", "--steps", "6", "--rounds", "1", "--batch", "16",
                    "--variant", "a:", "--variant", "b:optim.peak_lr=0.001", "--work", str(tmp_path / "w"),
                    "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["variants"]) == {"a", "b"}
    assert res["variants"]["a"]["ratio_to_a"] == 1.0
    assert all(r["samples_per_s"] > 0 for v in res["variants"].values() for r in v["rounds"])
    assert "--config.optim.peak_lr=0.001" in res["variants"]["b"]["rounds"][0]["command"]
