"""Representation health of a pretraining run: is any modality's embedding collapsing?

`embedding_health(embeddings)` takes ``{modality: float [n, d]}`` (the rows of one evaluation,
paired: row i of every modality is the same material) and returns, per modality,

* ``health/<m>/std_mean``, ``std_min``: per-dimension std over the rows of the L2-normalised
  embeddings (a direction-uniform embedding has about 1/sqrt(d) in every dimension; a collapsed
  one tends to 0), and ``health/<m>/raw_std_mean`` of the embeddings as they are (their scale);
* ``health/<m>/effective_rank``: exp of the entropy of the normalised singular values of the
  centred embeddings (Roy & Vetterli 2007): d for isotropic, 1 for a line;
* ``health/<m>/uniformity``: log mean exp(-2 |u_i - u_j|^2) over pairs of normalised rows (Wang &
  Isola 2020; lower = more uniform, 0 = all rows equal);

and per pair of modalities ``health/<a>~<b>/alignment``: mean |u_a - u_b|^2 of paired normalised
rows (0 = perfectly aligned, 2 = orthogonal on average).

`collapse_warnings` names each modality whose ``std_mean`` is below 10 % of 1/sqrt(d) or whose
effective rank is below 10 % of d. `mmjax.train.loop` writes these metrics at every evaluation of
a system that can embed (``metrics.jsonl`` and TensorBoard) and prints the warnings.
"""

from __future__ import annotations

import itertools

import numpy as np

from mmjax.train.outputs import collect_outputs

COLLAPSE_FRACTION = 0.1


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of s / sum(s)) of the centred rows' singular values s; 0 for all-equal rows."""
    s = np.linalg.svd(x - x.mean(axis=0, keepdims=True), compute_uv=False)
    if s.sum() <= 1e-12 * max(1.0, np.abs(x).max()):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def uniformity(u: np.ndarray, t: float = 2.0) -> float:
    """log mean_{i<j} exp(-t |u_i - u_j|^2) of normalised rows ``u``."""
    sq = np.maximum(2.0 - 2.0 * u @ u.T, 0.0)
    iu = np.triu_indices(len(u), k=1)
    return float(np.log(np.mean(np.exp(-t * sq[iu]))))


def embedding_health(embeddings: dict[str, np.ndarray]) -> dict[str, float]:
    """Health metrics (module docstring) of ``{modality: [n, d]}``, n >= 2 paired rows."""
    out: dict[str, float] = {}
    unit = {}
    for name, x in sorted(embeddings.items()):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if len(x) < 2:
            continue
        u = _normalise(x)
        unit[name] = u
        std = u.std(axis=0)
        out[f"health/{name}/std_mean"] = float(std.mean())
        out[f"health/{name}/std_min"] = float(std.min())
        out[f"health/{name}/raw_std_mean"] = float(x.std(axis=0).mean())
        out[f"health/{name}/effective_rank"] = effective_rank(x)
        out[f"health/{name}/dim"] = float(x.shape[1])
        out[f"health/{name}/uniformity"] = uniformity(u)
    for a, b in itertools.combinations(sorted(unit), 2):
        if unit[a].shape == unit[b].shape:
            out[f"health/{a}~{b}/alignment"] = float(np.mean(np.sum((unit[a] - unit[b]) ** 2, axis=1)))
    return out


def collapse_warnings(health: dict[str, float]) -> list[str]:
    """One line per collapsing modality of an `embedding_health` result."""
    lines = []
    for key in sorted(k for k in health if k.endswith("/std_mean")):
        name = key.split("/")[1]
        d = health[f"health/{name}/dim"]
        std, rank = health[key], health[f"health/{name}/effective_rank"]
        why = []
        if std < COLLAPSE_FRACTION / np.sqrt(d):
            why.append(f"per-dimension std {std:.3g} < {COLLAPSE_FRACTION:g}/sqrt({d:.0f})")
        if rank < COLLAPSE_FRACTION * d:
            why.append(f"effective rank {rank:.2f} < {COLLAPSE_FRACTION:.0%} of {d:.0f} dimensions")
        if why:
            lines.append(f"representation collapse in {name!r}: " + "; ".join(why))
    return lines


# ----------------------------------------------------------------------------------------------
# the training loop's hook


def wanted(config) -> bool:
    """``train.health``: "on", "off", or "auto" = on for label-free runs (no ``data.targets``)."""
    mode = str(config.train.get("health", "auto"))
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"config.train.health={mode!r}: expected 'auto', 'on' or 'off'")
    if mode == "auto":
        data = config.get("data", None)
        return data is not None and "targets" in data and not tuple(data.targets)
    return mode == "on"


def write(system, params, params_shardings, mesh, eval_iter_fn, writer, step: int, batches: int,
          log=print) -> bool:
    """Representation health (`embedding_health`) of ``system.embed`` on the first ``batches``
    eval batches, written with the eval metrics; collapse warnings go to ``log``. Returns False
    when the system cannot embed (the check is then off for the run)."""
    try:
        out = collect_outputs(system.embed, params, params_shardings, mesh,
                              itertools.islice(eval_iter_fn(), max(1, batches)))
    except NotImplementedError:
        return False
    emb = {k: v for k, v in out.items() if k != "ids" and np.asarray(v).ndim == 2
           and np.issubdtype(np.asarray(v).dtype, np.floating)}
    health = embedding_health(emb)
    if health:
        writer.write(step, health)
        for line in collapse_warnings(health):
            log(f"warning (step {step}): {line}")
    return True
