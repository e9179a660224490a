"""Shared part of every system config (not a runnable config by itself).

`make_base()` = the engine's keys (`mmjax.train.config.base_config`: seed, train, optim, checkpoint,
mesh) plus the data wiring read by `mmjax.train.data.featurized_source` (``config.data``), the
objective weights (``config.objective.terms``) and the optional pretraining stage
(``config.pretrain``) read by `mmjax.train.modes`. System configs (``configs/<system>.py``) load
this file by path (configs/ is not a package, so this works from any working directory) and fill
``config.system`` like the paper's hyperparameter table.

Config arguments: ``--config=configs/<system>.py:small`` selects the CPU-sized variant
(`parse_arg`). The config is locked by `mmjax.main`: a misspelt or mistyped
``--config.<key>=`` override is rejected naming the key.
"""

from __future__ import annotations

import math

import ml_collections

from mmjax.train.config import base_config


def parse_arg(arg: str | None) -> bool:
    """``None``/"" -> full (paper) size; "small" -> the CPU-sized variant. Anything else is an error."""
    arg = (arg or "").strip()
    if arg not in ("", "small", "full"):
        raise ValueError(f"unknown config argument {arg!r}; use ':small' (CPU-sized) or nothing (paper size)")
    return arg == "small"


def steps_for(epochs: float, num_train: int, global_batch: int) -> int:
    """Optimiser steps of `epochs` passes over `num_train` materials at `global_batch` per step."""
    return max(1, math.ceil(epochs * num_train / global_batch))


def make_base() -> ml_collections.ConfigDict:
    c = base_config()
    c.data.update(dict(
        # Where materials come from: "prototypes" (the embedded synthetic default, generated offline),
        # a file / folder path (CIF/POSCAR folder, CSV, JSON: format detected), or a source name of
        # mmjax.data.sources (e.g. "matbench_perovskites"); source_kwargs go to the reader.
        source="prototypes",
        num_materials=3000,       # embedded default only: how many prototype crystals
        source_seed=0,            # embedded default only
        data_dir="",              # featurised cache; "" = <workdir>/data
        modalities=(),            # Batch modalities; () = every stored one
        targets=(),               # target / label names; () = keys of config.system.targets if any
        normalize_targets=True,   # regression targets -> (y - mean) / std of the stored dataset
        split=(0.8, 0.1, 0.1),    # train / eval / test fractions (random, split_seed)
        split_seed=0,
        budget_percentile=95.0,   # graph padding budget per device from this percentile of sizes
        device_resident="auto",   # training batches gathered on the devices from the whole dataset put
                                  # there once ("on" | "off" | "auto": on if <= device_resident_max_mb)
        device_resident_max_mb=1024.0,
        num_workers=2,            # featurisation worker processes (0 = in-process)
        num_shards=1,             # --mode=featurize as a job array: K tasks with shard_index 0..K-1,
        shard_index=0,            # then one with shard_index=-1 merges (mmjax.data.cache.featurize_shard)
        predict_split="test",     # predict / embed without --input: train | eval | test | all
        evaluate_split="test",    # evaluate mode
        text_model="",            # text modality: BERT checkpoint folder (or hub id) for frozen embeddings
        text_pooling="cls",       # "cls" | "mean"
    ))
    c.data.source_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    # vector regression targets: {name: components}, e.g. {"elastic_tensor": 21} (a 6 x 6 Voigt matrix
    # in a JSON source is read as its 21 upper-triangle entries); scalar targets are not listed
    c.data.target_dims = ml_collections.ConfigDict({}, type_safe=False)
    c.data.features = ml_collections.ConfigDict(dict(
        graph="cgcnn",            # crystal graph kind: "cgcnn" (8 Å x 12) | "potnet" (4 Å x 16 + infinite edges)
        cutoff=0.0,               # Å; 0 = the kind's default
        max_neighbors=0,          # 0 = the kind's default
        xrd_two_theta_range=(5.0, 90.0),  # degrees 2θ; with step 0.02 -> 4250 points (XxaCT-NN)
        xrd_step=0.02,
        xrd_sigma=0.1,            # Gaussian smearing σ, degrees 2θ (XxaCT-NN: 0.1)
        max_elements=8,
        symprec=0.1,              # Å, symmetry labels
        dos_length=0,             # 0 = default (601)
        text_robocrys=True,       # describe structures without text with robocrys (else a template)
    ))
    c.objective = ml_collections.ConfigDict(dict(
        terms=ml_collections.ConfigDict(dict(supervised=1.0)),
    ))
    c.pretrain = ml_collections.ConfigDict(dict(
        steps=0,                  # > 0: --mode=train first pretrains this many steps in <workdir>/pretrain
        terms=ml_collections.ConfigDict(dict(supervised=0.0)),
    ))
    c.train.eval_every = 0
    c.checkpoint.every = 0
    return c
