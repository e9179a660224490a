"""One live run per workdir; metrics rows past the resume step are dropped (no duplicates)."""

import json
import os

import pytest

from mmjax.train.loop import drop_rows_after
from mmjax.train.modes import run_train
from mmjax.train.workdir_lock import LOCK_NAME, WorkdirBusy, WorkdirLock


def test_second_run_on_a_live_workdir_is_refused(tmp_path, toy_config):
    toy_config.train.steps, toy_config.train.progress = 10, False
    with WorkdirLock(str(tmp_path)):
        with pytest.raises(WorkdirBusy, match=rf"in use by a live run \(pid={os.getpid()} "):
            run_train(toy_config, str(tmp_path))
        assert not (tmp_path / "metrics.jsonl").exists()  # nothing was written by the refused run
    run_train(toy_config, str(tmp_path))  # released: the run goes ahead
    assert (tmp_path / "summary.json").exists()


def test_stale_lock_of_a_dead_process_is_cleared_with_a_message(tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text("pid=999999999 host=x since=2026-01-01T00:00:00\n")
    with WorkdirLock(str(tmp_path)):
        pass
    assert "cleared the stale lock of dead process 999999999" in capsys.readouterr().out


def test_a_cleanly_finished_run_leaves_no_stale_lock_message(tmp_path, capsys):
    with WorkdirLock(str(tmp_path)):
        assert f"pid={os.getpid()} " in (tmp_path / LOCK_NAME).read_text()
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with WorkdirLock(str(tmp_path)):
        pass
    assert "stale lock" not in capsys.readouterr().out


def test_drop_rows_after_keeps_earlier_rows_verbatim(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (5, 10, 15, 20)]
    path.write_text("\n".join(rows) + "\n" + '{"step": 25, "tra')  # torn last line of a kill
    assert drop_rows_after(str(path), 10) == 3
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    assert drop_rows_after(str(path), 10) == 0
    assert drop_rows_after(str(tmp_path / "absent.jsonl"), 3) == 0


def test_progress_clock_starts_after_the_first_step(monkeypatch):
    """The tqdm bar is created after the first (compiling) step has been counted, so its rate and
    ETA never include the compilation."""
    import time

    from mmjax.train.metrics import Progress

    monkeypatch.setattr("jax.process_index", lambda: 0)
    p = Progress(total=10, initial=0, enabled=True)
    assert p.bar is None
    time.sleep(0.05)  # "compiling"
    p.update(1)
    assert p.bar is not None and p.bar.n == 1 and p.bar.format_dict["elapsed"] < 0.05
    p.update(2, loss=0.5)
    assert p.bar.n == 3
    p.close()
