"""Supervised fit with early stopping on a validation set, then test predictions (E1/E6 harnesses).

``fit_predict(config, train, val, test, target=...)`` trains the system named by
``config.system.name`` on the stored dataset view ``train`` (a `mmjax.data.store.Dataset` or a
``subset`` of one), evaluates the validation MAE every ``eval_every`` optimiser steps, keeps the
parameters of the best validation step (host copy), stops after ``patience`` evaluations without
improvement, and predicts every record of ``test`` with the best parameters.

Conventions:
* Regression target ``target`` is stored as ``"target/<target>"``; it is normalised with the mean
  and standard deviation of the **training** rows' finite labels (``(y - mean) / std``), and
  predictions are mapped back to the stored units. Validation MAE and test predictions are in
  the stored units.
* Batches: ``batch_size`` global material slots split over the mesh devices (must be a multiple
  of the device count); train batches reshuffle every epoch (seeded), val/test batches run once
  in dataset order, so predictions come back aligned with ``dataset.ids``.
* The engine pieces are the training loop's (`mmjax.train.loop.build_engine`,
  `mmjax.train.step`): AdamW and the schedule of ``config.optim`` over ``steps`` updates,
  sharded jit steps with donated state. No checkpoints are written (this is an in-memory fit).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import platform
import shlex
import sys
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from mmjax.data.material import RecordError
from mmjax.data.normalise import moments, regression_entry
from mmjax.data.pipeline import make_batches
from mmjax.eval.finetune import fit_with_early_stopping
from mmjax.systems import build_system
from mmjax.systems.baselines import resolve_packed_tokens
from mmjax.train import mesh as mesh_lib
from mmjax.train.checkpoint import load_params
from mmjax.train.loop import build_engine, merge_params
from mmjax.train.state import init_state
from mmjax.train.step import make_apply_fn, make_train_step

PyTree = Any


class FitDiverged(FloatingPointError):
    """The loss or a gradient became NaN/Inf during `fit_predict`; names the step."""


@dataclasses.dataclass
class FitResult:
    """Outcome of `fit_predict`.

    ids: str [N_test], the test dataset's ids in its order; predictions: float64 [N_test] in the
    target's stored units (aligned with ``ids``); best_step: optimiser step whose parameters
    made the predictions; best_val_mae: validation MAE there (stored units); steps_run: updates
    actually applied (< ``steps`` when stopped early); history: one dict per evaluation
    (``step``, ``train/loss``, ``val/mae``); target_mean / target_std: the training-row
    normalisation; counts: {"train", "val", "test"} rows with a finite label (test: all rows);
    wall_s: seconds of the whole fit (compile included); params: the best parameters (host);
    n_init_loaded: parameter arrays taken from ``init_from`` (0 without it); frozen_groups:
    parameter groups held fixed (optimiser multiplier 0).
    """

    ids: np.ndarray
    predictions: np.ndarray
    best_step: int
    best_val_mae: float
    steps_run: int
    history: list[dict]
    target_mean: float
    target_std: float
    counts: dict
    wall_s: float
    params: PyTree = None
    n_init_loaded: int = 0
    frozen_groups: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float]:
        """{id: prediction} in test order."""
        return {str(i): float(p) for i, p in zip(self.ids, self.predictions)}

    def summary(self) -> dict:
        """JSON-able summary (no parameters, no per-row predictions)."""
        return {"best_step": self.best_step, "best_val_mae": self.best_val_mae, "steps_run": self.steps_run,
                "target_mean": self.target_mean, "target_std": self.target_std, "counts": dict(self.counts),
                "n_init_loaded": self.n_init_loaded, "frozen_groups": list(self.frozen_groups),
                "wall_s": round(self.wall_s, 2)}


def target_values(dataset, target: str) -> np.ndarray:
    """float64 [len(dataset)]: ``"target/<target>"`` of every record (NaN where absent)."""
    key = f"target/{target}"
    if key not in dataset.manifest.schema:
        have = sorted(k.split("/", 1)[1] for k in dataset.manifest.schema if k.startswith("target/"))
        raise KeyError(f"dataset at {dataset.root} has no regression target {target!r}; targets: {have}")
    if dataset.manifest.schema[key]["shape"]:
        raise ValueError(f"target {target!r} is a vector ({dataset.manifest.schema[key]['shape']} per record); the "
                         "benchmark fit takes scalar targets: train vector targets with `python -m mmjax.main` "
                         "(config.data.target_dims)")
    present, values = dataset.column(key)
    return np.where(present, values.astype(np.float64), np.nan)


def _config_for(config: ml_collections.ConfigDict, target: str, steps: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``data.targets = (target,)`` and ``train.steps = steps``."""
    c = copy.deepcopy(config)
    c.data.targets = (target,)
    c.train.steps = int(steps)
    return c


def predict_dataset(predict_fn: Callable, params: PyTree, dataset, *, target: str, batch_size: int,
                    n_devices: int, modalities: Sequence[str], mesh, budgets=None, key: str | None = None) -> np.ndarray:
    """float64 [len(dataset)] normalised predictions of ``target`` for every record, in dataset order
    (``key``: another output of ``predict_fn``, e.g. ``"<target>/log_sigma"``).

    ``predict_fn(params, global_batch) -> {target: [n_dev * B_dev]}`` (e.g. a jitted
    ``system.predict``). Rows of the flattened output map to slots ``last_indices`` of the batch.
    """
    it = make_batches(dataset, batch_size, budgets, shuffle=False, num_epochs=1, devices=n_devices,
                      modalities=modalities, targets=[target])
    out = np.full(len(dataset), np.nan)
    for batch in it:
        pred = np.asarray(jax.device_get(predict_fn(params, mesh_lib.host_to_global(batch, mesh))[key or target]),
                          np.float64).reshape(-1)
        idx = it.last_indices.reshape(-1)
        out[idx[idx >= 0]] = pred[idx >= 0]
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise RecordError(str(dataset.ids[bad[0]]), f"no finite prediction ({bad.size} such records)")
    return out


def fit_predict(
    config: ml_collections.ConfigDict,
    train,
    val,
    test,
    *,
    target: str,
    steps: int,
    batch_size: int,
    eval_every: int = 100,
    patience: int = 10,
    seed: int | None = None,
    mesh=None,
    log: Callable[[str], None] | None = None,
    keep_params: bool = False,
    init_from: str | os.PathLike | PyTree | None = None,
    trainable: Sequence[str] | None = None,
) -> FitResult:
    """Train ``config``'s system on ``train`` with early stopping on ``val``; predict ``test``.

    Args:
      config: a full config (``configs/<system>.py``): ``system`` (built with
        `mmjax.systems.build_system`), ``optim`` (schedule horizon = ``steps``), ``seed``,
        ``train.compute_dtype``, ``data.modalities`` (the Batch modalities). ``data.targets`` and
        ``train.steps`` are overridden with ``(target,)`` and ``steps`` on a copy.
      train, val, test: `mmjax.data.store.Dataset` views of one stored dataset (same manifest,
        so graph budgets and shapes agree and nothing recompiles between them).
      target: regression target name (``"target/<target>"`` in the store).
      steps: maximum number of optimiser updates.
      batch_size: global material slots per step (a multiple of the device count).
      eval_every: updates between validation evaluations; patience: evaluations without a
        new best validation MAE before stopping.
      seed: overrides ``config.seed`` (init, dropout, shuffling) when given.
      mesh: defaults to all devices (`mmjax.train.mesh.make_mesh`).
      log: called with one line per evaluation (e.g. ``print``); None = silent.
      keep_params: return the best parameters in ``FitResult.params``.
      init_from: start from pretrained parameters: a workdir / checkpoint folder
        (`mmjax.train.checkpoint.load_params`) or a parameter pytree. Every same-path,
        same-shape array is loaded (as ``--mode=finetune`` does); the rest (e.g. new heads) keeps
        its fresh initialisation. None = ``config.train.init_from`` when set, else from scratch.
      trainable: parameter groups (``system.param_labels``) that learn; every other group is
        frozen (optimiser multiplier 0, as ``--mode=probe``). None = the config's
        ``optim.groups`` unchanged. E.g. ``("head",)`` = frozen encoders + trained heads.
    Returns:
      `FitResult` with test predictions in stored units, aligned with ``test.ids``.
    Raises:
      ValueError for empty splits, a batch size the devices do not divide, an unknown
      ``trainable`` group or an ``init_from`` that matches no parameter; FitDiverged when the
      loss or a gradient turns non-finite.
    """
    t0 = time.time()
    if steps < 1 or eval_every < 1 or patience < 1:
        raise ValueError(f"need steps, eval_every, patience >= 1; got {steps}, {eval_every}, {patience}")
    fs = prepare_fit(config, train, val, test, target=target, steps=steps, batch_size=batch_size, seed=seed,
                     mesh=mesh, log=log, init_from=init_from, trainable=trainable)
    state, train_step, train_it, pending, predict_fn = fs.state, fs.train_step, fs.train_it, fs.pending, fs.predict_fn
    mean, std, y_train, y_val, mesh, n_dev = fs.mean, fs.std, fs.y_train, fs.y_val, fs.mesh, fs.n_dev
    eng, budgets, modalities, frozen, n_loaded = fs.eng, fs.budgets, fs.modalities, fs.frozen, fs.n_loaded

    def run_chunk(state, chunk):
        n = min(eval_every, steps - chunk * eval_every)
        losses = []
        for _ in range(n):
            batch = pending.pop() if pending else next(train_it)
            state, metrics = train_step(state, mesh_lib.host_to_global(batch, mesh))
            losses.append(metrics["loss"])
        bad = int(jax.device_get(state.bad_step))
        if bad >= 0:
            raise FitDiverged(f"loss or gradient became NaN/Inf at step {bad} (target {target!r})")
        return state, {"loss": float(np.mean(jax.device_get(losses)))}

    def evaluate(state):
        pred = predict_dataset(predict_fn, state.params, val, target=target, batch_size=batch_size,
                               n_devices=n_dev, modalities=modalities, mesh=mesh, budgets=budgets)
        ok = np.isfinite(y_val)
        return {"mae": float(np.mean(np.abs(pred[ok] * std + mean - y_val[ok])))}

    def on_epoch(row):
        if log is not None:
            log(f"  step {(row['epoch'] + 1) * eval_every if (row['epoch'] + 1) * eval_every < steps else steps:6d}"
                f"  train loss {row['train/loss']:.4f}  val MAE {row['val/mae']:.5g}")

    # the best state is kept on the host by fit_with_early_stopping (donation-safe)
    result = fit_with_early_stopping(state, run_chunk, evaluate, monitor="mae", mode="min", patience=patience,
                                     max_epochs=math.ceil(steps / eval_every), on_epoch=on_epoch)
    step_of = lambda epoch: min((epoch + 1) * eval_every, steps)  # noqa: E731
    history = [{"step": step_of(r["epoch"]), "train/loss": r["train/loss"], "val/mae": r["val/mae"]}
               for r in result.history]
    best_params = jax.device_put(result.state.params, eng["shardings"].params)
    pred = predict_dataset(predict_fn, best_params, test, target=target, batch_size=batch_size, n_devices=n_dev,
                           modalities=modalities, mesh=mesh, budgets=budgets)
    counts = {"train": int(np.isfinite(y_train).sum()), "val": int(np.isfinite(y_val).sum()), "test": len(test)}
    return FitResult(
        ids=np.asarray(test.ids), predictions=pred * std + mean, best_step=step_of(result.best_epoch),
        best_val_mae=float(result.best_value), steps_run=history[-1]["step"], history=history,
        target_mean=mean, target_std=std, counts=counts, wall_s=time.time() - t0,
        params=jax.device_get(best_params) if keep_params else None, n_init_loaded=n_loaded, frozen_groups=frozen)


@dataclasses.dataclass
class FitSetup:
    """Everything a supervised fit needs, built once by `prepare_fit` (shared by `fit_predict`
    and `mmjax.eval.crabnet_protocol`): the system, engine, initial state, jitted train step and
    predict function, the normalised training iterator and its first batch (``pending``), the
    training-row normalisation and the label arrays."""

    cfg: ml_collections.ConfigDict
    system: Any
    eng: dict
    state: Any
    train_step: Callable
    predict_fn: Callable
    train_it: Any
    pending: list
    budgets: Any
    mesh: Any
    n_dev: int
    modalities: tuple
    mean: float
    std: float
    y_train: np.ndarray
    y_val: np.ndarray
    frozen: tuple
    n_loaded: int

    def predict(self, params, dataset, key: str | None = None) -> np.ndarray:
        """Normalised predictions (or ``key``, e.g. ``"<target>/log_sigma"``) for ``dataset``."""
        target = self.cfg.data.targets[0]
        return predict_dataset(self.predict_fn, params, dataset, target=target, batch_size=self.batch_size,
                               n_devices=self.n_dev, modalities=self.modalities, mesh=self.mesh,
                               budgets=self.budgets, key=key)

    @property
    def batch_size(self) -> int:
        return int(self.train_it.assembler.n_dev * self.train_it.assembler.slots)


def prepare_fit(config, train, val, test, *, target: str, steps: int, batch_size: int, seed: int | None = None,
                mesh=None, log: Callable[[str], None] | None = None, init_from=None,
                trainable: Sequence[str] | None = None) -> FitSetup:
    """Validate the splits and build a `FitSetup` (arguments as `fit_predict`)."""
    for name, ds in (("train", train), ("val", val), ("test", test)):
        if len(ds) == 0:
            raise ValueError(f"fit_predict: the {name} dataset is empty")
    y_train, y_val = target_values(train, target), target_values(val, target)
    if not np.isfinite(y_val).any():
        raise ValueError(f"no labelled validation rows for {target!r} (early stopping needs some)")
    mean, std = moments(y_train)
    cfg = _config_for(config, target, steps)
    if seed is not None:
        cfg.seed = int(seed)
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {n_dev} devices of the mesh")
    modalities = tuple(cfg.data.modalities)
    if not modalities:
        raise ValueError("config.data.modalities must name the modalities the system reads")

    cfg = resolve_packed_tokens(cfg, train, batch_size, log, devices=n_dev)
    system = build_system(cfg)
    train_it = make_batches(train, batch_size, shuffle=True, num_epochs=None, seed=int(cfg.seed), devices=n_dev,
                            modalities=modalities, targets=[target], target_stats={target: regression_entry(mean, std)})
    budgets = train_it.assembler.budget
    example = next(train_it)
    frozen: tuple[str, ...] = ()
    if trainable is not None:
        frozen = _freeze_all_but(cfg, system, example, trainable)
    eng = build_engine(system, cfg, example, mesh)
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    n_loaded = 0
    source = init_from if init_from is not None else (cfg.train.get("init_from", "") or None)
    if source is not None:
        state, n_loaded = _load_init(state, source, eng["shardings"].params)
        if log is not None:
            log(f"  initialised {n_loaded} parameter arrays from {_describe(source)}; frozen groups {list(frozen)}")
    train_step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    predict_fn = make_apply_fn(system.predict, eng["shardings"].params, mesh)
    pending = [example]
    return FitSetup(cfg, system, eng, state, train_step, predict_fn, train_it, pending, budgets, mesh, n_dev,
                    modalities, mean, std, y_train, y_val, frozen, n_loaded)


def _describe(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the given parameter tree"


def _freeze_all_but(cfg: ml_collections.ConfigDict, system, host_batch, trainable: Sequence[str]) -> tuple[str, ...]:
    """Set ``cfg.optim.groups`` so that only the ``trainable`` groups learn; returns the frozen ones."""
    shapes = jax.eval_shape(system.init, jax.random.PRNGKey(0), host_batch)
    labels = sorted(set(jax.tree.leaves(system.param_labels(shapes))))
    unknown = sorted(set(trainable) - set(labels))
    if unknown:
        raise ValueError(f"trainable groups {unknown} are not parameter groups of system {system.name!r} "
                         f"(groups: {labels})")
    frozen = tuple(g for g in labels if g not in set(trainable))
    groups = cfg.optim.groups.to_dict() if cfg.optim.get("groups") is not None else {}
    groups.update({g: 0.0 for g in frozen})
    with cfg.unlocked():
        cfg.optim.groups = ml_collections.ConfigDict(groups, type_safe=False)
    return frozen


def _load_init(state, source, param_shardings):
    """``state`` with the same-path, same-shape arrays of ``source`` (path or pytree) loaded."""
    loaded = load_params(source) if isinstance(source, (str, os.PathLike)) else source
    merged, n = merge_params(jax.device_get(state.params), loaded)
    if n == 0:
        raise ValueError(f"init_from {_describe(source)}: no parameter array has the path and shape of one of "
                         "this system's parameters (another system or encoder size?)")
    return state.replace(params=jax.device_put(merged, param_shardings)), n


def command_line(argv=None) -> str:
    """The shell command that started this script (``argv`` replaces ``sys.argv[1:]`` when given)."""
    return "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv))


def hardware_description() -> dict:
    """Where a benchmark ran: CPU model, logical cores, JAX backend, device kind and count."""
    cpu, isa = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = fh.readlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set())
        # the widest vector ISA: machines sold under one model name ("Intel(R) Xeon(R) Processor") differ here
        isa = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), None)
    except OSError:
        pass
    devices = jax.devices()
    return {"cpu": cpu, "cpu_isa": isa, "cpu_cores": os.cpu_count(), "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "jax": jax.__version__}
