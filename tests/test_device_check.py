"""benchmarks/device_check.py --cpu-smoke: every key measured (no error), pooling variants agree,
chunked TensorCLIP equals the naive value, README rows written. Numbers are not checked (a benchmark)."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_cpu_smoke_writes_every_key(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--cpu-smoke",
                          "--out", str(tmp_path), "--budget-min", "30"], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "cpu.json").read_text())
    keys = ("xxact_paper", "cgcnn_paper", "matbind_paper", "tensorclip_4096", "segment_pooling")
    for key in keys:
        assert key in result and "error" not in result[key] and "skipped" not in result[key], (key, result.get(key))
    assert result["xxact_paper"]["samples_per_s"] > 0 and result["xxact_paper"]["recompiles"] is not None
    assert set(result["cgcnn_paper"]) >= {"batch_16", "batch_32"}
    t = result["tensorclip_4096"]
    assert t["loss"] == pytest.approx(t["naive_loss"], rel=1e-4)
    for case in ("edge_to_node", "node_to_graph"):
        row = result["segment_pooling"][case]
        assert row["fastest"] in ("segment", "sorted", "onehot")
        assert max(row[m]["max_abs_diff"] for m in ("segment", "sorted", "onehot")) < 1e-3
    md = (tmp_path / "cpu.md").read_text()
    assert md.count("\n| 2") >= 6 and "XxaCT-NN paper" in md
