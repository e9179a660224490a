"""E3 retrieval metrics against hand-computed toy cases."""

import numpy as np
import pytest

from mmjax.eval.retrieval import all_pairs_retrieval, evaluate_retrieval, rank_metrics, true_match_ranks


def test_ranks_with_tie_are_pessimistic():
    # rows 0 and 1 are identical in both modalities: each ties with the other -> rank 2.
    q = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    k = np.array([[2.0, 0.0], [3.0, 0.0], [0.0, 0.5]])  # scale must not matter (cosine)
    np.testing.assert_array_equal(true_match_ranks(q, k), [2, 2, 1])


def test_ranks_hand_case_without_ties():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.9]])
    # query 0 sims: [0, .995, .743] -> true (0) ranks 3; query 1: [1, .0995, .667] -> true 3;
    # query 2: [.707, .774, .9986] -> 1
    np.testing.assert_array_equal(true_match_ranks(q, k, chunk_size=2), [3, 3, 1])


def test_rank_metrics_hand_values():
    m = rank_metrics(np.array([1, 2, 2, 7, 30]), ks=(1, 5, 10, 25))
    assert m["recall@1"] == pytest.approx(1 / 5)
    assert m["recall@5"] == pytest.approx(3 / 5)
    assert m["recall@10"] == pytest.approx(4 / 5)
    assert m["recall@25"] == pytest.approx(4 / 5)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.5 + 1 / 7 + 1 / 30) / 5)
    assert m["mean_rank"] == pytest.approx(42 / 5)
    assert m["median_rank"] == 2.0
    assert m["n"] == 5


def test_all_pairs_respects_presence_and_direction(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 4))
    emb = {"crystal": base, "dos": base + 0.01 * rng.normal(size=(6, 4)), "text": rng.normal(size=(6, 4))}
    present = {"dos": np.array([1, 1, 1, 1, 0, 0], bool), "text": np.array([0, 0, 0, 0, 0, 0], bool)}
    res = all_pairs_retrieval(emb, present, ks=(1, 5))
    assert set(res) == {f"{a}->{b}" for a in emb for b in emb if a != b}
    assert res["crystal->dos"]["n"] == 4 and res["dos->crystal"]["n"] == 4
    assert res["crystal->dos"]["recall@1"] == 1.0  # near-identical embeddings
    assert res["crystal->text"]["n"] == 0 and np.isnan(res["crystal->text"]["mrr"])
    out, table = evaluate_retrieval(emb, present, tmp_path, ks=(1, 5), trained_pairs=[("crystal", "dos")])
    assert (tmp_path / "retrieval.json").is_file() and (tmp_path / "retrieval_recall@1.png").stat().st_size > 1000
    assert "crystal->dos" in table


def test_all_pairs_rejects_misaligned_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        all_pairs_retrieval({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})


def test_heatmap_has_the_chance_column():
    """The heatmap's last column is the chance level of each pair's candidate count (k / n for
    recall@k), labelled with n; models keep their own columns; off = no column."""
    from mmjax.eval.retrieval import heatmap_values

    res = {"a->b": {"recall@1": 0.5, "n": 800}, "b->a": {"recall@1": 0.4, "n": 800}}
    pairs, cols, values = heatmap_values({"ours": res}, "recall@1")
    assert pairs == ["a->b", "b->a"] and cols == ["ours", "chance (n = 800)"]
    np.testing.assert_allclose(values, [[0.5, 1 / 800], [0.4, 1 / 800]])
    res2 = {"a->b": {"recall@10": 0.5, "n": 100}, "b->c": {"recall@10": 0.9, "n": 40}}
    _, cols, values = heatmap_values({"m": res2}, "recall@10")
    assert cols[-1] == "chance" and np.allclose(values[:, 1], [10 / 100, 10 / 40])
    assert heatmap_values({"ours": res}, "recall@1", chance=False)[1] == ["ours"]
