"""CrabNet baseline (Wang et al. 2021; reference code anthony-wang/CrabNet): composition -> property heads.

    python -m mmjax.main --config=configs/crabnet.py:small --workdir=runs/crabnet

Encoder (crabnet/kingcrab.py): d_model 512, 3 layers, 4 heads, FFN 2048, dropout 0.1, fractional
encodings with resolution 5000; learned 200-d element vectors stand in for mat2vec (not shipped);
masked mean over elements; Roost-style head widths [1024, 512, 256, 128] (XxaCT-NN Table 1 uses
CrabNet as the unimodal composition baseline).
Deviations: MSE loss (CrabNet: RobustL1 with an uncertainty output); AdamW with a constant rate
(CrabNet: Lamb + Lookahead, CyclicLR 1e-4..6e-3); batch 512 (CrabNet's 2^9).
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location("mmjax_configs_base", pathlib.Path(__file__).with_name("base.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

CRABNET_BATCH = 512
EPOCHS = 300  # our choice for the embedded default (CrabNet trains with early stopping)


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="crabnet",
        encoder=dict(d_model=512, num_layers=3, num_heads=4, mlp_dim=2048, element_dim=200, resolution=5000,
                     dropout_rate=0.1),
        head_hidden=(1024, 512, 256, 128),
    ))
    c.data.modalities = ("composition",)
    c.data.targets = ("ewald_energy_per_atom",)
    c.optim.update(dict(schedule="constant", peak_lr=1e-3, weight_decay=0.0))
    c.data.batch_per_device = CRABNET_BATCH
    c.train.steps = base.steps_for(EPOCHS, int(0.8 * c.data.num_materials), CRABNET_BATCH)
    c.train.log_every = 10
    if small:
        c.system.encoder.update(dict(d_model=32, num_layers=2, num_heads=2, mlp_dim=64, element_dim=16,
                                     dropout_rate=0.0))
        c.system.head_hidden = (64, 32)
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.optim.peak_lr = 2e-3
        c.train.steps = 400
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
