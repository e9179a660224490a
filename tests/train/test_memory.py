"""`mmjax.train.memory`: a step's memory read from its jaxpr, checked against hand-computed sizes,
and the early stop (issue 13 item 4) when it cannot fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.train import memory


def outer_step(state, batch):
    """An [N, N] float32 outer product inside a scan of 3 steps, then a reduction."""
    def body(carry, x):
        big = x[:, None] * x[None, :]            # [N, N]
        return carry + big.sum(), None

    total, _ = jax.lax.scan(body, jnp.float32(0), jnp.stack([batch, batch, batch]))
    return state * total


def test_largest_array_and_totals_are_the_hand_computed_sizes():
    n = 512
    state = jax.ShapeDtypeStruct((1000,), jnp.float32)
    mem = memory.step_memory(outer_step, state, jax.ShapeDtypeStruct((n,), jnp.float32))
    assert mem.state_bytes == 4000
    assert mem.largest_bytes == n * n * 4 and "float32[512,512]" in mem.largest_what and "mul" in mem.largest_what
    assert mem.lower_bytes == 2 * 4000 + n * n * 4
    # the [N, N] product is made once per scan step: at least 3 x N^2 floats in the total
    assert mem.total_bytes >= 3 * n * n * 4 and mem.upper_bytes > mem.lower_bytes
    # liveness: one [N, N] product alive at a time (the scan runs its body in turn), inputs beside it
    assert n * n * 4 <= mem.peak_bytes - 4000 - n * 4 < 2 * n * n * 4 + 3 * n * 4 + 64


def test_liveness_frees_arrays_after_their_last_use():
    """A chain of 10 [N, N] temporaries, each used once: the peak holds two of them, not ten."""
    n = 256

    def chain(state, x):
        y = x[:, None] * x[None, :]
        for _ in range(10):
            y = jnp.sin(y)
        return state + y.sum()

    mem = memory.step_memory(chain, jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32))
    big = n * n * 4
    assert mem.total_bytes >= 11 * big
    assert 2 * big <= mem.peak_bytes < 3 * big


def test_a_step_that_cannot_fit_stops_with_the_memory_and_the_ways_out():
    mem = memory.step_memory(outer_step, jax.ShapeDtypeStruct((10,), jnp.float32),
                             jax.ShapeDtypeStruct((4096,), jnp.float32))   # one 64 MiB array
    memory.check_step_memory(mem, available=2 ** 30, source="test")       # fits in 1 GiB
    with pytest.raises(memory.StepTooLarge, match=r"needs about 0\.1 GiB .*float32\[4096,4096\].*0\.0 GiB is "
                                                  r"available \(test\).*':small'.*batch_per_device \(now 64\)"):
        memory.check_step_memory(mem, available=2 ** 20, source="test", batch=64)
    memory.check_step_memory(mem, available=None)  # unknown memory: no check


def test_the_training_loop_stops_before_compiling(tmp_path, monkeypatch):
    """Through `train`: with (pretend) 1 MiB of memory the toy run stops before its first step,
    writing no checkpoint; with the check off it trains."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from toy_config import get_config

    from mmjax.train.modes import run_train

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: (2 ** 10, "pretend"))
    config = get_config()
    config.train.steps = 8
    with pytest.raises(memory.StepTooLarge, match="pretend"):
        run_train(config, str(tmp_path / "a"))
    assert not (tmp_path / "a" / "checkpoints").exists() or not any((tmp_path / "a" / "checkpoints").iterdir())
    config.train.memory_check = False
    assert run_train(config, str(tmp_path / "b"))["steps"] == 8


def test_available_memory_of_this_host_is_known():
    got, source = memory.available_bytes()
    assert got is not None and got > 0 and source.startswith("host")
    assert np.isfinite(got)
