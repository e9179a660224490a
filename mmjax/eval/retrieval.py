"""E3 cross-modal retrieval: recall@k, MRR, mean/median rank for every ordered modality pair.

Protocol (MatBind ``full_database_retrieval`` / MultiMat Fig. 3A): for an ordered pair
(query modality q, key modality k), keep the materials that have **both** modalities; each
query embedding ranks all key embeddings of those materials by exact cosine similarity, and the
rank of the same material's key is recorded (1 = retrieved first).

Ties are handled **pessimistically**: the rank is 1 + the number of *other* keys whose
similarity is >= the true key's similarity, so a query whose embedding ties with a wrong key
never gets credit for the tie (as MatBind's in-training metric). Random or collapsed
embeddings therefore score at chance or worse, never better.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from mmjax.eval.report import format_table, new_figure, save_figure, write_json

DEFAULT_KS = (1, 5, 10, 25)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` [N, D] divided by their L2 norm (zero rows stay zero); float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def true_match_ranks(queries: np.ndarray, keys: np.ndarray, chunk_size: int = 2048) -> np.ndarray:
    """1-based pessimistic rank of key i for query i under cosine similarity.

    queries, keys: [N, D] (row i of both belongs to the same material; D may differ only if
    the embeddings live in a shared space, so it must match). Returns int64 [N].
    Computed in query chunks of ``chunk_size`` rows so memory stays O(chunk * N).
    """
    q = l2_normalize(queries)
    k = l2_normalize(keys)
    if q.ndim != 2 or k.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"queries and keys must both be [N, D] with equal shapes, got {q.shape} and {k.shape}")
    n = q.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sim = q[start:stop] @ k.T  # [c, N]
        rows = np.arange(stop - start)
        true = sim[rows, np.arange(start, stop)]
        # >= counts the true key itself once, so this is already 1 + #(other keys >= true).
        ranks[start:stop] = np.sum(sim >= true[:, None], axis=1)
    return ranks


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """recall@k (fraction of ranks <= k), MRR (mean 1/rank), mean and median rank, n.

    An empty ``ranks`` gives NaN metrics and n = 0.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    n = ranks.size
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks <= k)) if n else float("nan")
    out["mrr"] = float(np.mean(1.0 / ranks)) if n else float("nan")
    out["mean_rank"] = float(np.mean(ranks)) if n else float("nan")
    out["median_rank"] = float(np.median(ranks)) if n else float("nan")
    out["n"] = int(n)
    return out


def chance_metrics(n: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking of ``n`` keys (the true key's rank is
    uniform on 1..n): recall@k = min(k, n) / n, MRR = H_n / n (H_n the n-th harmonic number),
    mean rank = median rank = (n + 1) / 2. n = 0 gives NaN metrics (like :func:`rank_metrics`).
    """
    n = int(n)
    out: dict[str, float] = {}
    nan = float("nan")
    for k in ks:
        out[f"recall@{k}"] = min(int(k), n) / n if n else nan
    out["mrr"] = float(np.sum(1.0 / np.arange(1, n + 1)) / n) if n else nan
    out["mean_rank"] = (n + 1) / 2 if n else nan
    out["median_rank"] = (n + 1) / 2 if n else nan
    out["n"] = n
    return out


def pair_key(query: str, key: str) -> str:
    """String key of an ordered pair, e.g. "dos->crystal" (query modality first)."""
    return f"{query}->{key}"


def all_pairs_retrieval(
    embeddings: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 2048,
) -> dict[str, dict[str, float]]:
    """Retrieval metrics for every ordered pair of modalities.

    embeddings: modality -> [N, D] (rows aligned: row i is material i in every modality; rows
        of absent modalities may hold anything).
    present: modality -> bool [N]; missing entries mean "all present".
    Returns ``{"q->k": metrics}`` over the materials having both q and k
    (see :func:`rank_metrics`; metrics are NaN with n = 0 when no material has both).
    """
    names = list(embeddings)
    sizes = {m: np.asarray(embeddings[m]).shape[0] for m in names}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"all modalities need the same number of rows (materials), got {sizes}")
    n = next(iter(sizes.values()), 0)
    masks = {}
    for m in names:
        mask = np.ones(n, dtype=bool) if present is None or m not in present else np.asarray(present[m], dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"present[{m!r}] must be bool [{n}], got shape {mask.shape}")
        masks[m] = mask
    results = {}
    for q, k in itertools.permutations(names, 2):
        both = masks[q] & masks[k]
        ranks = true_match_ranks(np.asarray(embeddings[q])[both], np.asarray(embeddings[k])[both], chunk_size)
        results[pair_key(q, k)] = rank_metrics(ranks, ks)
    return results


def heatmap_values(results_by_model, metric: str = "recall@1", chance: bool = True):
    """``(pairs, columns, values [pairs, columns])`` of `retrieval_heatmap`: one column per model
    (NaN where a model lacks the pair), plus the chance column when asked and defined."""
    models = list(results_by_model)
    pairs = sorted({p for r in results_by_model.values() for p in r})
    values = np.full((len(pairs), len(models)), np.nan)
    for j, m in enumerate(models):
        for i, p in enumerate(pairs):
            if p in results_by_model[m]:
                v = results_by_model[m][p].get(metric)
                values[i, j] = np.nan if v is None else v
    if chance and metric in chance_metrics(2):
        col = np.full((len(pairs), 1), np.nan)
        for i, p in enumerate(pairs):
            n = next((int(r[p]["n"]) for r in results_by_model.values() if p in r and r[p].get("n")), 0)
            if n:
                col[i, 0] = chance_metrics(n)[metric]
        ns = sorted({int(r[p]["n"]) for r in results_by_model.values() for p in r if r[p].get("n")})
        values = np.concatenate([values, col], axis=1)
        models = models + [f"chance (n = {ns[0]})" if len(ns) == 1 else "chance"]
    return pairs, models, values


def retrieval_heatmap(
    results_by_model: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | os.PathLike,
    metric: str = "recall@1",
    trained_pairs: Mapping[str, Iterable[tuple[str, str]]] | None = None,
    chance: bool = True,
) -> str:
    """MatBind Figure 2-style heatmap: rows are ordered "query->key" pairs, columns are models.

    results_by_model: model name -> output of :func:`all_pairs_retrieval`.
    trained_pairs: model name -> unordered pairs the model was trained to align; cells of other
        pairs (never trained together, "emergent") are marked with "*". Pairs a model lacks
        are left blank (white).
    chance: a last column "chance (n)" with `chance_metrics` of each pair's candidate count (the
        first model's ``n``), when ``metric`` has a chance level. Returns the PNG path.
    """
    pairs, models, values = heatmap_values(results_by_model, metric, chance)
    fig, ax = new_figure(figsize=(4.0 + 1.2 * len(models), 1.5 + 0.38 * len(pairs)))
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0 if "recall" in metric or metric == "mrr" else None, aspect="auto")
    for j, m in enumerate(models):
        trained = {frozenset(p) for p in (trained_pairs or {}).get(m, [])}
        for i, p in enumerate(pairs):
            if np.isnan(values[i, j]):
                continue
            q, k = p.split("->")
            emergent = trained_pairs is not None and frozenset((q, k)) not in trained
            label = (f"{values[i, j]:.2g}" if m.startswith("chance") else
                     f"{values[i, j]:.2f}" + ("*" if emergent else ""))
            ax.text(j, i, label, ha="center", va="center", color="w" if values[i, j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_yticks(range(len(pairs)), pairs)
    ax.set_xlabel("model")
    ax.set_ylabel("query -> key")
    title = metric + (" (* = pair never trained together)" if trained_pairs is not None else "")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def evaluate_retrieval(
    embeddings: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray] | None,
    out_dir: str | os.PathLike,
    ks: Sequence[int] = DEFAULT_KS,
    model_name: str = "model",
    trained_pairs: Iterable[tuple[str, str]] | None = None,
) -> tuple[dict, str]:
    """Run :func:`all_pairs_retrieval`, write ``retrieval.json`` and ``retrieval_recall@1.png``.

    Returns (results, text table). The JSON holds ``{"model", "ks", "pairs": {...}}``.
    """
    results = all_pairs_retrieval(embeddings, present, ks)
    out_dir = os.fspath(out_dir)
    write_json(os.path.join(out_dir, "retrieval.json"), {"model": model_name, "ks": list(ks), "pairs": results})
    tp = None if trained_pairs is None else {model_name: list(trained_pairs)}
    retrieval_heatmap({model_name: results}, os.path.join(out_dir, f"retrieval_recall@{ks[0]}.png"), f"recall@{ks[0]}", tp)
    rows = [{"pair": p, **r} for p, r in results.items()]
    cols = ["pair", "n"] + [f"recall@{k}" for k in ks] + ["mrr", "mean_rank", "median_rank"]
    return results, format_table(rows, cols, digits=3)
