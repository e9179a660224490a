"""`benchmarks/xxact_convergence.py`: the linked-perovskite source it writes (real data, skipped
without ../shared), rewriting it only when its content changes, and the per-seed aggregation."""

import gzip
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_xxact_convergence", ROOT / "benchmarks" / "xxact_convergence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_source_is_rewritten_only_when_its_content_changes(tmp_path):
    b = _bench()
    path = tmp_path / "src.json.gz"
    doc = {"mb-1": {"poscar": "x", "e_form": 1.5}}
    assert b.write_if_changed(path, doc) is True
    before = path.stat().st_mtime_ns
    assert b.write_if_changed(path, dict(doc)) is False and path.stat().st_mtime_ns == before
    assert b.write_if_changed(path, {"mb-1": {"poscar": "x", "e_form": 1.25}}) is True
    with gzip.open(path, "rt") as fh:
        assert json.load(fh)["mb-1"]["e_form"] == 1.25
    assert not list(tmp_path.glob("*.tmp"))


def _seed(speed, threshold, test):
    runs = {"none": {"speedup": 1.0, "steps_to_threshold": 100, "best": threshold}}
    runs.update({v: {"speedup": s, "steps_to_threshold": (100 / s if s else None), "best": threshold * 0.9}
                 for v, s in speed.items()})
    return {"runs": runs, "threshold": threshold, "curves": {"none": {"steps": [1], "values": [threshold]}},
            "variants": {v: {"test": {"e_form/mae": test}, "wall_s": 1.0} for v in runs}}


def test_speedup_is_the_mean_over_seeds_and_missing_when_a_seed_never_reaches_the_threshold():
    b = _bench()
    per_seed = {0: _seed({"clip": 2.0, "mxm": 1.0, "both": None}, 0.2, 0.3),
                1: _seed({"clip": 1.0, "mxm": 1.5, "both": 3.0}, 0.25, 0.35)}
    s = b.aggregate(per_seed)
    assert s["seeds"] == [0, 1]
    assert s["speedup"] == {"clip": pytest.approx(1.5), "mxm": pytest.approx(1.25)}  # both: seed 0 never got there
    assert s["speedup_per_seed"]["both"] == [None, 3.0]
    assert s["threshold_per_seed"] == {"0": 0.2, "1": 0.25}
    assert s["test_mae"]["none"] == [0.3, 0.35] and set(s["curves"]) == {"0", "1"}


def test_source_document_holds_the_linked_rows_and_reads_back_with_e_form(shared_data, tmp_path):
    from mmjax.data.sources import read_poscar_json

    b = _bench()
    doc = b.source_document(limit=40)
    assert len(doc) == 40 and all(k.startswith("mb-perovskites-") for k in doc)
    path = tmp_path / "linked.json.gz"
    b.write_if_changed(path, doc)
    got = read_poscar_json(path, targets=["e_form"])
    assert not got.errors and len(got.materials) == 40
    first = got.materials[0]
    assert first.targets["e_form"] == pytest.approx(doc[first.id]["e_form"])
    assert len(first.structure) == 5
