"""Orbax checkpoints: round trip with optax types and iterator state, retention, corrupted-step fallback."""

import os
import pathlib

import jax
import numpy as np
import optax
import pytest

from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.checkpoint import Checkpointer, NoUsableCheckpoint, load_params
from mmjax.train.data import SyntheticBatches
from mmjax.train.loop import build_engine, sharded_target
from mmjax.train.state import init_state


@pytest.fixture(scope="module")
def engine_state():
    from toy_config import get_config

    config = get_config()
    system = build_system(config)
    it = SyntheticBatches(n_devices=8, batch_per_device=2, length=8)
    eng = build_engine(system, config, next(it), mesh_lib.make_mesh())
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    # Make the Adam moments non-trivial so a wrong restore would show.
    state = state.replace(opt_state=jax.tree.map(lambda x: x + 0.5 if x.dtype == np.float32 else x, state.opt_state))
    return eng, state, it


def find_adam_states(tree):
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda t: isinstance(t, optax.ScaleByAdamState))
            if isinstance(x, optax.ScaleByAdamState)]


def _damage(step_dir):
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])


def _two_steps_second_damaged(state, root):
    """Steps 1 and 2 saved under ``root``; every data file of step 2 truncated."""
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, state, {"step": 1})
        ck.save(2, state.replace(step=state.step + 2), {"step": 2})
    _damage(root / "2")


def test_round_trip_keeps_optax_types_values_and_iterator_state(engine_state, tmp_path):
    eng, state, it = engine_state
    assert find_adam_states(state.opt_state)
    meta = {"data_state": it.get_state(), "step": 7, "config": {"a": [1, 2]}}
    with Checkpointer(tmp_path / "ck", async_save=True) as ck:
        ck.save(7, state, meta)
        ck.wait()
        step, restored, meta_back = ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
    assert step == 7 and meta_back == meta
    assert len(find_adam_states(restored.opt_state)) == len(find_adam_states(state.opt_state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
    # The iterator resumes where it was.
    it2 = SyntheticBatches(n_devices=8, batch_per_device=2, length=8)
    it2.set_state(meta_back["data_state"])
    assert meta_back["data_state"] == {"next_index": 1}
    np.testing.assert_array_equal(next(it2)["xrd"], it.batch(1)["xrd"])
    # Params alone load without a target (fine-tuning initialisation); no pickle files anywhere.
    params = load_params(tmp_path / "ck")
    np.testing.assert_array_equal(np.asarray(params["head"]["kernel"]), np.asarray(state.params["head"]["kernel"]))
    assert not [p for p in pathlib.Path(tmp_path).rglob("*") if p.suffix in (".pkl", ".pickle")]


def test_keeps_latest_and_best(engine_state, tmp_path):
    _, state, _ = engine_state
    evals = {2: 0.5, 4: 0.1, 6: 0.7, 8: 0.9}  # step 4 is the best (min)
    with Checkpointer(tmp_path / "ck", keep=2, best_metric="eval/loss", best_mode="min", async_save=False) as ck:
        for s in range(1, 9):
            ck.save(s, state, {"step": s}, metrics={"eval/loss": evals[s]} if s in evals else None)
        ck.wait()
        assert ck.all_steps() == [4, 7, 8]
        assert ck.best_step() == 4
    with Checkpointer(tmp_path / "ck", keep=2, best_metric="eval/loss", best_mode="min", async_save=False) as ck:
        assert ck.best_step() == 4  # metrics persisted with the steps
        ck.save(9, state, {"step": 9}, metrics={"eval/loss": 0.05})
        ck.save(10, state, {"step": 10})
        assert ck.all_steps() == [9, 10] and ck.best_step() == 9


def test_corrupted_latest_falls_back_with_warning(engine_state, tmp_path):
    eng, state, _ = engine_state
    root = tmp_path / "ck"
    # Damage every data file of step 2, and leave an uncommitted (killed mid-save) step 3.
    _two_steps_second_damaged(state, root)
    (root / "3.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    with Checkpointer(root, async_save=False) as ck:
        assert ck.all_steps() == [1, 2]
        with pytest.warns(RuntimeWarning, match=r"checkpoint step 2 .* unreadable"):
            step, restored, meta = ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
        assert ck.all_steps() == [1]
    assert step == 1 and meta == {"step": 1} and int(restored.step) == int(state.step)
    assert (tmp_path / "ck_corrupt" / "2").is_dir() and not (root / "2").exists()
    assert not (root / "3.orbax-checkpoint-tmp").exists()  # partial save cleaned up


def test_array_read_failing_after_readable_metadata_names_the_array_data(engine_state, tmp_path, monkeypatch):
    """Where the metadata of the newest step reads but its arrays do not (orbax keeps the two in
    the same OCDBT files or apart, run to run, so a truncation cannot pick one), the warning says
    the array data failed, the step is moved aside and the previous one restores."""
    eng, state, _ = engine_state
    root = tmp_path / "ck"
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, state, {"step": 1})
        ck.save(2, state.replace(step=state.step + 2), {"step": 2})
    real = Checkpointer.restore

    def restore(self, step, target):
        if step == 2:
            raise ValueError("DATA_LOSS: Error reading chunk\nTensorStore({...spec...})")
        return real(self, step, target)

    monkeypatch.setattr(Checkpointer, "restore", restore)
    with Checkpointer(root, async_save=False) as ck:
        with pytest.warns(RuntimeWarning, match=r"step 2 .* its array data failed to read \(ValueError: "
                                                r"DATA_LOSS: Error reading chunk\); moved to") as rec:
            step, _, meta = ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
    assert len([w for w in rec if "step 2" in str(w.message)]) == 1
    assert step == 1 and meta == {"step": 1} and (tmp_path / "ck_corrupt" / "2").is_dir()


def test_no_usable_checkpoint(engine_state, tmp_path):
    eng, state, _ = engine_state
    root = tmp_path / "ck"
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, state, {"step": 1})
    for f in (root / "1" / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"")
    with Checkpointer(root, async_save=False) as ck, pytest.warns(RuntimeWarning, match="step 1"):
        with pytest.raises(NoUsableCheckpoint, match="tried steps"):
            ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
    assert os.listdir(tmp_path / "ck_corrupt") == ["1"]



def test_other_model_is_a_config_error_and_moves_nothing(engine_state, tmp_path):
    """A readable checkpoint of another model (a reshaped / missing parameter) raises
    CheckpointMismatch naming the keys; the valid checkpoint stays where it is."""
    from mmjax.train.checkpoint import CheckpointMismatch

    eng, state, _ = engine_state
    root = tmp_path / "ck"
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, state, {"step": 1})
    target = sharded_target(eng["abstract"], eng["shardings"])
    head = target.params["head"]
    wider = dict(head, kernel=jax.ShapeDtypeStruct((head["kernel"].shape[0], head["kernel"].shape[1] + 1),
                                                   head["kernel"].dtype, sharding=head["kernel"].sharding))
    other = target.replace(params=dict(target.params, head=wider))
    with Checkpointer(root, async_save=False) as ck:
        with pytest.raises(CheckpointMismatch, match=r"head/kernel: checkpoint .* vs model"):
            ck.restore_latest(other)
        assert ck.all_steps() == [1]
    assert not (tmp_path / "ck_corrupt").exists() and (root / "1").is_dir()


def test_read_only_restore_never_moves_a_damaged_step(engine_state, tmp_path):
    eng, state, _ = engine_state
    root = tmp_path / "ck"
    _two_steps_second_damaged(state, root)
    with Checkpointer(root, async_save=False) as ck:
        with pytest.warns(RuntimeWarning, match=r"step 2 .* left in place"):
            step, _, _ = ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]), read_only=True)
        assert step == 1 and ck.all_steps() == [1, 2]
    assert (root / "2").is_dir() and not (tmp_path / "ck_corrupt").exists()


def test_a_readable_tree_without_params_is_a_mismatch_not_damage(engine_state, tmp_path):
    """A valid checkpoint of some other tree (no 'params' entry) is never taken for corrupt files:
    CheckpointMismatch, and the step stays where it is."""
    from mmjax.train.checkpoint import CheckpointMismatch

    eng, state, _ = engine_state
    root = tmp_path / "ck"
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, {"weights": state.params}, {"step": 1})
    with Checkpointer(root, async_save=False) as ck:
        with pytest.raises(CheckpointMismatch, match="no 'params' entry"):
            ck.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
        with pytest.raises(CheckpointMismatch, match="no 'params' entry"):
            ck.restore_latest_params(sharded_target(eng["abstract"], eng["shardings"]).params)
        assert ck.all_steps() == [1]
    assert not (tmp_path / "ck_corrupt").exists()


def test_asyncio_never_retrieved_noise_of_an_aborted_read_is_dropped_and_nothing_else():
    """asyncio's "Future exception was never retrieved" for a tensorstore read error (exactly the
    record CI printed once: no orbax frame in its traceback, 'tensorstore' only in lower case) is
    dropped; the same message about any other error, and any other asyncio record, still passes."""
    import logging

    from mmjax.train.checkpoint import _orbax_task_errors

    def record(msg, exc):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (),
                                 (type(exc), exc, None) if exc else None)

    ts = ValueError('OUT_OF_RANGE: Error opening "zarr" driver: Error reading "rng/.zarray" in OCDBT '
                    'database [tensorstore_spec=\'{"driver":"zarr"}\']')
    future = f"Future exception was never retrieved\nfuture: <Future finished exception={ts!r}>"
    assert _orbax_task_errors(record(future, ts)) is False
    assert _orbax_task_errors(record("Future exception was never retrieved", ts)) is False
    other = KeyError("user code")
    assert _orbax_task_errors(record(f"Task exception was never retrieved\n{other!r}", other)) is True
    assert _orbax_task_errors(record("Executing <Task> took 0.2 seconds", None)) is True
