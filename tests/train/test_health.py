"""Representation-health metrics (issue 12 item 1) on constructed healthy and collapsed embeddings."""

import numpy as np
import pytest

from mmjax.train.health import collapse_warnings, effective_rank, embedding_health, uniformity


def test_effective_rank_hand_cases():
    # centred rows spanning two orthogonal directions with equal singular values -> exactly 2
    x = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], float)
    assert effective_rank(x) == pytest.approx(2.0)
    # singular values 3 and 1: exp(-(3/4 log 3/4 + 1/4 log 1/4))
    y = np.array([[3, 0], [-3, 0], [0, 1], [0, -1]], float) / np.sqrt(2)
    p = np.array([0.75, 0.25])
    assert effective_rank(y) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.ones((5, 4))) == 0.0


def test_uniformity_and_alignment_against_numpy_loops():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    pairs = [np.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(6) for j in range(i + 1, 6)]
    assert uniformity(u) == pytest.approx(np.log(np.mean(pairs)))
    h = embedding_health({"xrd": a, "crystal": 3.0 * a, "text": -a})
    assert h["health/crystal~xrd/alignment"] == pytest.approx(0.0, abs=1e-12)   # same directions
    assert h["health/text~xrd/alignment"] == pytest.approx(4.0)                  # opposite
    assert h["health/crystal/raw_std_mean"] == pytest.approx(3 * h["health/xrd/raw_std_mean"])


def test_healthy_embeddings_raise_no_warning():
    rng = np.random.default_rng(1)
    h = embedding_health({"crystal": rng.normal(size=(512, 32)), "xrd": rng.normal(size=(512, 32))})
    assert h["health/crystal/std_mean"] == pytest.approx(1 / np.sqrt(32), rel=0.1)
    assert h["health/crystal/effective_rank"] > 0.8 * 32
    assert collapse_warnings(h) == []


def test_collapsed_embeddings_are_named():
    rng = np.random.default_rng(2)
    healthy = rng.normal(size=(256, 64))
    direction = rng.normal(size=64)
    line = np.outer(1.0 + 0.01 * rng.normal(size=256), direction)            # every row on one ray
    low_rank = rng.normal(size=(256, 3)) @ rng.normal(size=(3, 64))           # rank 3 of 64
    h = embedding_health({"crystal": healthy, "xrd": line, "text": low_rank})
    warnings = collapse_warnings(h)
    assert len(warnings) == 2
    assert "'xrd'" in warnings[1] and "per-dimension std" in warnings[1] and "effective rank" in warnings[1]
    assert "'text'" in warnings[0] and "effective rank" in warnings[0] and "std" not in warnings[0].split(":")[1]
    assert not any("'crystal'" in w for w in warnings)


def test_pretraining_runs_write_health_rows(tmp_path):
    """--mode=pretrain of the tiny XxaCT-NN: metrics.jsonl gets health/<modality>/... at its eval."""
    import json
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "systems"))
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_modes import tiny_config

    from mmjax.train.modes import run_pretrain

    config = tiny_config()
    with config.unlocked():
        config.pretrain.steps = 2
    run_pretrain(config, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    health = [r for r in rows if any(k.startswith("health/") for k in r)]
    assert len(health) == 1 and health[0]["step"] == 2
    for m in ("composition", "xrd"):
        assert 0 <= health[0][f"health/{m}/effective_rank"] <= health[0][f"health/{m}/dim"]
        assert health[0][f"health/{m}/std_mean"] >= 0
    assert "health/composition~xrd/alignment" in health[0]
