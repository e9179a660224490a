"""Throughput harness (benchmarks/throughput.py) and the batched device put the prefetcher uses.

Speed itself is never asserted here: only that the columns are computed right (hand-computed
cases), that the interleaved timing feeds the right batches, and that the GPU-only columns
(TFLOP/s, MFU against a given peak) are produced on CPU.
"""

import pathlib
import sys

import jax
import numpy as np
import pytest

from mmjax.train import mesh as mesh_lib
from mmjax.train.data import SyntheticBatches
from mmjax.train.prefetch import batch_put_fn

BENCH = str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks")
sys.path.insert(0, BENCH)
import throughput  # noqa: E402

sys.path.remove(BENCH)  # benchmarks/matbench.py would shadow the matbench package for every later test


def test_columns_hand_computed():
    # 2e12 FLOP per step in 0.5 s on 2 devices, 64 slots, peak 4 TFLOP/s per device
    c = throughput.throughput_columns(2e12, 0.5, 64, 2, 4.0)
    assert c["samples_per_s"] == pytest.approx(128.0) and c["samples_per_s_per_device"] == pytest.approx(64.0)
    assert c["gflop_per_step"] == pytest.approx(2000.0) and c["gflop_per_sample"] == pytest.approx(31.25)
    assert c["tflops_per_device"] == pytest.approx(2.0) and c["mfu"] == pytest.approx(0.5)
    assert throughput.throughput_columns(2e12, 0.5, 64, 2, None)["mfu"] is None
    none = throughput.throughput_columns(None, 0.25, 8, 1, 989.0)
    assert none["samples_per_s"] == pytest.approx(32.0) and none["tflops_per_device"] is None and none["mfu"] is None


def test_peak_by_device_kind():
    assert throughput.peak_tflops("NVIDIA H200") == 989.0 and throughput.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert throughput.peak_tflops("TPU v5 lite") == 197.0 and throughput.peak_tflops("cpu") is None


def test_batched_put_equals_host_to_global_and_copies():
    mesh = mesh_lib.make_mesh()
    host = SyntheticBatches(jax.device_count(), 3, 5, seed=1).batch(1)
    fast, ref = batch_put_fn(mesh)(host), mesh_lib.host_to_global(host, mesh)
    assert jax.tree.structure(fast) == jax.tree.structure(ref)
    for f, r, h in zip(jax.tree.leaves(fast), jax.tree.leaves(ref), jax.tree.leaves(host)):
        assert isinstance(f, jax.Array) and f.sharding == r.sharding == mesh_lib.batch_sharding(mesh)
        assert f.dtype == r.dtype and f.shape == h.shape
        np.testing.assert_array_equal(np.asarray(f), h)
    before = np.asarray(fast["xrd"]).copy()
    host["xrd"][...] = 7.0  # the device batch does not alias the host buffers
    np.testing.assert_array_equal(np.asarray(fast["xrd"]), before)
    with pytest.raises(ValueError, match=r"shape \(3, 5\) lacks the leading local-device axis"):
        batch_put_fn(mesh)({"xrd": np.zeros((3, 5), np.float32)})


def test_interleaved_passes_feed_cached_and_pipeline_batches():
    """A fake step records what it gets: warm-up + alternating rounds, one untimed feed step each."""
    seen = []

    def step(state, batch):
        seen.append(batch)
        return state + 1, np.zeros(())

    class Feed:
        opened = 0

        def __init__(self):
            Feed.opened += 1
            self.k = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def __next__(self):
            self.k += 1
            return f"feed{self.k}"

    res = throughput.measure_interleaved(step, np.int64(0), ["c0", "c1"], Feed, steps=3, n_repeat=2, n_warmup=1)
    assert seen == ["c0",                                   # warm-up
                    "c0", "c1", "c0", "feed1", "feed2", "feed3", "feed4",   # round 0: cached, pipeline
                    "feed1", "feed2", "feed3", "feed4", "c0", "c1", "c0"]   # round 1: pipeline, cached
    assert Feed.opened == 2 and res["state"] == len(seen)
    assert len(res["cached_s"]) == len(res["pipeline_s"]) == 2
    assert res["cached_step_s"] == pytest.approx(np.median(res["cached_s"]))


def test_toy_row_gives_mfu_with_a_given_peak_and_no_recompiles():
    system, config = throughput.ROWS["toy"]("small", 2)
    row = throughput.benchmark_system(system, config, n_warmup=1, n_repeat=2, steps=2, prefetch=1, peak=0.5)
    n = jax.device_count()
    assert row["samples_per_step"] == 2 * n and row["devices"] == n and row["recompiles"] == 0
    L, h = config.data.length, config.system.hidden  # Dense(L->h), Dense(h->h), Dense(h->1)
    assert row["params"] == (L * h + h) + (h * h + h) + (h + 1)
    assert len(row["cached_pass_ms"]) == len(row["pipeline_pass_ms"]) == 2
    assert row["pipeline_over_cached"] == pytest.approx(row["pipeline_step_time_ms"] / row["step_time_ms"])
    assert row["samples_per_s"] == pytest.approx(row["samples_per_step"] / row["step_time_ms"] * 1e3)
    assert row["gflop_per_step"] > 0
    assert row["gflop_per_sample"] * row["samples_per_step"] == pytest.approx(row["gflop_per_step"])
    assert row["tflops_per_device"] == pytest.approx(row["gflop_per_step"] / row["step_time_ms"] / n)
    assert row["mfu"] == pytest.approx(row["tflops_per_device"] / 0.5)


def test_command_rate_runs_the_training_loop_on_the_row(tmp_path):
    system, config = throughput.ROWS["toy"]("small", 2)
    out = throughput.command_rate(system, config, 5)
    assert out["command_steps"] == 5 and out["command_samples_per_s"] > 0 and out["command_first_step_s"] > 0
    assert config.train.steps == 1000  # the row's config is not changed
