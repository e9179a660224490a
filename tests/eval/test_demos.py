"""E3-E5 demos with trained encoders (benchmarks/retrieval_demo.py, discovery_demo.py, latent_demo.py)
and the chance levels they print (mmjax.eval.retrieval.chance_metrics, discovery.reference_best_of_n)."""

import itertools
import json
import pathlib
import sys

import numpy as np
import pytest

from mmjax.eval.discovery import normalized_dos_mae, reference_best_of_n
from mmjax.eval.retrieval import chance_metrics, rank_metrics

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import discovery_demo  # noqa: E402
import latent_demo  # noqa: E402
import retrieval_demo as rd  # noqa: E402

# benchmarks/ off the path again: its matbench.py would shadow the matbench package for later tests
# (tests/eval/test_matbench_file.py then skipped as "matbench 0.6 not installed")
# (the demos put it there too)
while str(BENCH) in sys.path:
    sys.path.remove(str(BENCH))


# ---------------------------------------------------------------------------------- chance levels


@pytest.mark.parametrize("n", [1, 4, 7, 30])
def test_chance_metrics_equal_the_average_over_every_rank(n):
    ks = (1, 5, 10, 25)
    # a uniformly random ranking puts the true key at each rank 1..n equally often
    exact = rank_metrics(np.arange(1, n + 1), ks)
    got = chance_metrics(n, ks)
    for key in [f"recall@{k}" for k in ks] + ["mrr", "mean_rank", "median_rank"]:
        assert got[key] == pytest.approx(exact[key]), key
    assert got["n"] == n


def test_chance_metrics_empty_pair_is_nan():
    got = chance_metrics(0)
    assert got["n"] == 0 and np.isnan(got["recall@1"]) and np.isnan(got["mrr"])


def test_reference_best_of_n_matches_enumerating_every_subset():
    rng = np.random.default_rng(3)
    grid = np.linspace(-5, 5, 21)
    queries, cands = rng.random((3, 21)), rng.random((7, 21))
    exclude = np.array([2, -1, 6])
    ns = (1, 2, 3, 6)
    ref = reference_best_of_n(queries, cands, grid, ns, exclude)
    assert ref["n"] == [1, 2, 3, 6]  # 6 of 7 candidates remain once one is excluded
    for j, n in enumerate(ref["n"]):
        per_query, floors = [], []
        for i in range(3):
            e = normalized_dos_mae(queries[i], cands, grid)
            if exclude[i] >= 0:
                e = np.delete(e, exclude[i])
            per_query.append(np.mean([e[list(s)].min() for s in itertools.combinations(range(e.size), n)]))
            floors.append(e.min())
        assert ref["random_mean_nmae"][j] == pytest.approx(np.mean(per_query), rel=1e-12)
    assert ref["floor_mean_nmae"] == pytest.approx(np.mean(floors))
    assert ref["random_mean_nmae"][0] > ref["random_mean_nmae"][-1] >= ref["floor_mean_nmae"]


# ---------------------------------------------------------------------------------- demo plumbing


def test_held_out_split_is_disjoint_and_covers_every_row():
    train, test = rd.held_out_split(103, 0.25, seed=4)
    assert set(train).isdisjoint(test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(103))
    assert 20 <= len(test) <= 32
    again, _ = rd.held_out_split(103, 0.25, seed=4)
    np.testing.assert_array_equal(train, again)
    with pytest.raises(ValueError, match="test_fraction"):
        rd.held_out_split(10, 1.0)


def test_array_batches_one_pass_pads_and_masks():
    arrays = {"xrd": np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
              "dos": {"densities": np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)}}
    present = {"xrd": np.ones(10, bool), "dos": np.arange(10) % 2 == 0}
    it = rd.ArrayBatches(arrays, present, np.array([1, 3, 4, 8, 9]), batch_size=4, n_devices=2, shuffle=False)
    seen = []
    for batch in it:
        assert batch["xrd"].shape == (2, 2, 3) and batch["dos"]["densities"].shape == (2, 2, 2)
        idx = it.last_indices.reshape(-1)
        valid = batch["slot_valid"].reshape(-1)
        np.testing.assert_array_equal(valid, idx >= 0)
        np.testing.assert_array_equal(batch["xrd"].reshape(4, 3)[valid, 0], idx[valid])
        np.testing.assert_array_equal(batch["present"]["dos"].reshape(-1), valid & (np.where(valid, idx, 1) % 2 == 0))
        seen += idx[valid].tolist()
    assert seen == [1, 3, 4, 8, 9]


def _noisy_copies(n=192, seed=0):
    """Two modalities that are noisy linear images of one latent; 'text' missing on ~20 % of rows."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    xrd = z @ rng.normal(size=(6, 24)) + 0.05 * rng.normal(size=(n, 24))
    text = z @ rng.normal(size=(6, 32)) + 0.05 * rng.normal(size=(n, 32))
    present = {"xrd": np.ones(n, bool), "text": rng.random(n) > 0.2}
    return {"ids": np.array([f"m{i:04d}" for i in range(n)]),
            "arrays": {"xrd": xrd.astype(np.float32), "text": text.astype(np.float32)}, "present": present}


def test_trained_encoders_beat_chance_on_held_out_noisy_copies(tmp_path):
    from mmjax.nn import make_encoder
    from mmjax.systems.multimat import MultiMat

    data = _noisy_copies()
    train_idx, test_idx = rd.held_out_split(len(data["ids"]), 0.25, seed=0)
    system = MultiMat({"xrd": make_encoder("text_mlp", out_dim=16, hidden=32, depth=2),
                       "text": make_encoder("text_mlp", out_dim=16, hidden=32, depth=2)},
                      objective="all_pairs", temperature=0.1, head_inputs=("xrd",))
    emb, history = rd.train_dense(system, data, train_idx, steps=150, batch_size=32, lr=3e-3, seed=0, log=None)
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(np.isfinite(v).all() for v in emb.values())
    run = {**data, "emb": emb, "train_idx": train_idx, "test_idx": test_idx, "history": history,
           "counts": {"held_out": len(test_idx)}, "timings": {}}
    doc = rd.evaluate_part("toy", run, tmp_path, [("xrd", "text")], {"steps": 150}, log=lambda *_: None)
    for pair in ("xrd->text", "text->xrd"):
        r, c = doc["pairs"][pair], doc["chance"][pair]
        assert r["n"] == int((data["present"]["text"][test_idx]).sum()) > 30
        assert r["recall@1"] > 10 * c["recall@1"]  # chance ~ 1/40
        assert r["mrr"] > 3 * c["mrr"]
    assert (tmp_path / "toy" / "retrieval.json").exists() and (tmp_path / "toy" / "retrieval_recall@1.png").exists()
    # the held-out ids written with the embeddings never appear among the training ids
    saved = rd.load_embeddings(tmp_path / "toy" / "embeddings.npz")
    assert set(saved["ids"][saved["train_idx"]]).isdisjoint(saved["ids"][saved["test_idx"]])
    np.testing.assert_array_equal(saved["test_idx"], test_idx)
    np.testing.assert_allclose(saved["emb"]["text"], emb["text"])


def test_validation_keeps_the_best_parameters_and_stops_on_patience():
    """train_contrastive with ``validate``: scored every eval_every steps, the best-scoring
    parameters come back (not the last), and training stops after ``patience`` scores without a
    new best."""
    import jax

    from mmjax.nn import make_encoder
    from mmjax.systems.multimat import MultiMat

    data = _noisy_copies()
    system = MultiMat({"xrd": make_encoder("text_mlp", out_dim=16, hidden=32, depth=2),
                       "text": make_encoder("text_mlp", out_dim=16, hidden=32, depth=2)},
                      objective="all_pairs", temperature=0.1, head_inputs=("xrd",))
    scores, seen = iter([0.1, 0.5, 0.3, 0.2, 0.9]), []

    def validate(params):
        seen.append(jax.tree.map(np.array, params))
        return next(scores)

    it = rd.ArrayBatches(data["arrays"], data["present"], np.arange(len(data["ids"])), 32, shuffle=True, seed=0)
    params, history = rd.train_contrastive(system, rd.demo_config(100, 3e-3, 0), it, log=None, log_every=50,
                                           validate=validate, eval_every=10, patience=2)
    assert [h["step"] for h in history if "val" in h] == [10, 20, 30, 40]  # stopped: 2 scores after the best
    assert [h["val"] for h in history if "val" in h] == [0.1, 0.5, 0.3, 0.2]
    best, last = seen[1], seen[3]
    jax.tree.map(np.testing.assert_array_equal, params, best)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(last)))


def test_evaluate_part_refuses_overlapping_splits(tmp_path):
    data = _noisy_copies(n=20)
    run = {**data, "emb": data["arrays"], "train_idx": np.arange(12), "test_idx": np.arange(10, 20), "history": [],
           "counts": {"held_out": 10}, "timings": {}}
    with pytest.raises(AssertionError, match="overlap"):
        rd.evaluate_part("bad", run, tmp_path, [("xrd", "text")], {}, log=lambda *_: None)


def test_discovery_excludes_the_query_and_perfect_embeddings_beat_random(tmp_path):
    rng = np.random.default_rng(1)
    grid = np.linspace(-5, 5, 201)
    centres = rng.uniform(-4, 4, size=40)
    dos = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / 0.4) ** 2) + 0.05
    emb = {"dos": dos.copy(), "text": dos.copy()}  # the searched modality embeds the DOS perfectly
    present = {"dos": np.ones(40, bool), "text": np.arange(40) % 4 != 0}
    res = discovery_demo.discovery_curves(emb, present, dos, grid, np.arange(0, 40, 2), tmp_path,
                                          searched=("text",), ns=(1, 3, 10))["text"]
    assert res["n_queries"] == 20 and res["n_candidates"] == 30
    # the query's own (identical) DOS would give nMAE 0: it must have been excluded
    assert res["mean_nmae"][0] > 0.0
    assert res["mean_nmae"][0] < 0.5 * res["random_expected_mean_nmae"][0]
    assert min(res["mean_nmae"]) >= res["floor_mean_nmae"] - 1e-12
    assert (tmp_path / "text" / "discovery.json").exists()


def test_latent_analysis_separates_clusters_and_reports_chance(tmp_path):
    rng = np.random.default_rng(2)
    cs = np.repeat([2, 6], 30)  # orthorhombic, cubic
    emb = rng.normal(size=(60, 8)) * 0.1 + np.where(cs[:, None] == 2, 1.0, -1.0) * np.eye(8)[0]
    heat = np.where(np.arange(60) % 3 == 0, np.nan, emb[:, 0])
    tol = {"t": np.linspace(0.8, 1.1, 60), "valid": np.ones(60, bool), "is_perovskite": cs == 6, "errors": {}}
    doc = latent_demo.analyse(emb, cs, heat, tol, tmp_path)
    assert doc["latent"]["silhouette"]["mean"] > 0.6
    assert abs(doc["silhouette_shuffled_labels"]) < 0.2
    assert doc["tolerance_window_overlap"]["overlap"] < doc["tolerance_window_overlap_random_group"]
    assert doc["heat_ref_r2_from_pca2"] > 0.9
    assert doc["crystal_system_counts"] == {"orthorhombic": 30, "cubic": 30}
    for name in ("latent_pca_crystal_system.png", "latent_pca_tolerance_factor.png"):
        assert (tmp_path / name).exists()


# ---------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def multimat_example(shared_data):
    return rd.load_multimat_example(dos_points=51, density_size=4)


def test_multimat_example_loader(multimat_example):
    data = multimat_example
    p = data["present"]
    assert len(data["ids"]) == 408
    assert int(p["text"].sum()) == 100 and int(p["charge_density"].sum()) == 100
    assert not np.any(p["text"] & p["charge_density"])  # disjoint subsets in the source
    # 312 stored DOS; one has a degenerate (non-increasing) energy grid and is reported, not used
    assert int(p["dos"].sum()) + len(data["skipped"]) == 312
    assert all("increasing" in r for r in data["skipped"].values())
    assert np.allclose(data["arrays"]["charge_density"][p["charge_density"]].mean(axis=(1, 2, 3)), 1.0, atol=1e-4)
    assert data["arrays"]["dos"]["densities"].shape == (408, 51)


def test_perovskite_subset_is_seeded(shared_data):
    a, b, c = rd.perovskite_items(30, seed=5), rd.perovskite_items(30, seed=5), rd.perovskite_items(30, seed=6)
    assert a == b and a != c
    assert len({i for i, _ in a}) == 30 and all("direct" in text.lower() for _, text in a)


def test_scripts_run_from_saved_embeddings(multimat_example, tmp_path, capsys):
    """retrieval_demo.main / discovery_demo.main / latent_demo.main end to end, with the (slow)
    training replaced by fixed embeddings: the outputs, tables and split bookkeeping."""
    data = multimat_example
    n = len(data["ids"])
    train_idx, test_idx = rd.held_out_split(n, 0.3, seed=0)
    rng = np.random.default_rng(0)
    run = {**data, "emb": {m: rng.normal(size=(n, 8)).astype(np.float32) for m in rd.MULTIMAT_MODALITIES},
           "train_idx": train_idx, "test_idx": test_idx, "history": [{"step": 1, "loss": 1.0}],
           "counts": {"materials": n, "train": len(train_idx), "held_out": len(test_idx)}, "timings": {}}
    orig = rd.train_multimat
    rd.train_multimat = lambda *a, **k: run
    try:
        assert rd.main(["--part", "multimat", "--quick", "--out", str(tmp_path / "r")]) == 0
    finally:
        rd.train_multimat = orig
    doc = json.loads((tmp_path / "r" / "multimat" / "retrieval.json").read_text())
    assert doc["pairs"]["text->charge_density"]["n"] == 0 and doc["pairs"]["dos->text"]["n"] > 0
    assert {tuple(p) for p in doc["trained_pairs"]} == {("dos", "text"), ("dos", "charge_density")}
    emb_path = tmp_path / "r" / "multimat" / "embeddings.npz"
    assert discovery_demo.main(["--embeddings", str(emb_path), "--out", str(tmp_path / "d")]) == 0
    disc = json.loads((tmp_path / "d" / "discovery_demo.json").read_text())
    assert disc["results"]["text"]["n_queries"] == int((data["present"]["dos"][test_idx]).sum())
    # perovskites: 40 ids with random crystal embeddings
    items = rd.perovskite_items(40, seed=0)
    ids = np.array([i for i, _ in items])
    pv = {"ids": ids, "emb": {"crystal": rng.normal(size=(40, 8))}, "present": {"crystal": np.ones(40, bool)},
          "train_idx": np.arange(10), "test_idx": np.arange(10, 40), "crystal_system": np.repeat([2, 3], 20)}
    rd.save_embeddings(tmp_path / "p.npz", pv)
    assert latent_demo.main(["--embeddings", str(tmp_path / "p.npz"), "--out", str(tmp_path / "l")]) == 0
    lat = json.loads((tmp_path / "l" / "latent_demo.json").read_text())
    assert lat["n"] == 30 and lat["n_train"] == 10
    assert "silhouette" in capsys.readouterr().out
