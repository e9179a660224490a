"""The background prefetcher: same batches in the same order, per-batch resume state, errors, shutdown."""

import threading
import time

import jax
import numpy as np
import pytest

from mmjax.data.material import RecordError
from mmjax.train import mesh as mesh_lib
from mmjax.train.checkpoint import Checkpointer, load_params
from mmjax.train.data import SyntheticBatches
from mmjax.systems.toy import make_toy
from mmjax.train.data import build_iterator
from mmjax.train.loop import train
from mmjax.train.prefetch import Prefetcher, prefetch_to_mesh

N_DEV, B, L = 8, 2, 4


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh()


def synthetic(**kw):
    return SyntheticBatches(N_DEV, B, L, seed=3, **kw)


def assert_same_batch(device_batch, host_batch):
    """`device_batch` (global arrays) holds exactly `host_batch` (numpy), leaf by leaf."""
    assert jax.tree.structure(device_batch) == jax.tree.structure(host_batch)
    for d, h in zip(jax.tree.leaves(device_batch), jax.tree.leaves(host_batch)):
        assert isinstance(d, jax.Array) and d.sharding == mesh_lib.batch_sharding(d.sharding.mesh)
        np.testing.assert_array_equal(np.asarray(d), h)


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mmjax-prefetch")]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetched_batches_equal_plain_ones_in_order(mesh, size):
    reference = synthetic()
    with prefetch_to_mesh(synthetic(), mesh, size) as feed:
        for k in range(7):
            assert_same_batch(next(feed), reference.batch(k))
    assert not feed.thread_alive


@pytest.mark.parametrize("size", [0, 2])
def test_state_of_each_batch_restores_the_next_one(mesh, size):
    it = synthetic()
    it.set_state({"next_index": 4})  # a resumed iterator: the prefetcher starts where it stands
    feed = prefetch_to_mesh(it, mesh, size)
    assert feed.get_state() == {"next_index": 4}
    for k in range(4, 10):
        batch = next(feed)
        assert_same_batch(batch, synthetic().batch(k))
        restored = synthetic()
        restored.set_state(feed.get_state())
        np.testing.assert_array_equal(next(restored)["xrd"], synthetic().batch(k + 1)["xrd"])
    if size:
        deadline = time.time() + 30  # the thread runs ahead until the queue is full ...
        while it.index < 10 + size and time.time() < deadline:
            time.sleep(0.01)
        assert it.index >= 10 + size
        assert feed.get_state() == {"next_index": 10}  # ... but the state is that of the last consumed batch
    feed.close()


def test_state_is_a_private_copy():
    class Mutating:
        def __init__(self):
            self.state = {"pos": [0]}

        def __next__(self):
            self.state["pos"][0] += 1  # mutates the dict it handed out
            return self.state["pos"][0]

        def get_state(self):
            return self.state

    with Prefetcher(Mutating(), lambda b: b, 2, limit=3) as feed:
        assert [next(feed), feed.get_state()] == [1, {"pos": [1]}]
        assert [next(feed), feed.get_state()] == [2, {"pos": [2]}]


def test_stop_iteration_and_limit_end_the_stream(mesh):
    with prefetch_to_mesh(synthetic(num_batches=3), mesh, 2) as feed:
        got = list(feed)
        assert len(got) == 3 and feed.get_state() == {"next_index": 3}
        with pytest.raises(StopIteration):
            next(feed)
        feed._thread.join(10)
        assert not feed.thread_alive
    it = synthetic()
    for size in (0, 2):
        it.set_state({"next_index": 0})
        with prefetch_to_mesh(it, mesh, size, limit=4) as feed:
            assert len(list(feed)) == 4
        assert it.index == 4  # nothing read beyond the limit


class Failing:
    """Yields 0, 1, 2, then raises RecordError naming record 'mp-13' (or runs forever)."""

    def __init__(self, fail_at=3):
        self.k, self.fail_at = 0, fail_at

    def __next__(self):
        if self.k == self.fail_at:
            raise RecordError("mp-13", "negative lattice volume")
        self.k += 1
        return np.full((N_DEV, B), self.k - 1, np.int32)

    def get_state(self):
        return {"k": self.k}


@pytest.mark.parametrize("size", [0, 2])
def test_iterator_exception_reaches_the_consumer_after_the_good_batches(size):
    feed = Prefetcher(Failing(), lambda b: b, size)
    assert [int(next(feed)[0, 0]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RecordError, match="'mp-13': negative lattice volume"):
        next(feed)
    assert feed.get_state() == {"k": 3}
    assert not feed.thread_alive
    feed.close()


def test_put_fn_exception_propagates_and_thread_ends():
    def put(b):
        if int(b[0, 0]) == 1:
            raise ValueError("batch leaf of shape (3,) lacks the leading local-device axis")
        return b

    feed = Prefetcher(Failing(fail_at=-1), put, 2)
    assert int(next(feed)[0, 0]) == 0
    with pytest.raises(ValueError, match="lacks the leading local-device axis"):
        next(feed)
    feed.close()
    assert not feed.thread_alive


def test_close_stops_a_thread_blocked_on_a_full_queue(mesh):
    before = len(prefetch_threads())
    feed = prefetch_to_mesh(synthetic(), mesh, 2)  # infinite iterator: the thread fills the queue and waits
    next(feed)
    time.sleep(0.2)
    assert feed.thread_alive and len(prefetch_threads()) == before + 1
    feed.close()
    assert not feed.thread_alive and len(prefetch_threads()) == before
    with pytest.raises(RuntimeError, match="closed"):
        next(feed)
    with pytest.raises(ValueError, match="config.data.prefetch"):
        Prefetcher(synthetic(), lambda b: b, -1)


def test_consumer_exception_inside_with_block_shuts_the_thread_down(mesh):
    with pytest.raises(KeyError):
        with prefetch_to_mesh(synthetic(), mesh, 2) as feed:
            next(feed)
            raise KeyError("consumer failed")
    assert not feed.thread_alive


def test_training_with_and_without_prefetch_is_identical_and_checkpoints_consumed_state(toy_config, tmp_path):
    toy_config.train.steps = 10
    toy_config.checkpoint.every = 5
    toy_config.checkpoint.best_metric = ""
    system = make_toy(toy_config)
    dirs = {}
    for size in (0, 2):
        toy_config.data.prefetch = size
        dirs[size] = tmp_path / f"prefetch{size}"
        train(system, toy_config, str(dirs[size]), build_iterator(toy_config, "train"))  # no eval: less compiling
        with Checkpointer(dirs[size] / "checkpoints", keep=2) as ck:
            assert ck.all_steps() == [5, 10]
            # SyntheticBatches' state counts batches read: the checkpoint holds what was trained on.
            assert [ck.restore_meta(s)["data_state"] for s in (5, 10)] == [{"next_index": 5}, {"next_index": 10}]
    a, b = load_params(dirs[0]), load_params(dirs[2])
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not prefetch_threads()
