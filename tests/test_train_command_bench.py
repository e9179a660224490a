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


def test_original_runs_each_round_and_gives_the_ratio(tmp_path, monkeypatch):
    """--original cgcnn: original_code.py run-cgcnn on the same CGCNN root_dir once per round (here a
    stand-in that writes its result JSON; the real one needs the torch venv), ratio of medians."""
    import subprocess

    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SystemExit):  # not a CGCNN root_dir
        tc.main(["--config", "configs/cgcnn.py:small", "--source", str(root), "--original", "cgcnn"])
    (root / "id_prop.csv").write_text("a,1\n")
    real_run, seen = subprocess.run, []
    rates = iter([100.0, 300.0])

    def fake_run(cmd, *a, **kw):
        if not str(cmd[1]).endswith("original_code.py"):
            return real_run(cmd, *a, **kw)
        seen.append(cmd)
        rate = next(rates)
        out = pathlib.Path(cmd[cmd.index("--out") + 1])
        out.write_text(json.dumps({"structures_per_s": {"median_after_first": rate, "first_epoch": rate / 5},
                                   "per_epoch": [{"structures_per_s": rate / 5}, {"structures_per_s": rate}]}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(tc.subprocess, "run", fake_run)
    # the variant trains on the embedded default data (the root_dir is only the original's input here)
    args = ["--config", "configs/cgcnn.py:small", "--steps", "4", "--rounds", "2", "--batch", "8",
            "--variant", "a:", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json"),
            "--original", "cgcnn", "--original-epochs", "2"]
    monkeypatch.setattr(tc, "command", lambda a, w, o, _c=tc.command: _c(
        argparse.Namespace(**{**vars(a), "source": ""}), w, o))
    assert tc.main(args + ["--source", str(root)]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert [c[2] for c in seen] == ["run-cgcnn", "run-cgcnn"]
    assert seen[0][seen[0].index("--root") + 1] == str(root.resolve())
    assert res["original"]["median_samples_per_s"] == 200.0  # median of 100 and 300
    a = res["variants"]["a"]
    assert a["ratio_to_original"] == pytest.approx(a["median_samples_per_s"] / 200.0)
