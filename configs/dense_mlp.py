"""A dense modality -> MLP -> property heads: the baseline for any modality stored as one
fixed-shape array per material (XRD, text embeddings, charge density, or a modality of your own).

    python -m mmjax.main --config=configs/dense_mlp.py:small --workdir=runs/dense_mlp   # XRD -> MLP

A modality of your own is one module that calls `mmjax.data.modalities.register` (see its
docstring); a config file that imports that module and sets ``c.system.modality`` and
``c.data.modalities`` to its name trains this baseline on it (featurised, stored with its value
statistics and batched like the built-in ones; inputs are not rescaled, so a featuriser returns
values of order one). The default encoder (``text_mlp``) takes one 1-D array per material; name
another (``encoder.name``, e.g. ``resnext3d`` for a 3-D grid) for other shapes. Materials
lacking the modality count in no loss or metric and get no prediction.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="dense_mlp",
        modality="xrd",
        encoder=dict(name="text_mlp", hidden=256, depth=3, out_dim=128, activation="relu"),
        head_hidden=(),
    ))
    c.data.modalities = ("xrd",)
    c.data.targets = ("ewald_energy_per_atom",)
    c.optim.update(dict(schedule="cosine", peak_lr=1e-3, warmup_fraction=0.05, weight_decay=0.0))
    if small:
        c.system.encoder.update(dict(hidden=32, out_dim=32))
        c.data.num_materials = 400
        c.data.batch_per_device = 32
        c.data.features.xrd_step = 0.2  # 425 points
        c.train.steps = 300
        c.train.log_every = 50
        c.train.eval_every = 150
        c.checkpoint.every = 150
    return c
