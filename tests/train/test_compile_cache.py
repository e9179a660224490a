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
    assert cache.is_dir() and any(cache.iterdir())
    s1 = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s1["compilation_cache"] == str(cache)
    assert 0 < s1["compile_s"] <= s1["first_step_s"] <= s1["wall_s"]
    counts = _hits()
    jax.clear_caches()
    run_train(toy_config, str(tmp_path / "b"))
    assert counts["hit"] >= 1


def test_cache_setting_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.cache_dir("auto") == str(tmp_path / "mmjax" / "xla")
    assert compile_cache.cache_dir("") == ""
    assert compile_cache.cache_dir("~/x").endswith("/x")
    try:
        assert compile_cache.enable("") == "" and jax.config.jax_compilation_cache_dir is None
    finally:
        compile_cache.enable("auto")
