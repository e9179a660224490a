"""`mmjax.train.loop.evaluate` weights each batch by its real samples (issue 13, item 7)."""

import jax
import numpy as np

from mmjax.train import mesh as mesh_lib
from mmjax.train.loop import evaluate


def _batches(values, batch):
    """Host batches ``[devices, batch]`` of ``values``, the last one padded."""
    d = jax.local_device_count()
    out = []
    for i in range(0, len(values), batch * d):
        chunk = values[i:i + batch * d]
        x = np.zeros(batch * d, np.float32)
        x[:len(chunk)] = chunk
        valid = np.arange(batch * d) < len(chunk)
        out.append({"x": x.reshape(d, batch), "slot_valid": valid.reshape(d, batch)})
    return out


def test_eval_mean_is_the_mean_over_samples_not_batches():
    per = jax.local_device_count()  # batches of 4, 4, 2 slot groups of `per` samples each
    values = np.arange(1.0, 10 * per + 1, dtype=np.float32)
    mesh = mesh_lib.make_mesh()

    def eval_step(params, batch, rng):  # a per-batch mean over the real samples, as the eval step reports
        x, v = np.asarray(batch["x"]), np.asarray(batch["slot_valid"])
        return {"abs": np.float32((np.abs(x) * v).sum() / v.sum())}

    batches = _batches(values, 4)
    assert len(batches) == 3
    got = evaluate(eval_step, None, batches, mesh, rng=None, prefix="test/")
    np.testing.assert_allclose(got["test/abs"], values.mean(), rtol=1e-6)
    per_batch = [eval_step(None, b, None)["abs"] for b in batches]
    assert abs(got["test/abs"] - np.mean(per_batch)) > 0.1 * values.mean()  # what equal batch weights gave


def test_eval_of_no_samples_is_empty():
    assert evaluate(lambda *a: {"abs": 1.0}, None, [], mesh_lib.make_mesh(), rng=None) == {}


def test_target_metrics_weigh_labelled_samples_and_counts_add_up():
    """A target labelled in 3 rows of one batch and 1 row of the next: its MAE is the mean over the
    4 labelled rows (not over batches, not over slots), and its count is 4 (not an average)."""
    d = jax.local_device_count()
    mesh = mesh_lib.make_mesh()
    err = [np.array([1.0, 1.0, 1.0]), np.array([9.0])]
    batches = []
    for e in err:
        valid = np.zeros((d, 4), bool)
        valid[0, :] = True
        batches.append({"slot_valid": valid, "e": e})
    per_batch = iter([{"y/mae": np.float32(e.mean()), "y/n": np.float32(len(e)), "loss": np.float32(e.mean())}
                      for e in err])
    got = evaluate(lambda *a: next(per_batch), None, [{"slot_valid": b["slot_valid"]} for b in batches], mesh,
                   rng=None, prefix="test/")
    assert got["test/y/n"] == 4
    np.testing.assert_allclose(got["test/y/mae"], 12.0 / 4)
    np.testing.assert_allclose(got["test/loss"], (1.0 * 4 + 9.0 * 4) / 8)  # slot-weighted: no count beside it
