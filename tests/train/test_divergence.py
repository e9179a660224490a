"""A run whose finite loss runs away stops with a clear message (issue 13 item 3), as a NaN does."""

import json
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from toy_config import get_config  # noqa: E402

from mmjax.train.loop import TrainingDiverged, loss_exploded  # noqa: E402
from mmjax.train.modes import run_train  # noqa: E402


def test_loss_exploded_rule():
    assert loss_exploded(9.7e23, 0.3, 1e4).startswith("the training loss exploded to 9.7e+23")
    assert loss_exploded(9.9e3, 0.3, 1e4) == ""          # below 1e4 x max(|0.3|, 1)
    assert loss_exploded(-2e5, -3.0, 1e4) != ""          # negative losses (RobustL1) by magnitude
    assert loss_exploded(float("nan"), 0.3, 1e4) == ""   # NaN is the bad-step check's job
    assert loss_exploded(9.7e23, 0.3, 0) == ""           # 0 = off


def test_a_run_with_a_far_too_large_learning_rate_stops_naming_the_step(tmp_path):
    config = get_config()
    config.train.steps, config.train.log_every, config.optim.peak_lr = 30, 1, 3.0
    with pytest.raises(TrainingDiverged, match=r"loss exploded to .* at step \d+; training stopped.*no checkpoint"):
        run_train(config, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "diverged" and "exploded" in rows[-1]["message"]
