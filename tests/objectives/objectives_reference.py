"""Plain-NumPy (float64) reference implementations of the objectives, written from the formulas
in SPEC.md / the papers with explicit loops, independent of the JAX code under test."""

from __future__ import annotations

import itertools
import math

import numpy as np


def normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def logsumexp(values):
    values = np.asarray(values, np.float64).ravel()
    m = values.max()
    return m + math.log(np.exp(values - m).sum())


def info_nce(a, b, tau, mask=None):
    if mask is not None:
        keep = np.asarray(mask, bool)
        a, b = np.asarray(a)[keep], np.asarray(b)[keep]
    if len(a) == 0:
        return 0.0
    a, b = normalize(a), normalize(b)
    logits = a @ b.T / tau
    n = len(a)
    rows = [-logits[i, i] + logsumexp(logits[i, :]) for i in range(n)]
    cols = [-logits[j, j] + logsumexp(logits[:, j]) for j in range(n)]
    return float(np.mean([(r + c) / 2 for r, c in zip(rows, cols)]))


def pairwise_clip(embeddings, present, tau, pairs):
    losses = []
    for m1, m2 in pairs:
        mask = np.asarray(present[m1], bool) & np.asarray(present[m2], bool)
        if mask.any():
            losses.append(info_nce(embeddings[m1], embeddings[m2], tau, mask))
    return float(np.mean(losses)) if losses else 0.0


def tensor_clip(a, b, c, tau, present=None, variant="paper"):
    """Triple loops over the valid rows (equivalent to deleting the invalid rows)."""
    if present is not None:
        keep = np.asarray(present, bool)
        a, b, c = np.asarray(a)[keep], np.asarray(b)[keep], np.asarray(c)[keep]
    n = len(a)
    if n == 0 or (variant == "multimat_code" and n < 3):
        return 0.0
    a, b, c = normalize(a), normalize(b), normalize(c)
    s = np.zeros((n, n, n))
    for i, j, k in itertools.product(range(n), repeat=3):
        s[i, j, k] = sum(a[i, l] * b[j, l] * c[k, l] for l in range(a.shape[1])) / tau

    def entry(axis, x, y, z):  # x on `axis`, (y, z) the other two indices in order
        idx = [None, None, None]
        idx[axis] = x
        others = [p for p in range(3) if p != axis]
        idx[others[0]], idx[others[1]] = y, z
        return tuple(idx)

    axis_losses = []
    for axis in range(3):
        per_row = []
        for x in range(n):
            if variant == "paper":
                lse = logsumexp([s[entry(axis, x, y, z)] for y in range(n) for z in range(n)])
                per_row.append(-s[x, x, x] + lse)
            else:
                negatives = [s[entry(axis, x, y, z)] for y in range(n) for z in range(n)
                             if len({x, y, z}) == 3]
                lse = logsumexp(negatives)
                total = 0.0
                for y in range(n):
                    for z in range(n):
                        distinct = len({x, y, z})
                        weight = 1.0 if distinct == 1 else (0.5 if distinct == 2 else 0.0)
                        total += weight * (-s[entry(axis, x, y, z)] + lse)
                per_row.append(total)
        axis_losses.append(np.mean(per_row))
    return float(np.mean(axis_losses) if variant == "paper" else np.sum(axis_losses))


def _centred_columns(zs, mask):
    out = []
    for z in zs:
        z = np.asarray(z, np.float64)
        if mask is not None:
            z = z[np.asarray(mask, bool)]
        out.append(z - z.mean(axis=0))
    return out


def barlow_twins(z1, z2, lambd, mask=None):
    x, y = _centred_columns([z1, z2], mask)
    d = x.shape[1]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            cij = (x[:, i] * y[:, j]).sum() / (np.linalg.norm(x[:, i]) * np.linalg.norm(y[:, j]))
            loss += (1 - cij) ** 2 if i == j else lambd * cij**2
    return loss


def barlow_twins_3d(z1, z2, z3, lambd, half_targets=True, mask=None):
    x, y, w = _centred_columns([z1, z2, z3], mask)
    d = x.shape[1]
    loss = 0.0
    for i, j, k in itertools.product(range(d), repeat=3):
        num = (x[:, i] * y[:, j] * w[:, k]).sum()
        cijk = num / (np.linalg.norm(x[:, i]) * np.linalg.norm(y[:, j]) * np.linalg.norm(w[:, k]))
        distinct = len({i, j, k})
        if distinct == 1:
            loss += (1 - cijk) ** 2
        elif distinct == 2 and half_targets:
            loss += (0.5 - cijk) ** 2
        else:
            loss += lambd * cijk**2
    return loss


def vicreg(z, z_other=None, gamma=1.0, lambda_var=1.0, lambda_cov=1.0, lambda_inv=1.0,
           mask=None, use_std=False):
    branches = [z] if z_other is None else [z, z_other]
    if mask is not None:
        branches = [np.asarray(x)[np.asarray(mask, bool)] for x in branches]
    reg = 0.0
    for x in branches:
        x = np.asarray(x, np.float64)
        cov = np.cov(x, rowvar=False, ddof=1)
        var = np.diag(cov)
        spread = np.sqrt(var + 1e-4) if use_std else var
        reg += lambda_var * np.maximum(0.0, gamma - spread).sum()
        reg += lambda_cov * sum(cov[i, j] ** 2 for i in range(len(var)) for j in range(len(var)) if i != j)
    loss = reg / len(branches)
    if z_other is not None:
        loss += lambda_inv * np.mean((branches[0] - branches[1]) ** 2)
    return loss
