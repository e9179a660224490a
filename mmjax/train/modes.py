"""What each ``--mode`` of `mmjax.main` does: ``MODES[mode](config, workdir, input_path=None)``.

Implemented here (generic over systems): ``train``, ``pretrain`` (the same loop; the system's
loss decides what is learnt), ``finetune`` (train, starting from ``config.train.init_from``),
``evaluate`` (eval metrics of the newest checkpoint -> ``evaluate.json``), ``predict`` and
``embed`` (system outputs over the predict split or ``--input`` -> ``predictions.npz`` /
``embeddings.npz``, padding slots removed). ``featurize`` and ``probe`` belong to the data and
evaluation packages and are registered by them (`register_mode`).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from mmjax.train import mesh as mesh_lib
from mmjax.train.data import build_iterator, peek
from mmjax.train.loop import build_engine, evaluate, make_checkpointer, sharded_target, train
from mmjax.train.step import make_apply_fn, make_eval_step


def _system(config):
    from mmjax.systems import build_system

    return build_system(config)


def run_train(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Train (or pretrain) the configured system; returns the run summary."""
    system = _system(config)
    train_iter = build_iterator(config, "train", input_path)

    def eval_iter_fn():
        return build_iterator(config, "eval", input_path)

    _, summary = train(system, config, workdir, train_iter, eval_iter_fn)
    return summary


def run_finetune(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Like `run_train`, with parameters initialised from ``config.train.init_from`` when set."""
    if not config.train.init_from:
        raise ValueError("--mode=finetune needs --config.train.init_from=<pretraining workdir or checkpoint>")
    return run_train(config, workdir, input_path)


def _restore_params(system, config, workdir, example_host_batch):
    eng = build_engine(system, config, example_host_batch)
    ckpt = make_checkpointer(config, workdir)
    try:
        restored = ckpt.restore_latest(sharded_target(eng["abstract"], eng["shardings"]))
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first")
    step, state, _ = restored
    return eng, state.params, step


def run_evaluate(config: ml_collections.ConfigDict, workdir: str, input_path: str | None = None) -> dict:
    """Eval metrics of the newest checkpoint on the eval split; written to ``<workdir>/evaluate.json``."""
    system = _system(config)
    it = build_iterator(config, "eval", input_path)
    eng, params, step = _restore_params(system, config, workdir, peek(it))
    metrics = evaluate(make_eval_step(system, eng["shardings"].params, eng["mesh"]), params, it, eng["mesh"],
                       jax.random.PRNGKey(config.seed + 1))
    out = {"step": step, **metrics}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "evaluate.json"), "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
        print(json.dumps(out), flush=True)
    return out


def _apply_over(method: str, config, workdir, input_path, filename) -> dict[str, np.ndarray]:
    system = _system(config)
    it = build_iterator(config, "predict", input_path)
    eng, params, _ = _restore_params(system, config, workdir, peek(it))
    apply = make_apply_fn(getattr(system, method), eng["shardings"].params, eng["mesh"])
    chunks: dict[str, list] = {}
    for host_batch in it:
        batch = mesh_lib.host_to_global(host_batch, eng["mesh"])
        out = apply(params, batch)
        out["slot_valid"] = batch["slot_valid"].reshape(-1)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            out = multihost_utils.process_allgather(out, tiled=True)
        for k, v in jax.device_get(out).items():
            chunks.setdefault(k, []).append(np.asarray(v))
    if not chunks:
        raise ValueError("the predict split yielded no batches")
    valid = np.concatenate(chunks.pop("slot_valid"))
    result = {k: np.concatenate(v)[valid] for k, v in chunks.items()}
    if jax.process_index() == 0:
        np.savez(os.path.join(workdir, filename), **result)
        print(f"wrote {os.path.join(workdir, filename)}: " + ", ".join(f"{k} {v.shape}" for k, v in result.items()))
    return result


def run_predict(config, workdir, input_path=None):
    """`System.predict` over the predict split -> ``<workdir>/predictions.npz`` (valid slots only)."""
    return _apply_over("predict", config, workdir, input_path, "predictions.npz")


def run_embed(config, workdir, input_path=None):
    """`System.embed` over the predict split -> ``<workdir>/embeddings.npz`` (valid slots only)."""
    return _apply_over("embed", config, workdir, input_path, "embeddings.npz")


def _owned_elsewhere(mode: str, where: str) -> Callable:
    def run(config, workdir, input_path=None):
        raise NotImplementedError(f"--mode={mode} is provided by {where}, which has not registered it "
                                  f"(mmjax.train.modes.register_mode)")

    return run


MODES: dict[str, Callable] = {
    "featurize": _owned_elsewhere("featurize", "the data package (mmjax.data)"),
    "pretrain": run_train,
    "train": run_train,
    "finetune": run_finetune,
    "probe": _owned_elsewhere("probe", "the evaluation package (mmjax.eval)"),
    "evaluate": run_evaluate,
    "predict": run_predict,
    "embed": run_embed,
}


def register_mode(name: str, fn: Callable) -> None:
    """Install or replace ``MODES[name]`` (``fn(config, workdir, input_path=None)``)."""
    MODES[name] = fn
