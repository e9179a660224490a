"""Tiny stored datasets and configs for the XxaCT-NN / baseline system tests.

Records carry composition (1-3 elements), a 32-point XRD pattern (4 tokens x 8), a small crystal
graph, a regression target ``y`` (NaN for every 5th record), and the class labels
``crystal_system`` (0..6) and ``space_group`` (1..230, as the featuriser stores it).
"""

from __future__ import annotations

import importlib
import pathlib

import jax
import numpy as np

from mmjax.data import store, store_writer
from mmjax.data.pipeline import make_batches
from mmjax.train.data import HostBatches

REPO = pathlib.Path(__file__).resolve().parents[2]
XRD_TOKENS, XRD_PATCH = 4, 8


def tiny_xrd_grid(c) -> None:
    """The config's XRD grid set to the fixtures' XRD_TOKENS * XRD_PATCH = 32 points (1 deg steps)."""
    c.data.features.xrd_two_theta_range = (5.0, 5.0 + XRD_TOKENS * XRD_PATCH)
    c.data.features.xrd_step = 1.0


def load_config(name: str, arg: str | None = "small"):
    """``configs/<name>.py``'s get_config(arg)."""
    return importlib.import_module(f"configs.{name}").get_config(arg)


def tiny_crabnet_config(num_layers: int = 1, **encoder):
    """configs/crabnet.py as published (per-element head, RobustL1) at 8-d widths on target "y",
    no dropout or fraction jitter unless ``encoder`` sets them; no element table."""
    c = load_config("crabnet", None)
    c.system.encoder.update({**dict(d_model=8, num_layers=num_layers, num_heads=2, mlp_dim=16, element_dim=8,
                                    resolution=100, element_table="", dropout_rate=0.0, fraction_noise=0.0), **encoder})
    c.system.head_hidden = (8, 4)
    c.data.targets = ("y",)
    return c


def record(rng: np.random.Generator, i: int) -> dict:
    n_el = int(rng.integers(1, 4))
    frac = rng.random(n_el) + 0.2
    n_atoms = int(rng.integers(2, 5))
    e = 3 * n_atoms
    return {
        "composition/atomic_numbers": rng.choice(np.arange(1, 60), n_el, replace=False).astype(np.int32),
        "composition/fractions": (frac / frac.sum()).astype(np.float32),
        "xrd": (100 * rng.random(XRD_TOKENS * XRD_PATCH) ** 6).astype(np.float32),
        "crystal/atomic_numbers": rng.integers(1, 60, n_atoms).astype(np.int32),
        "crystal/senders": np.repeat(np.arange(n_atoms), 3).astype(np.int32),
        "crystal/receivers": rng.integers(0, n_atoms, e).astype(np.int32),
        "crystal/distances": rng.uniform(1.5, 7.5, e).astype(np.float32),
        "target/y": np.float32(np.nan if i % 5 == 3 else rng.normal(1.0, 0.5)),
        "label/crystal_system": np.int32(rng.integers(0, 7)),
        "label/space_group": np.int32(rng.integers(1, 231)),
    }


def make_dataset(root, n: int = 32, seed: int = 0) -> store.Dataset:
    rng = np.random.default_rng(seed)
    writer = store_writer.StoreWriter(root, records_per_file=64)
    for i in range(n):
        writer.add(f"mat-{i:03d}", record(rng, i))
    store_writer.finish_manifest(root, writer, skipped=[], num_input=n)
    return store.Dataset.open(root)


def first_batch(dataset, batch_size: int, n_devices: int, modalities, targets):
    """The first unshuffled Batch (host numpy, device axis), classification labels 0-based."""
    it = make_batches(dataset, batch_size, seed=0, shuffle=False, num_epochs=1, devices=n_devices,
                      modalities=modalities, targets=targets, normalize_targets=True)
    return next(HostBatches(it, dataset.ids, 0, n_devices))


def tiny_xxact_config(terms: dict, targets=("y", "crystal_system", "space_group")):
    """configs/xxact.py:small shrunk to 1-layer, 8-16-d modules on 4 x 8 XRD tokens."""
    c = load_config("xxact")
    c.system.composition.update(dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, out_dim=16,
                                     resolution=100))
    c.system.xrd.update(dict(num_tokens=XRD_TOKENS, patch_size=XRD_PATCH, d_model=8, num_layers=1, num_heads=2,
                             mlp_dim=16, out_dim=16))
    c.system.fusion.update(dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=16))
    tiny_xrd_grid(c)
    c.system.mask_ratio = 0.25  # one of the 4 tokens
    c.data.targets = tuple(targets)
    c.objective.terms.update({k: 0.0 for k in c.objective.terms})
    c.objective.terms.update(terms)
    return c


def numpy_info_nce(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Symmetric CLIP loss, plain NumPy (float64)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau

    def ce(lg):
        m = lg.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(lg - m).sum(axis=1, keepdims=True)))[:, 0]
        return lse - np.diag(lg)

    return float(np.mean(0.5 * (ce(logits) + ce(logits.T))))


def numpy_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def reshape_devices(batch, n_devices: int):
    """Dense (graph-free) Batch ``[d, B, ...] -> [n_devices, d * B / n_devices, ...]`` (same rows)."""
    def f(x):
        x = np.asarray(x)
        flat = x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
        return flat.reshape((n_devices, flat.shape[0] // n_devices) + flat.shape[1:])

    return jax.tree.map(f, batch)
