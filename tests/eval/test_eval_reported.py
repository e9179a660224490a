"""benchmarks/reported.py: every row sourced; two independent sources agree; computed Dummy."""

import importlib.util
import math
import pathlib
import sys

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "reported.py"


@pytest.fixture(scope="module")
def rep():
    spec = importlib.util.spec_from_file_location("reported_bench", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_rows_have_sources_and_finite_values(rep):
    assert len(rep.REPORTED) > 100
    for r in rep.REPORTED:
        assert r.source and math.isfinite(r.value) and r.unit, r
    assert {r.table for r in rep.REPORTED if not r.verified} == {"crabnet_table2"}
    for task in ("dielectric", "log_gvrh", "log_kvrh", "mp_gap", "perovskites", "mp_e_form"):
        models = {r.model for r in rep.reported("matbench_v0.1_leaderboard", f"matbench_{task}")}
        assert models == {"CGCNN v2019", "ALIGNN", "coGN", "MODNet (v0.1.12)", "Dummy"}


def test_xmopa_baselines_equal_leaderboard(rep):
    # X-MoPA says its baselines come from the Matbench leaderboard: the two transcriptions must agree.
    names = {"CGCNN": "CGCNN v2019", "coGN": "coGN", "ALIGNN": "ALIGNN"}
    checked = 0
    for r in rep.reported("xmopa_table1"):
        if r.model in names:
            (lb,) = rep.reported("matbench_v0.1_leaderboard", r.task, names[r.model])
            assert r.value == lb.value, (r, lb)
            checked += 1
    assert checked == 15


def test_computed_dummy_matches_leaderboard(rep, shared_data):
    comp = rep.computed_dummy_maes(("dielectric", "log_kvrh"), shared_data / "matbench")
    for task, c in comp.items():
        (lb,) = rep.reported("matbench_v0.1_leaderboard", f"matbench_{task}", "Dummy")
        assert c["mean"] == pytest.approx(lb.value, abs=5e-5) and c["std"] == pytest.approx(lb.std, abs=5e-5)
