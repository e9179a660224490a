"""E4 discovery by latent similarity (MultiMat Sec. "Material discovery", Fig. 3B, Eq. 5).

A target DOS is embedded with the DOS encoder, every candidate crystal with the crystal encoder;
the k candidates with the highest cosine similarity are retrieved, and the best of the first n
of them (smallest normalised DOS MAE to the target) is scored as n grows.

Normalised MAE (MultiMat Eq. 5), both curves linearly interpolated onto one equispaced grid
over [-5, 5] eV (E - E_F)::

    nMAE = ∫ |ρ_target(E) - ρ_candidate(E)| dE / ∫ ρ_target(E) dE

Integrals use the trapezoid rule on the grid. A target whose integral is <= 0 (no states in the
window) has an undefined nMAE: it is reported as NaN and left out of the averages (the count
of such targets is returned).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mmjax.eval.report import format_table, new_figure, save_figure, write_json
from mmjax.eval.retrieval import l2_normalize

DEFAULT_WINDOW = (-5.0, 5.0)
DEFAULT_NS = (1, 2, 3, 5, 10, 20, 50)


def dos_grid(window: tuple[float, float] = DEFAULT_WINDOW, n_points: int = 1001) -> np.ndarray:
    """Equispaced energy grid (eV, float64 [n_points]) covering ``window`` inclusive."""
    lo, hi = window
    if not hi > lo or n_points < 2:
        raise ValueError(f"need hi > lo and n_points >= 2, got window={window}, n_points={n_points}")
    return np.linspace(lo, hi, n_points)


def resample_dos(energies: np.ndarray, densities: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of each DOS onto ``grid``.

    energies, densities: [N, L] or [L] (eV, states/eV; energies increasing per row).
    Outside a row's energy range the density is taken as 0 (no extrapolation).
    Returns float64 [N, G] (or [G] for 1-D input).
    """
    e = np.asarray(energies, dtype=np.float64)
    d = np.asarray(densities, dtype=np.float64)
    single = e.ndim == 1
    e, d = np.atleast_2d(e), np.atleast_2d(d)
    if e.shape != d.shape:
        raise ValueError(f"energies and densities shapes differ: {e.shape} vs {d.shape}")
    out = np.stack([np.interp(grid, e[i], d[i], left=0.0, right=0.0) for i in range(e.shape[0])])
    return out[0] if single else out


def normalized_dos_mae(target: np.ndarray, candidates: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """MultiMat Eq. 5 for one target against many candidates already on ``grid``.

    target: [G]; candidates: [C, G] or [G]. Returns float64 [C] (or scalar), NaN when the
    target's integral over the grid is <= 0.
    """
    t = np.asarray(target, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    area = np.trapezoid(t, grid)
    num = np.trapezoid(np.abs(c - t), grid, axis=-1)
    if not area > 0:
        return np.full(np.shape(num), np.nan)
    return num / area


def best_of_n_curve(
    query_emb: np.ndarray,
    candidate_emb: np.ndarray,
    query_dos: np.ndarray,
    candidate_dos: np.ndarray,
    grid: np.ndarray,
    ns: Sequence[int] = DEFAULT_NS,
    exclude: np.ndarray | None = None,
) -> dict:
    """Best-of-n normalised DOS MAE versus n for latent-similarity neighbours.

    query_emb [Q, D], candidate_emb [C, D]: embeddings in the shared space (DOS queries,
        crystal candidates). query_dos [Q, G], candidate_dos [C, G]: DOS on ``grid``.
    exclude: optional int [Q] candidate index to drop for each query (e.g. the query's own
        material when queries and candidates overlap; -1 = none).
    Neighbours are ranked by cosine similarity (ties broken by lower candidate index).
    Returns {"n": [...], "mean_nmae": [...], "median_nmae": [...], "n_targets": int,
    "n_undefined_targets": int, "per_query_best": [Q, len(ns)]}.
    """
    q = l2_normalize(query_emb)
    c = l2_normalize(candidate_emb)
    ns = [int(n) for n in ns if 0 < int(n) <= c.shape[0] - (exclude is not None)]
    if not ns:
        raise ValueError(f"no n in {ns} fits {c.shape[0]} candidates")
    n_max = max(ns)
    best = np.full((q.shape[0], len(ns)), np.nan)
    for i in range(q.shape[0]):
        sim = c @ q[i]
        if exclude is not None and exclude[i] >= 0:
            sim[exclude[i]] = -np.inf
        order = np.argsort(-sim, kind="stable")[:n_max]
        errs = normalized_dos_mae(query_dos[i], candidate_dos[order], grid)
        if np.all(np.isnan(errs)):
            continue
        running = np.minimum.accumulate(errs)
        best[i] = running[np.asarray(ns) - 1]
    defined = ~np.isnan(best[:, 0])
    return {
        "n": ns,
        "mean_nmae": np.mean(best[defined], axis=0).tolist() if defined.any() else [float("nan")] * len(ns),
        "median_nmae": np.median(best[defined], axis=0).tolist() if defined.any() else [float("nan")] * len(ns),
        "n_targets": int(defined.sum()),
        "n_undefined_targets": int((~defined).sum()),
        "per_query_best": best,
    }


def reference_best_of_n(
    query_dos: np.ndarray,
    candidate_dos: np.ndarray,
    grid: np.ndarray,
    ns: Sequence[int] = DEFAULT_NS,
    exclude: np.ndarray | None = None,
) -> dict:
    """Chance level and floor of the best-of-n normalised DOS MAE, exactly (no sampling).

    For each query the candidates' nMAEs e_(1) <= ... <= e_(C) (its ``exclude`` index dropped)
    give (a) the expected best of n candidates drawn uniformly **without replacement**
    (a random ranking), E[min] = sum_j e_(j) C(C - j, n - 1) / C(C, n); and (b) the floor
    e_(1), the best candidate in the pool (a perfect ranking reaches it at n = 1).
    query_dos [Q, G], candidate_dos [C, G] on ``grid``. Queries with an undefined nMAE
    (no states in the window) are left out. Returns {"n", "random_mean_nmae" [len(ns)],
    "floor_mean_nmae", "n_targets"}.
    """
    from scipy.special import gammaln

    c_total = np.asarray(candidate_dos).shape[0] - (exclude is not None)
    ns = [int(n) for n in ns if 0 < int(n) <= c_total]
    if not ns:
        raise ValueError(f"no n fits {c_total} candidates")
    rand, floor = [], []
    for i in range(np.asarray(query_dos).shape[0]):
        errs = normalized_dos_mae(query_dos[i], candidate_dos, grid)
        if exclude is not None and exclude[i] >= 0:
            errs = np.delete(errs, exclude[i])
        if np.all(np.isnan(errs)):
            continue
        e = np.sort(errs)
        c = e.size
        j = np.arange(1, c + 1)
        row = []
        for n in ns:
            # log C(c - j, n - 1) - log C(c, n); zero weight where c - j < n - 1
            ok = (c - j) >= (n - 1)
            logw = np.full(c, -np.inf)
            cj = c - j[ok]
            logw[ok] = (gammaln(cj + 1) - gammaln(n) - gammaln(cj - n + 2)) - (
                gammaln(c + 1) - gammaln(n + 1) - gammaln(c - n + 1))
            row.append(float(np.sum(np.exp(logw) * e)))
        rand.append(row)
        floor.append(e[0])
    return {"n": ns, "random_mean_nmae": np.mean(rand, axis=0).tolist() if rand else [float("nan")] * len(ns),
            "floor_mean_nmae": float(np.mean(floor)) if floor else float("nan"), "n_targets": len(rand)}


def evaluate_discovery(
    query_emb: np.ndarray,
    candidate_emb: np.ndarray,
    query_dos: np.ndarray,
    candidate_dos: np.ndarray,
    grid: np.ndarray,
    out_dir: str | os.PathLike,
    ns: Sequence[int] = DEFAULT_NS,
    exclude: np.ndarray | None = None,
    random_seed: int | None = 0,
) -> tuple[dict, str]:
    """:func:`best_of_n_curve` plus a random-neighbour baseline (same n, random candidate
    embeddings drawn with ``random_seed``; None skips it). Writes ``discovery.json`` and
    ``discovery_nmae.png`` under ``out_dir``; returns (results, text table)."""
    res = best_of_n_curve(query_emb, candidate_emb, query_dos, candidate_dos, grid, ns, exclude)
    out = {k: v for k, v in res.items() if k != "per_query_best"}
    if random_seed is not None:
        rand_emb = np.random.default_rng(random_seed).normal(size=np.shape(candidate_emb))
        base = best_of_n_curve(query_emb, rand_emb, query_dos, candidate_dos, grid, ns, exclude)
        out["random_mean_nmae"] = base["mean_nmae"]
    out_dir = os.fspath(out_dir)
    write_json(os.path.join(out_dir, "discovery.json"), out)
    fig, ax = new_figure()
    ax.plot(out["n"], out["mean_nmae"], "o-", label="latent neighbours")
    if "random_mean_nmae" in out:
        ax.plot(out["n"], out["random_mean_nmae"], "s--", label="random neighbours")
    ax.set_xscale("log")
    ax.set_xlabel("n nearest candidates considered")
    ax.set_ylabel("best-of-n normalised DOS MAE [-5, 5] eV")
    ax.legend()
    save_figure(fig, os.path.join(out_dir, "discovery_nmae.png"))
    rows = [
        {"n": n, "mean_nmae": m, "median_nmae": md, **({"random_mean_nmae": out["random_mean_nmae"][j]} if "random_mean_nmae" in out else {})}
        for j, (n, m, md) in enumerate(zip(out["n"], out["mean_nmae"], out["median_nmae"]))
    ]
    return out, format_table(rows, digits=3)
