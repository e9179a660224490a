"""E1 probes on frozen embeddings: closed-form ridge, trained linear heads, classification.

Rules kept everywhere: feature standardisation statistics come from the **training** rows
only; every hyperparameter (ridge alpha, L2 strength, early-stopping epoch) is chosen on the
**validation** rows; the test rows are only ever predicted.

Shapes: x_* are float [N, D] embeddings; regression targets y_* are float [N] or [N, T];
classification labels are int [N] in [0, n_classes) (crystal system: 7 classes, index into
``mmjax.data.schema.CRYSTAL_SYSTEMS``; space group: 231 classes 0..230, 0 unused).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.eval.analyses import per_class_accuracy
from mmjax.eval.finetune import fit_with_early_stopping
from mmjax.eval.report import format_table, new_figure, save_figure, write_json

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
N_SPACE_GROUP_CLASSES = 231


# ---------------------------------------------------------------- metrics


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² and max |error| (averaged over targets for [N, T]); n."""
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    err = yp - yt
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    r2 = 1.0 - np.sum(err**2, axis=0) / np.where(ss_tot > 0, ss_tot, np.nan)
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(np.mean(r2)),
        "max_error": float(np.max(np.abs(err))) if err.size else float("nan"),
        "n": int(yt.shape[0]),
    }


def classification_metrics(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall over classes present in ``labels``), n."""
    labels = np.asarray(labels)
    pred = np.asarray(pred)
    present = np.unique(labels)
    recalls = [np.mean(pred[labels == c] == c) for c in present]
    return {
        "accuracy": float(np.mean(pred == labels)) if labels.size else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "n": int(labels.size),
    }


# ---------------------------------------------------------------- standardisation + ridge


@dataclasses.dataclass
class Standardizer:
    """Per-feature mean and std from training rows (std 0 -> 1 so constant features stay 0)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        x = np.asarray(x, dtype=np.float64)
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept.

    Minimises ||y - x w - b||² + alpha ||w||² (x as given, no standardisation here):
    w = (x_cᵀ x_c + alpha I)⁻¹ x_cᵀ y_c with x_c, y_c centred on their means, b = ȳ - x̄ w.
    x: [N, D]; y: [N] or [N, T]. Returns (w [D] or [D, T], b scalar or [T]), float64.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc)
    return w, ym - xm @ w


@dataclasses.dataclass
class RidgeProbe:
    """A fitted ridge probe: standardiser (train statistics), alpha, weights, the validation
    MAE of every alpha tried."""

    scaler: Standardizer
    alpha: float
    w: np.ndarray
    b: np.ndarray
    val_mae_by_alpha: dict[float, float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.scaler(x) @ self.w + self.b


def ridge_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> RidgeProbe:
    """Fit ridge on standardised training features for every alpha; keep the alpha with the
    lowest validation MAE (ties -> the larger alpha, the simpler model). Test data never enters."""
    if len(x_train) < 2 or len(x_val) < 1:
        raise ValueError(f"ridge_probe needs >= 2 training and >= 1 validation rows, got {len(x_train)}, {len(x_val)}")
    scaler = Standardizer.fit(x_train)
    xs_train, xs_val = scaler(x_train), scaler(x_val)
    fits, maes = {}, {}
    for a in sorted(float(a) for a in alphas):
        w, b = ridge_fit(xs_train, y_train, a)
        fits[a] = (w, b)
        maes[a] = float(np.mean(np.abs(xs_val @ w + b - np.asarray(y_val, dtype=np.float64))))
    best = min(maes, key=lambda a: (maes[a], -a))
    return RidgeProbe(scaler, best, *fits[best], maes)


# ---------------------------------------------------------------- trained linear head


@dataclasses.dataclass
class LinearHead:
    """Trained linear head on standardised features. For regression ``y_mean``/``y_std`` undo
    the target standardisation; for classification ``n_classes`` > 0 and predict returns labels."""

    scaler: Standardizer
    params: dict
    n_classes: int
    y_mean: np.ndarray | None
    y_std: np.ndarray | None
    best_epoch: int
    history: list[dict]

    def logits(self, x: np.ndarray) -> np.ndarray:
        xs = self.scaler(x)
        return xs @ np.asarray(self.params["w"], dtype=np.float64) + np.asarray(self.params["b"], dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.logits(x)
        if self.n_classes:
            return np.argmax(out, axis=-1)
        out = out * self.y_std + self.y_mean
        return out[:, 0] if self.y_mean.shape == (1,) else out


def linear_head_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_classes: int = 0,
    learning_rate: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    max_epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
) -> LinearHead:
    """Train ``logits = x_s W + b`` with optax AdamW, early-stopped on the validation split.

    Regression (n_classes = 0): MSE on train-standardised targets, monitor validation MAE.
    Classification (n_classes > 0): softmax cross-entropy, monitor validation accuracy.
    Minibatches have a fixed size (min(batch_size, N_train); the remainder of each shuffled
    epoch is dropped) so the step compiles once.
    """
    scaler = Standardizer.fit(x_train)
    xs_train = scaler(x_train).astype(np.float32)
    xs_val = scaler(x_val).astype(np.float32)
    d = xs_train.shape[1]
    if n_classes:
        yt = np.asarray(y_train, dtype=np.int32)
        yv = np.asarray(y_val, dtype=np.int32)
        if yt.min() < 0 or max(yt.max(), yv.max()) >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}), got range [{min(yt.min(), yv.min())}, {max(yt.max(), yv.max())}]")
        y_mean = y_std = None
        out_dim = n_classes
    else:
        y2 = np.asarray(y_train, dtype=np.float64).reshape(len(xs_train), -1)
        y_mean, y_std = y2.mean(axis=0), y2.std(axis=0)
        y_std = np.where(y_std > 0, y_std, 1.0)
        yt = ((y2 - y_mean) / y_std).astype(np.float32)
        yv = np.asarray(y_val, dtype=np.float64).reshape(len(xs_val), -1)
        out_dim = yt.shape[1]

    key = jax.random.PRNGKey(seed)
    params = {"w": jax.random.normal(key, (d, out_dim), jnp.float32) * (1.0 / np.sqrt(d)), "b": jnp.zeros((out_dim,), jnp.float32)}
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_fn(p, xb, yb):
        out = xb @ p["w"] + p["b"]
        if n_classes:
            return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean()
        return jnp.mean((out - yb) ** 2)

    @jax.jit
    def step(p, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    bs = min(int(batch_size), len(xs_train))
    rng = np.random.default_rng(seed)

    def train_epoch(state, epoch):
        p, opt_state = state
        perm = rng.permutation(len(xs_train))
        losses = []
        for s in range(0, len(perm) - bs + 1, bs):
            idx = perm[s : s + bs]
            p, opt_state, loss = step(p, opt_state, xs_train[idx], yt[idx])
            losses.append(loss)
        return (p, opt_state), {"loss": float(np.mean(jax.device_get(losses)))}

    def evaluate(state):
        p = state[0]
        out = np.asarray(xs_val @ np.asarray(p["w"]) + np.asarray(p["b"]), dtype=np.float64)
        if n_classes:
            return {"accuracy": float(np.mean(np.argmax(out, -1) == yv))}
        return {"mae": float(np.mean(np.abs(out * y_std + y_mean - yv)))}

    res = fit_with_early_stopping(
        (params, tx.init(params)),
        train_epoch,
        evaluate,
        monitor="accuracy" if n_classes else "mae",
        mode="max" if n_classes else "min",
        patience=patience,
        max_epochs=max_epochs,
    )
    best_params = jax.device_get(res.state[0])
    return LinearHead(scaler, best_params, n_classes, y_mean, y_std, res.best_epoch, res.history)


def logistic_probe(
    x_train: np.ndarray,
    labels_train: np.ndarray,
    x_val: np.ndarray,
    labels_val: np.ndarray,
    n_classes: int,
    weight_decays: Sequence[float] = (0.0, 1e-3, 1e-2),
    **kwargs,
) -> tuple[LinearHead, dict[float, float]]:
    """Multinomial logistic regression: :func:`linear_head_probe` with cross-entropy for each
    L2 strength (AdamW weight decay); the strength with the best validation accuracy wins
    (ties -> stronger decay). Returns (head, {weight_decay: validation accuracy})."""
    heads, accs = {}, {}
    for wd in sorted(float(w) for w in weight_decays):
        head = linear_head_probe(x_train, labels_train, x_val, labels_val, n_classes=n_classes, weight_decay=wd, **kwargs)
        heads[wd] = head
        accs[wd] = float(np.mean(head.predict(x_val) == np.asarray(labels_val)))
    best = max(accs, key=lambda w: (accs[w], w))
    return heads[best], accs


# ---------------------------------------------------------------- end-to-end report


def evaluate_regression_probe(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    out_dir: str | os.PathLike,
    name: str = "target",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    train_head: bool = True,
    **head_kwargs,
) -> tuple[dict, str]:
    """Ridge (and optionally a trained linear head) on ``splits = {"train": (x, y), "val": ...,
    "test": ...}``; writes ``probe_<name>.json`` and a test parity plot ``probe_<name>.png``.
    Returns (results, text table)."""
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["val"], splits["test"]
    ridge = ridge_probe(xtr, ytr, xva, yva, alphas)
    res = {
        "ridge": {
            "alpha": ridge.alpha,
            "val": regression_metrics(yva, ridge.predict(xva)),
            "test": regression_metrics(yte, ridge.predict(xte)),
            "val_mae_by_alpha": ridge.val_mae_by_alpha,
        }
    }
    preds = {"ridge": ridge.predict(xte)}
    if train_head:
        head = linear_head_probe(xtr, ytr, xva, yva, **head_kwargs)
        res["linear_head"] = {
            "best_epoch": head.best_epoch,
            "val": regression_metrics(yva, head.predict(xva)),
            "test": regression_metrics(yte, head.predict(xte)),
        }
        preds["linear_head"] = head.predict(xte)
    out_dir = os.fspath(out_dir)
    write_json(os.path.join(out_dir, f"probe_{name}.json"), res)
    fig, ax = new_figure()
    yte1 = np.asarray(yte, dtype=np.float64).reshape(len(xte), -1)[:, 0]
    for k, p in preds.items():
        ax.scatter(yte1, np.asarray(p).reshape(len(xte), -1)[:, 0], s=6, label=f"{k} (MAE {res[k]['test']['mae']:.3g})")
    lo, hi = float(np.min(yte1)), float(np.max(yte1))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out_dir, f"probe_{name}.png"))
    rows = [{"probe": k, "split": s, **{m: v[s][m] for m in ("mae", "rmse", "r2")}} for k, v in res.items() for s in ("val", "test")]
    return res, format_table(rows, ["probe", "split", "mae", "rmse", "r2"])


def evaluate_classification_probe(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    out_dir: str | os.PathLike,
    name: str,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    weight_decays: Sequence[float] = (0.0, 1e-3, 1e-2),
    **head_kwargs,
) -> tuple[dict, str]:
    """Logistic probe (:func:`logistic_probe`) for a label such as crystal system (n_classes 7,
    names ``mmjax.data.schema.CRYSTAL_SYSTEMS``) or space group (n_classes 231, label 0 unused).

    splits = {"train": (x, labels), "val": ..., "test": ...}. Writes ``probe_<name>.json`` with
    accuracy, balanced accuracy and per-class test accuracy (XxaCT-NN Table 4 layout).
    Returns (results, text table).
    """
    (xtr, ltr), (xva, lva), (xte, lte) = splits["train"], splits["val"], splits["test"]
    head, accs = logistic_probe(xtr, ltr, xva, lva, n_classes, weight_decays, **head_kwargs)
    pred = head.predict(xte)
    res = {
        "n_classes": n_classes,
        "weight_decay": max(accs, key=lambda w: (accs[w], w)),
        "val_accuracy_by_weight_decay": accs,
        "best_epoch": head.best_epoch,
        "val": classification_metrics(lva, head.predict(xva)),
        "test": classification_metrics(lte, pred),
        "test_per_class": per_class_accuracy(lte, pred, class_names),
    }
    write_json(os.path.join(os.fspath(out_dir), f"probe_{name}.json"), res)
    rows = [{"class": k, "test_accuracy": v} for k, v in res["test_per_class"].items()]
    return res, format_table(rows, ["class", "test_accuracy"], digits=3)
