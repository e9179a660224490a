"""Persistent compilation cache: written by the first run, hit by a second identical run, off when
disabled; summary.json records first_step_s and compile_s."""

import json

import jax

from mmjax.train import compile_cache
from mmjax.train.modes import run_train


def _hits():
    counts = {"hit": 0}

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            counts["hit"] += 1

    jax.monitoring.register_event_listener(listener)
    return counts


def test_second_identical_run_loads_from_the_cache(tmp_path, toy_config, monkeypatch):
    cache = tmp_path / "xla_cache"
    toy_config.train.compilation_cache_dir = str(cache)
    toy_config.train.steps = 10
    toy_config.train.progress = False
    jax.clear_caches()  # in-memory caches would hide the disk cache
    run_train(toy_config, str(tmp_path / "a"))
    host = cache / f"host-{compile_cache.host_fingerprint()}"
    assert host.is_dir() and any(host.iterdir()) and [p.name for p in cache.iterdir()] == [host.name]
    s1 = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s1["compilation_cache"] == str(host)
    assert 0 < s1["compile_s"] <= s1["first_step_s"] <= s1["wall_s"]
    counts = _hits()
    jax.clear_caches()
    run_train(toy_config, str(tmp_path / "b"))
    assert counts["hit"] >= 1


def test_cache_setting_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    host = f"host-{compile_cache.host_fingerprint()}"
    assert compile_cache.cache_dir("auto") == str(tmp_path / "mmjax" / "xla" / host)
    assert compile_cache.cache_dir("") == ""
    assert compile_cache.cache_dir("~/x").endswith(f"/x/{host}")
    try:
        assert compile_cache.enable("") == "" and jax.config.jax_compilation_cache_dir is None
    finally:
        compile_cache.enable("auto")


def test_entries_of_another_cpu_are_never_loaded(monkeypatch):
    """XLA:CPU programs are compiled for the host's instruction set and JAX's cache key does not
    name the CPU (entries written on an AMD EPYC host aborted a run on an Intel Xeon one): the
    folder is per CPU model + feature flags + jax / jaxlib version."""
    here = compile_cache.cache_dir("/c")
    monkeypatch.setattr(compile_cache, "cpu_description", lambda: "model name: Other CPU\nflags: avx2 fma sse4_2")
    other = compile_cache.cache_dir("/c")
    monkeypatch.setattr(compile_cache, "cpu_description", lambda: "model name: Other CPU\nflags: avx2 avx512f fma")
    other_flags = compile_cache.cache_dir("/c")
    assert len({here, other, other_flags}) == 3 and all(p.startswith("/c/host-") for p in (here, other, other_flags))
    monkeypatch.setattr(compile_cache.jax, "__version__", "0.0.1")
    assert compile_cache.cache_dir("/c") != other_flags
