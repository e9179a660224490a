"""Our Matbench results -> a file matbench 0.6's MatbenchBenchmark.from_file loads and validates.

matbench 0.6 pins scipy 1.7.3 / scikit-learn 1.0.1, which have no wheels for this Python, so CI
installs it (and matminer) with ``--no-deps`` on top of the project's own pins (.ci/run)."""

import json

import numpy as np
import pytest

from mmjax.eval.matbench import MatbenchResults, load_matbench_labels, run_matbench
from mmjax.eval.matbench_file import convert, matbench_hash, to_matbench


def _train_mean_run(labels, out, available=None):
    y = labels["targets"]

    def fit(train_rows, val_rows, test_rows):
        return np.full(len(test_rows), y[train_rows].mean()), {"model": "train mean"}

    res, _ = run_matbench("matbench_perovskites", labels["ids"], y, fit, out, available=available)
    return res


def test_hash_is_matbench_hash_dictionary():
    d = {"b": {"z": 1, "a": [1, 2]}, "a": "x", "c": 0.1}
    expected = __import__("hashlib").sha256(json.dumps({"a": "x", "b": {"a": [1, 2], "z": 1}, "c": 0.1})
                                            .encode()).hexdigest()
    assert matbench_hash(d) == expected
    try:
        from matbench.util import hash_dictionary
    except ImportError:
        return
    assert matbench_hash(d) == hash_dictionary(d)


def test_a_run_over_part_of_a_task_is_refused_with_the_counts(tmp_path):
    ids = [f"mb-perovskites-{i:05d}" for i in range(1, 51)]
    res = MatbenchResults("matbench_perovskites", ids, np.linspace(0, 1, 50))
    with pytest.raises(ValueError, match=r"folds \['fold_0'"):
        to_matbench(res.as_dict())
    labels = {"ids": ids, "targets": np.linspace(0, 1, 50)}
    part = _train_mean_run(labels, tmp_path / "part", available=np.arange(50) % 4 != 0)
    c = part.fold_counts["fold_0"]
    assert c["n_test_available"] < c["n_test_total"] == 10
    with pytest.raises(ValueError, match=rf"fold_0 has {c['n_test_available']} of 10 test rows.*nothing is filled in"):
        to_matbench(part.as_dict())


def test_complete_run_loads_in_matbench(shared_data, tmp_path):
    matbench = pytest.importorskip("matbench.bench", reason="matbench 0.6 not installed (.ci/run installs it)")
    assert hasattr(matbench, "MatbenchBenchmark"), f"{matbench.__file__} is not matbench 0.6"
    labels = load_matbench_labels(shared_data / "matbench" / "matbench_perovskites.json.bz2")
    ours = _train_mean_run(labels, tmp_path / "run")
    dst = convert(tmp_path / "run" / "results.json.gz", tmp_path / "matbench.json")
    mb = matbench.MatbenchBenchmark.from_file(dst)  # validates folds, every test mbid, the hash
    task = mb.tasks_map["matbench_perovskites"]
    for k in range(5):
        fold = ours.results[f"fold_{k}"]
        assert task.results[f"fold_{k}"]["scores"]["mae"] == pytest.approx(fold["scores"]["mae"])
        assert len(task.results[f"fold_{k}"]["data"]) == len(fold["data"])
    with pytest.raises(FileExistsError):
        convert(tmp_path / "run" / "results.json.gz", dst)  # never overwrites
    tampered = json.loads(open(dst).read())
    tampered["tasks"]["matbench_perovskites"]["results"]["fold_0"]["scores"]["mae"] = 0.0
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="Hash"):
        matbench.MatbenchBenchmark.from_file(str(tmp_path / "tampered.json"))
