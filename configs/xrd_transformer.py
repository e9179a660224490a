"""Unimodal XRD transformer baseline (XxaCT-NN Table 1, "Transformer, XRD"): XRD -> property heads.

    python -m mmjax.main --config=configs/xrd_transformer.py:small --workdir=runs/xrd

The encoder is the XxaCT-NN XRD encoder (Sec. 3.1: 4250 points as 17 tokens x 250, 3 layers,
512-d, 4 heads, FFN 1024, learnable [CLS] and positions, dropout 0.1), its [CLS] feeding one linear
head per target; optimiser and schedule as XxaCT-NN (Sec. 3.4), 50 epochs at batch 32,768.
"""

from __future__ import annotations

import ml_collections

from configs import base


PAPER_GLOBAL_BATCH, PAPER_DEVICES = 32768, 8


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="xrd_transformer",
        encoder=dict(patch_size=250,  # num_tokens derived: 4250 points / 250 = 17
                     d_model=512, num_layers=3, num_heads=4, mlp_dim=1024, dropout_rate=0.1),
        head_hidden=(),
    ))
    c.data.modalities = ("xrd",)
    c.data.targets = ("ewald_energy_per_atom", "crystal_system")
    c.data.split = (0.9, 0.05, 0.05)
    c.optim.update(dict(schedule="cosine", peak_lr=5e-4, init_lr=1e-6, end_lr=1e-7, warmup_fraction=0.1,
                        b1=0.9, b2=0.98, weight_decay=0.01))
    c.train.compute_dtype = "bfloat16"
    c.data.batch_per_device = PAPER_GLOBAL_BATCH // PAPER_DEVICES
    c.train.steps = base.steps_for(50, int(0.9 * c.data.num_materials), PAPER_GLOBAL_BATCH)
    c.train.log_every = 1
    if small:
        c.system.encoder.update(dict(d_model=32, num_layers=2, num_heads=2, mlp_dim=64, dropout_rate=0.0))
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.train.compute_dtype = "float32"
        c.optim.peak_lr = 2e-3
        c.train.steps = 400
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
