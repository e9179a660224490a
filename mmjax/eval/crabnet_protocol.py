"""CrabNet's training procedure (``crabnet/model.py`` ``Model.fit`` / ``Model.train`` and
``train_crabnet.py``), on the `mmjax.eval.fit` machinery.

``fit_predict_crabnet(config, train, val, test, target=...)``:

* batch size: CrabNet's rule ``2 ** round(log2(N_train) - 4)`` clipped to [2^7, 2^12]
  (`crabnet_batch_size`), unless given;
* ``epochs`` (at most; default 300, as ``benchmark_crabnet.py``, the script behind the paper's
  Table 2, calls ``model.fit(epochs=300)``; the generic ``train_crabnet.py`` uses 40; the SWA rule
  below usually stops training well before), cut to a multiple of ``2 * epochs_step``; one epoch =
  ``ceil(N_train / batch)`` optimiser steps; the optimiser is ``config.optim`` (the
  ``"crabnet"`` preset: Lamb + Lookahead, triangular CyclicLR with a half-cycle of
  ``epochs_step`` epochs — ``steps_per_epoch`` is filled in here). ``epochs_step`` = 10 by
  default: the code that trained the paper's Table 2 (``crabnet/model.py`` at commit dd5b430,
  ``self.epochs_step = 10``; its learning-curve files ``figures/lc_data/*_lc.csv`` have a
  check-in every 20 epochs, and its stored test predictions of AFLOW bulk modulus score 8.692,
  Table 2's value, on our test file) — later code (b07100d) has ``epochs_step = 1``;
* SWA as CrabNet does it (`mmjax.train.swa.CrabNetSWA`): in every epoch e with
  ``(e + 1) % (2 * epochs_step) == 0`` and ``e >= 2 * epochs_step - 1`` (the cyclic rate's minima),
  the validation MAE is computed after **every** batch and fed to the SWA rule; training stops
  after ``discard_n`` such epochs without a new minimum; the test predictions use the averaged
  weights;
* PyTorch eval mode in SWA epochs (``reference_eval_mode``, default on): CrabNet's
  ``Model.predict`` switches the network to eval mode and ``Model.train`` switches it back only at
  the start of an epoch, so in an SWA epoch every batch after the first trains without dropout
  (the fraction jitter, applied to the data, stays on). Those batches use a second train step
  built with ``dropout_rate = 0`` on the same state;
* targets are scaled with the training rows' mean and std (`mmjax.data.normalise.moments`);
  predictions and sigma (``exp(log_sigma) * std``, CrabNet's uncertainty) come back in stored units.

The fraction jitter (``config.system.encoder.fraction_noise``), RobustL1 loss and the per-element
head are parts of the system (``configs/crabnet.py``), not of this procedure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from typing import Callable

import jax
import numpy as np

from mmjax.eval.fit import FitDiverged, prepare_fit, target_values
from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.step import make_train_step
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.loop import config_json, config_differences, sharded_target
from mmjax.train.swa import CrabNetSWA

_SWA_SCALARS = ("maximum_mae", "minimum_mae", "discard_count", "n_avg", "maes")


class ResumeMismatch(ValueError):
    """The resume folder was written by a run with other settings; names them."""


def _save(ckpt, epoch: int, state, swa: CrabNetSWA, fs, settings: dict, history: list) -> None:
    """One checkpoint after ``epoch``: the state, the SWA buffer (or the params as a placeholder)."""
    buffer = swa.buffer if swa.buffer is not None else state.params
    meta = {"settings": settings, "history": history, "data_state": fs.train_it.get_state(),
            "swa": {k: getattr(swa, k) for k in _SWA_SCALARS}, "has_buffer": swa.buffer is not None}
    ckpt.save(epoch + 1, {"state": state, "swa": buffer}, meta)


def _resume(ckpt, settings: dict, fs, state, swa: CrabNetSWA):
    """``(state, history)`` from the newest checkpoint in ``ckpt`` (``swa`` and the data iterator
    set in place), or None when there is none."""
    steps = ckpt.all_steps()
    if not steps:
        return None
    old = ckpt.restore_meta(steps[-1]).get("settings", {})
    diffs = config_differences(old.get("config", {}), settings["config"])
    diffs += [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if k != "config" and old.get(k) != v]
    if diffs:
        ckpt.close()
        raise ResumeMismatch(f"{ckpt.directory} holds a CrabNet fit with other settings ({'; '.join(diffs)}); "
                             "use another folder or delete it to start again")
    abstract = sharded_target(fs.eng["abstract"], fs.eng["shardings"])
    params32 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32, sharding=a.sharding), abstract.params)
    _, tree, meta = ckpt.restore_latest({"state": abstract, "swa": params32})
    for k in _SWA_SCALARS:
        setattr(swa, k, meta["swa"][k])
    swa.buffer = tree["swa"] if meta["has_buffer"] else None
    fs.train_it.set_state(meta["data_state"])
    return tree["state"], list(meta["history"])


def crabnet_batch_size(n_train: int) -> int:
    """CrabNet's training batch: ``2 ** round(log2(n) - 4)``, clipped to [128, 4096]."""
    if n_train < 1:
        raise ValueError(f"need at least one training row, got {n_train}")
    return int(min(max(2 ** round(math.log2(n_train) - 4), 2 ** 7), 2 ** 12))


@dataclasses.dataclass
class CrabNetFit:
    """ids / predictions / sigma: the test rows in dataset order (stored units); epochs_run;
    history: one dict per epoch (``epoch``, ``train/loss``, and for SWA epochs ``val/mae_last``,
    ``swa/minimum_found``); swa: thresholds and counts at the end; batch_size; steps_per_epoch."""

    ids: np.ndarray
    predictions: np.ndarray
    sigma: np.ndarray
    epochs_run: int
    history: list
    swa: dict
    batch_size: int
    steps_per_epoch: int
    target_mean: float
    target_std: float
    wall_s: float
    resumed_after_epoch: int | None = None


def fit_predict_crabnet(config, train, val, test, *, target: str, epochs: int = 300, epochs_step: int = 10,
                        discard_n: int = 3, batch_size: int | None = None, seed: int | None = None, mesh=None,
                        log: Callable[[str], None] | None = None, progress_path: str | None = None,
                        reference_eval_mode: bool = True, resume_dir: str | None = None) -> CrabNetFit:
    """Train as CrabNet trains (module docstring) and predict ``test`` with the SWA weights.

    progress_path: a JSON-lines file that gets one line per epoch as training goes (for long
    background runs); None = none.
    resume_dir: a folder that gets a checkpoint after every epoch (train state, SWA average and
    thresholds, data-iterator position, history; `mmjax.train.checkpoint`, the newest kept). A
    call whose folder holds one continues after that epoch and ends with the same predictions as
    an uninterrupted run; one written with other settings (config, target, epochs, batch, seed,
    row counts) is refused naming them (`ResumeMismatch`), never reused. ``progress_path`` is
    rewritten from the restored history. None = no checkpoints.
    """
    t0 = time.time()
    n_train = int(np.isfinite(target_values(train, target)).sum())
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    batch = batch_size or crabnet_batch_size(n_train)
    batch = int(math.ceil(batch / n_dev) * n_dev)
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    if epochs_step < 1 or discard_n < 1:
        raise ValueError(f"epochs_step and discard_n must be >= 1, got {epochs_step}, {discard_n}")
    epochs = int(epochs) - int(epochs) % (2 * epochs_step)
    if epochs < 2 * epochs_step:
        raise ValueError(f"epochs must be at least 2 * epochs_step = {2 * epochs_step}")
    cfg = copy.deepcopy(config)
    cfg.optim.steps_per_epoch = steps_per_epoch
    if cfg.optim.schedule == "cyclic" and not cfg.optim.cycle_half_steps:
        cfg.optim.cycle_half_epochs = epochs_step
    fs = prepare_fit(cfg, train, val, test, target=target, steps=epochs * steps_per_epoch, batch_size=batch,
                     seed=seed, mesh=mesh, log=log)
    y_val = fs.y_val
    ok_val = np.isfinite(y_val)
    no_dropout_step = None
    if reference_eval_mode and float(fs.cfg.system.encoder.get("dropout_rate", 0.0)) > 0:
        quiet = copy.deepcopy(fs.cfg)
        quiet.system.encoder.dropout_rate = 0.0
        no_dropout_step = make_train_step(build_system(quiet), fs.eng["tx"], fs.eng["schedule"], fs.eng["shardings"],
                                          fs.mesh)
    state = fs.state
    swa = CrabNetSWA(discard_n)
    history = []
    first_epoch = 0
    ckpt = None
    if resume_dir is not None:
        settings = {"config": config_json(fs.cfg), "target": target, "epochs": epochs,
                    "epochs_step": epochs_step, "discard_n": discard_n, "batch": batch, "n_train": n_train,
                    "n_val": len(val), "n_test": len(test), "reference_eval_mode": bool(reference_eval_mode)}
        ckpt = Checkpointer(resume_dir, keep=1, async_save=False)
        restored = _resume(ckpt, settings, fs, state, swa)
        if restored is not None:
            state, history = restored
            first_epoch = history[-1]["epoch"] + 1
            t0 -= float(history[-1]["wall_s"])  # wall_s counts the earlier sessions' training too
            fs.pending.clear()  # the first batch was taken in epoch 0
            if log is not None:
                log(f"  resumed after epoch {first_epoch - 1} from {resume_dir}")
        if progress_path:
            with open(progress_path, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in history)

    def val_mae(params) -> float:
        pred = fs.predict(params, val) * fs.std + fs.mean
        return float(np.mean(np.abs(pred[ok_val] - y_val[ok_val])))

    for epoch in range(first_epoch, epochs) if not swa.stop else ():
        swa_epoch = (epoch + 1) % (2 * epochs_step) == 0 and epoch >= 2 * epochs_step - 1
        losses, found, last_mae = [], [], None
        for i in range(steps_per_epoch):
            b = fs.pending.pop() if fs.pending else next(fs.train_it)
            step_fn = no_dropout_step if (swa_epoch and i > 0 and no_dropout_step is not None) else fs.train_step
            state, metrics = step_fn(state, mesh_lib.host_to_global(b, fs.mesh))
            losses.append(metrics["loss"])
            if swa_epoch:
                last_mae = val_mae(state.params)
                found.append(swa.update(state.params, last_mae))
        bad = int(jax.device_get(state.bad_step))
        if bad >= 0:
            raise FitDiverged(f"loss or gradient became NaN/Inf at step {bad} (target {target!r})")
        row = {"epoch": epoch, "train/loss": float(np.mean(jax.device_get(losses))), "wall_s": round(time.time() - t0, 1)}
        if swa_epoch:
            swa.end_epoch(any(found))
            row.update({"val/mae_last": last_mae, "swa/minimum_found": bool(any(found)),
                        "swa/minimum_mae": swa.minimum_mae, "swa/discarded": swa.discard_count})
        history.append(row)
        if ckpt is not None:
            _save(ckpt, epoch, state, swa, fs, settings, history)
        if log is not None:
            log("  " + " ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if progress_path:
            with open(progress_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        if swa.stop:
            break
    if ckpt is not None:
        ckpt.close()
    final = swa.averaged(state.params)
    pred = fs.predict(final, test) * fs.std + fs.mean
    sigma = np.exp(fs.predict(final, test, key=f"{target}/log_sigma")) * fs.std
    return CrabNetFit(ids=np.asarray(test.ids), predictions=pred, sigma=sigma, epochs_run=len(history),
                      history=history, swa={"minimum_mae": swa.minimum_mae, "maximum_mae": swa.maximum_mae,
                                            "n_avg": swa.n_avg, "discarded": swa.discard_count,
                                            "updates": len(swa.maes)},
                      batch_size=batch, steps_per_epoch=steps_per_epoch, target_mean=fs.mean, target_std=fs.std,
                      wall_s=time.time() - t0, resumed_after_epoch=first_epoch - 1 if first_epoch else None)
