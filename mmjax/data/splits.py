"""Index splits: the official Matbench folds, random splits, nested validation splits.

All functions return int64 index arrays into rows in file order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MATBENCH_SEED = 18012019
MATBENCH_N_FOLDS = 5


def matbench_folds(n_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 5 official Matbench (train, test) index pairs over ``n_rows`` rows in file order.

    Same as ``sklearn.model_selection.KFold(5, shuffle=True, random_state=18012019)``:
    ``idx = arange(n)`` shuffled by ``np.random.RandomState(18012019)``; fold sizes ``n // 5``
    plus one for each of the first ``n % 5`` folds; fold j's test set is the j-th consecutive
    chunk of ``idx``; train is every other row. Both arrays are sorted, as KFold returns them.
    """
    n_rows = int(n_rows)
    if n_rows < MATBENCH_N_FOLDS:
        raise ValueError(f"need at least {MATBENCH_N_FOLDS} rows for Matbench folds, got {n_rows}")
    idx = np.arange(n_rows, dtype=np.int64)
    np.random.RandomState(MATBENCH_SEED).shuffle(idx)
    sizes = np.full(MATBENCH_N_FOLDS, n_rows // MATBENCH_N_FOLDS, dtype=np.int64)
    sizes[: n_rows % MATBENCH_N_FOLDS] += 1
    folds = []
    start = 0
    for size in sizes:
        test = np.sort(idx[start : start + size])
        in_test = np.zeros(n_rows, dtype=bool)
        in_test[test] = True
        folds.append((np.flatnonzero(~in_test).astype(np.int64), test))
        start += size
    return folds


def matbench_fold_of_rows(n_rows: int) -> np.ndarray:
    """int64 [n_rows]: the official fold (0..4) whose test set holds each row."""
    fold_of = np.empty(int(n_rows), dtype=np.int64)
    for j, (_, test) in enumerate(matbench_folds(n_rows)):
        fold_of[test] = j
    return fold_of


def random_split(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Disjoint random index sets covering ``range(n)``, one per fraction (each sorted).

    fractions: non-negative, summing to 1 (within 1e-6). Sizes are ``floor(f * n)`` with the
    remaining rows given one each to the parts with the largest fractional remainders, so the
    sizes always sum to n. Deterministic in ``seed``.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exact = fr * n
    sizes = np.floor(exact).astype(np.int64)
    remainder = n - int(sizes.sum())
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return tuple(np.sort(perm[a:b]).astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:]))


def validation_split(train_idx: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nested validation: split a training index set into (train_sub, val), both sorted.

    Only indices in ``train_idx`` are used (Matbench protocol: the test fold is never touched).
    ``round(fraction * len(train_idx))`` indices go to validation, at least 1 when
    ``0 < fraction`` and ``len(train_idx) > 1``.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if train_idx.ndim != 1:
        raise ValueError(f"train_idx must be 1-D, got shape {train_idx.shape}")
    if len(np.unique(train_idx)) != len(train_idx):
        raise ValueError("train_idx has repeated indices")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_val = int(round(fraction * len(train_idx)))
    if fraction > 0 and len(train_idx) > 1:
        n_val = max(n_val, 1)
    perm = np.random.default_rng(seed).permutation(len(train_idx))
    val = np.sort(train_idx[perm[:n_val]])
    sub = np.sort(train_idx[perm[n_val:]])
    return sub, val
