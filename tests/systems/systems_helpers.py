"""Tiny schema-valid Batches for system tests, built through the real store + grain pipeline.

Records are random but well-formed (graphs with 2-5 atoms, a few edges each); sizes are tiny:
XRD 32 points, text 16-d, DOS 24 points, charge density 8^3. ``missing[m]`` lists record
indices without modality ``m`` (so ``present[m]`` is False there).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from mmjax.config_file import load_config
from mmjax.data import store, store_writer
from mmjax.data.pipeline import make_batches

XRD_L, TEXT_D, DOS_L, CD = 32, 16, 24, 8
DOS_GRID = np.linspace(-6.0, 6.0, DOS_L).astype(np.float32)


def record(rng: np.random.Generator, i: int, modalities, missing) -> dict:
    rec = {}
    if "crystal" in modalities and i not in missing.get("crystal", ()):
        n = int(rng.integers(2, 6))
        e = 3 * n
        rec.update({
            "crystal/atomic_numbers": rng.integers(1, 60, n).astype(np.int32),
            "crystal/senders": np.repeat(np.arange(n), 3).astype(np.int32),
            "crystal/receivers": rng.integers(0, n, e).astype(np.int32),
            "crystal/distances": rng.uniform(1.5, 7.5, e).astype(np.float32),
        })
    if "xrd" in modalities and i not in missing.get("xrd", ()):
        rec["xrd"] = (100 * rng.random(XRD_L) ** 4).astype(np.float32)
    if "text" in modalities and i not in missing.get("text", ()):
        rec["text_embedding"] = rng.normal(size=TEXT_D).astype(np.float32)
    if "dos" in modalities and i not in missing.get("dos", ()):
        rec["dos/densities"] = rng.gamma(2.0, 1.0, DOS_L).astype(np.float32)
        mask = np.ones(DOS_L, bool)
        mask[: int(rng.integers(0, 4))] = False
        rec["dos/mask"] = mask
    if "charge_density" in modalities and i not in missing.get("charge_density", ()):
        rec["charge_density"] = rng.random((CD, CD, CD)).astype(np.float32)
    rec["target/gap"] = np.float32(np.nan if i % 5 == 3 else rng.normal(1.0, 0.5))
    rec["label/crystal_system"] = np.int32(rng.integers(0, 7))
    return rec


def make_dataset(root, n: int, modalities, missing=None, seed: int = 0) -> store.Dataset:
    """A stored dataset of ``n`` random records with the given modalities."""
    rng = np.random.default_rng(seed)
    writer = store_writer.StoreWriter(root, records_per_file=64)
    for i in range(n):
        writer.add(f"mat-{i:03d}", record(rng, i, modalities, missing or {}))
    grids = {"dos/energies": DOS_GRID.tolist()} if "dos" in modalities else None
    store_writer.finish_manifest(root, writer, skipped=[], num_input=n, grids=grids)
    return store.Dataset.open(root)


def batches(dataset, batch_size: int, n_devices: int = 1, modalities=None, targets=("gap", "crystal_system"),
            num_epochs=1):
    """Unshuffled Batches (records in dataset order) with a leading device axis."""
    return make_batches(dataset, batch_size, devices=n_devices, modalities=modalities, targets=list(targets),
                        shuffle=False, num_epochs=num_epochs, percentile=100.0)


def first_batch(dataset, batch_size: int, n_devices: int = 1, modalities=None, **kw) -> dict:
    return jax.tree.map(np.asarray, next(iter(batches(dataset, batch_size, n_devices, modalities, **kw))))


def set_present(batch: dict, modality: str, rows) -> dict:
    """Copy of ``batch`` with ``present[modality]`` False at the given flattened rows."""
    out = jax.tree.map(lambda x: x, batch)
    p = np.array(out["present"][modality])
    flat = p.reshape(-1)
    flat[list(rows)] = False
    out["present"] = dict(out["present"])
    out["present"][modality] = flat.reshape(p.shape)
    return out


def loss_grads_embed(system, train: bool = False):
    """(params, batch) -> (loss, metrics, grads, embeddings) for a System; jit it at the call site."""

    def run(p, b):
        (loss, metrics), grads = jax.value_and_grad(lambda q: system.loss(q, b, jax.random.PRNGKey(1), train),
                                                    has_aux=True)(p)
        return loss, metrics, grads, system.embed(p, b)

    return run


def present_masks(batch: dict, modalities) -> dict:
    """{modality: bool [n_dev * B]} = slot_valid & present[modality], flattened over devices."""
    valid = batch["slot_valid"].reshape(-1)
    return {m: valid & batch["present"][m].reshape(-1) for m in modalities}


def adam_losses(run, params, batch, steps: int = 6, learning_rate: float = 3e-3) -> list[float]:
    """Losses of `steps` Adam updates on one fixed batch (host-side pytrees; the engine's jitted
    step is tested in tests/train). `run` is a jitted `loss_grads_embed` function."""
    import optax

    tx = optax.adam(learning_rate)
    state = tx.init(params)
    update, apply = jax.jit(tx.update), jax.jit(optax.apply_updates)
    losses = []
    for _ in range(steps):
        loss, _, grads, _ = run(params, batch)
        losses.append(float(loss))
        updates, state = update(grads, state, params)
        params = apply(params, updates)
    return losses


CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def paper_system_section(name: str, modalities=None):
    """The ``config.system`` section of ``configs/<name>.py:small`` (the one source of the system's
    defaults) without prediction targets, with ``modalities`` when given."""
    section = load_config(f"{CONFIGS / name}.py:small").system
    section.targets = {}
    if modalities is not None:
        section.modalities = tuple(modalities)
    return section
