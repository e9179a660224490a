"""E5 latent-space analysis: PCA (UMAP when installed) maps, silhouette scores, KDE overlap.

* :func:`pca` — numpy SVD of the centred embeddings (XxaCT-NN Fig. 2, MatBind Fig. 6).
* :func:`silhouette_samples` / :func:`silhouette_score` — numpy implementation of Rousseeuw's
  silhouette (same conventions as scikit-learn: a point in a singleton cluster scores 0),
  per-class means as XxaCT-NN Table 5.
* :func:`kde_overlap` and :func:`group_similarity_overlap` — MatBind Fig. 3: distributions of
  pairwise cosine similarities *within* the perovskite group and *within* the non-perovskite
  group, each smoothed with a Gaussian KDE; the overlap coefficient ∫ min(f, g) is reported.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mmjax.eval.report import format_table, new_figure, save_figure, write_json
from mmjax.eval.retrieval import l2_normalize


def pca(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of ``x`` [N, D] via SVD of the centred data.

    Returns (scores [N, k], components [k, D] (unit rows), explained_variance_ratio [k]).
    Sign convention: each component's largest-magnitude loading is positive (deterministic).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca needs x of shape [N >= 2, D], got {x.shape}")
    k = int(n_components)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    var = s**2
    total = var.sum()
    ratio = var[:k] / total if total > 0 else np.zeros(comps.shape[0])
    return xc @ comps.T, comps, ratio


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D map of ``x`` [N, D]: "pca" (always) or "umap" (needs umap-learn; raises otherwise)."""
    if method == "pca":
        return pca(x, 2)[0]
    if method == "umap":
        try:
            import umap  # type: ignore
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("method='umap' needs the umap-learn package; use method='pca'") from err
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(np.asarray(x))
    raise ValueError(f"unknown 2-D embedding method {method!r}; use 'pca' or 'umap'")


def umap_available() -> bool:
    """True when umap-learn can be imported."""
    try:
        import umap  # type: ignore  # noqa: F401
    except ImportError:
        return False
    return True


def _pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
        return np.sqrt(np.maximum(d2, 0.0))
    if metric == "cosine":
        return 1.0 - l2_normalize(a) @ l2_normalize(b).T
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def silhouette_samples(x: np.ndarray, labels: np.ndarray, metric: str = "euclidean", chunk_size: int = 1024) -> np.ndarray:
    """Silhouette value of every point: s_i = (b_i - a_i) / max(a_i, b_i).

    a_i: mean distance to the other members of i's cluster; b_i: smallest mean distance to the
    members of another cluster. Points in singleton clusters get 0 (scikit-learn convention).
    x: [N, D]; labels: [N] (any hashable values, >= 2 distinct and < N). Returns float64 [N].
    Distances are computed in row chunks (memory O(chunk * N)).
    """
    x = np.asarray(x, dtype=np.float64)
    uniq, lab = np.unique(np.asarray(labels), return_inverse=True)
    n, n_lab = x.shape[0], len(uniq)
    if not 2 <= n_lab <= n - 1:
        raise ValueError(f"silhouette needs 2 <= number of labels <= N - 1, got {n_lab} labels for N = {n}")
    counts = np.bincount(lab, minlength=n_lab).astype(np.float64)
    onehot = np.zeros((n, n_lab))
    onehot[np.arange(n), lab] = 1.0
    s = np.empty(n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        dist = _pairwise_distances(x[start:stop], x, metric)
        sums = dist @ onehot  # [c, L] summed distance to each cluster
        own = lab[start:stop]
        rows = np.arange(stop - start)
        own_count = counts[own] - 1.0
        a = np.where(own_count > 0, sums[rows, own] / np.maximum(own_count, 1.0), 0.0)
        means = sums / counts[None, :]
        means[rows, own] = np.inf
        b = means.min(axis=1)
        denom = np.maximum(a, b)
        val = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
        s[start:stop] = np.where(own_count > 0, val, 0.0)
    return s


def silhouette_score(x: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> float:
    """Mean of :func:`silhouette_samples`."""
    return float(np.mean(silhouette_samples(x, labels, metric)))


def per_class_silhouette(x: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> dict:
    """Mean silhouette per label (XxaCT-NN Table 5) plus "mean" over all points."""
    s = silhouette_samples(x, labels, metric)
    labels = np.asarray(labels)
    out = {str(v): float(s[labels == v].mean()) for v in np.unique(labels)}
    out["mean"] = float(s.mean())
    return out


def kde_overlap(a: np.ndarray, b: np.ndarray, n_grid: int = 1024) -> float:
    """Overlap coefficient ∫ min(f_a, f_b) dx of two Gaussian KDEs (scipy, Scott bandwidth).

    a, b: 1-D samples (>= 2 distinct values each). The grid spans both samples' range padded by
    4 bandwidths; the integral is a trapezoid sum. 1 = identical, 0 = disjoint distributions.
    """
    from scipy.stats import gaussian_kde

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    ka, kb = gaussian_kde(a), gaussian_kde(b)
    pad = 4.0 * max(np.sqrt(ka.covariance[0, 0]), np.sqrt(kb.covariance[0, 0]))
    grid = np.linspace(min(a.min(), b.min()) - pad, max(a.max(), b.max()) + pad, n_grid)
    return float(np.trapezoid(np.minimum(ka(grid), kb(grid)), grid))


def within_group_cosine(x: np.ndarray, max_pairs: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """Cosine similarities of all unordered pairs i < j of rows of ``x`` [N, D] (float64 [P]).

    If there are more than ``max_pairs`` pairs, a seeded uniform sample of that many is drawn.
    """
    z = l2_normalize(x)
    n = z.shape[0]
    if n < 2:
        return np.zeros(0)
    total = n * (n - 1) // 2
    if max_pairs is None or total <= max_pairs:
        iu = np.triu_indices(n, k=1)
        return np.einsum("pd,pd->p", z[iu[0]], z[iu[1]])
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=2 * max_pairs)
    j = rng.integers(0, n, size=2 * max_pairs)
    keep = i != j
    i, j = i[keep][:max_pairs], j[keep][:max_pairs]
    return np.einsum("pd,pd->p", z[i], z[j])


def group_similarity_overlap(
    x: np.ndarray, in_group: np.ndarray, max_pairs: int | None = 200_000, seed: int = 0
) -> dict:
    """MatBind Fig. 3: KDE overlap of within-group cosine similarities, group vs. rest.

    x: [N, D] embeddings; in_group: bool [N] (e.g. tolerance factor in the perovskite window).
    Returns {"overlap", "n_group", "n_rest", "mean_sim_group", "mean_sim_rest",
    "sims_group", "sims_rest"} (the similarity samples are for plotting).
    """
    in_group = np.asarray(in_group, dtype=bool)
    sg = within_group_cosine(np.asarray(x)[in_group], max_pairs, seed)
    sr = within_group_cosine(np.asarray(x)[~in_group], max_pairs, seed + 1)
    if sg.size < 2 or sr.size < 2:
        raise ValueError(f"need >= 3 materials in each group, got {int(in_group.sum())} and {int((~in_group).sum())}")
    return {
        "overlap": kde_overlap(sg, sr),
        "n_group": int(in_group.sum()),
        "n_rest": int((~in_group).sum()),
        "mean_sim_group": float(sg.mean()),
        "mean_sim_rest": float(sr.mean()),
        "sims_group": sg,
        "sims_rest": sr,
    }


def plot_map(xy: np.ndarray, values: np.ndarray, path: str | os.PathLike, title: str, categorical: bool, names: Sequence[str] | None = None) -> str:
    """Scatter of a 2-D map coloured by a categorical label or a continuous property."""
    fig, ax = new_figure()
    values = np.asarray(values)
    if categorical:
        for v in np.unique(values):
            sel = values == v
            label = names[int(v)] if names is not None and np.issubdtype(values.dtype, np.integer) else str(v)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, label=label)
        ax.legend(fontsize=7, markerscale=2)
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=6, cmap="viridis")
        fig.colorbar(sc, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    return save_figure(fig, path)


def evaluate_latent(
    embeddings: np.ndarray,
    out_dir: str | os.PathLike,
    crystal_system: np.ndarray | None = None,
    properties: Mapping[str, np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    method: str = "pca",
    in_group: np.ndarray | None = None,
) -> tuple[dict, str]:
    """2-D maps coloured by crystal system and by each property, silhouette scores per
    crystal system, and (when ``in_group`` is given) the group-vs-rest KDE overlap.

    Writes ``latent.json``, ``latent_<method>_crystal_system.png``,
    ``latent_<method>_<property>.png`` and ``latent_similarity_kde.png``; returns (results, table).
    NaN property values are left out of that property's plot.
    """
    out_dir = os.fspath(out_dir)
    xy = embed_2d(embeddings, method)
    res: dict = {"method": method, "n": int(len(xy))}
    if method == "pca":
        res["explained_variance_ratio"] = pca(embeddings, 2)[2]
    rows = []
    if crystal_system is not None:
        cs = np.asarray(crystal_system)
        plot_map(xy, cs, os.path.join(out_dir, f"latent_{method}_crystal_system.png"), "crystal system", True, class_names)
        sil = per_class_silhouette(embeddings, cs)
        if class_names is not None:
            sil = {(class_names[int(k)] if k != "mean" else k): v for k, v in sil.items()}
        res["silhouette"] = sil
        rows += [{"quantity": f"silhouette[{k}]", "value": v} for k, v in sil.items()]
    for name, vals in (properties or {}).items():
        vals = np.asarray(vals, dtype=np.float64)
        ok = np.isfinite(vals)
        plot_map(xy[ok], vals[ok], os.path.join(out_dir, f"latent_{method}_{name}.png"), name, False)
    if in_group is not None:
        ov = group_similarity_overlap(embeddings, in_group)
        fig, ax = new_figure()
        for key, lab in (("sims_group", "group"), ("sims_rest", "rest")):
            ax.hist(ov[key], bins=60, density=True, alpha=0.5, label=f"{lab} (n={ov['n_' + lab]})")
        ax.set_xlabel("cosine similarity within group")
        ax.set_title(f"overlap = {ov['overlap']:.3f}")
        ax.legend()
        save_figure(fig, os.path.join(out_dir, "latent_similarity_kde.png"))
        res["group_overlap"] = {k: v for k, v in ov.items() if not k.startswith("sims_")}
        rows.append({"quantity": "kde_overlap(group, rest)", "value": ov["overlap"]})
    write_json(os.path.join(out_dir, "latent.json"), res)
    return res, format_table(rows, ["quantity", "value"], digits=3)
