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
