"""CGCNN baseline (Xie & Grossman 2018; reference code txie-93/cgcnn): crystal graph -> property heads.

    python -m mmjax.main --config=configs/cgcnn.py:small --workdir=runs/cgcnn

Graph: 8 Å cutoff, 12 nearest neighbours, 41 Gaussians on [0, 8] Å (cgcnn/data.py); 92-d element
features (atom_init.json layout, rebuilt in mmjax.data.features.elements); 64-d atom features,
3 convolutions, mean pool, softplus Dense 128 (cgcnn/model.py defaults).
Deviations: LayerNorm instead of BatchNorm (stateless, jit friendly); AdamW (the engine implements
AdamW only) where the reference trains with SGD lr 0.01, momentum 0.9.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location("mmjax_configs_base", pathlib.Path(__file__).with_name("base.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)

CGCNN_BATCH = 256  # cgcnn main.py: --batch-size 256
CGCNN_EPOCHS = 30  # cgcnn main.py: --epochs 30


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="cgcnn",
        encoder=dict(atom_fea_len=64,      # --atom-fea-len 64
                     n_conv=3,             # --n-conv 3
                     h_fea_len=128,        # --h-fea-len 128
                     n_h=1,                # --n-h 1
                     cutoff=8.0, gaussian_centers=41, norm="layer",
                     element_table="cgcnn92"),
        head_hidden=(),                    # linear output layer
    ))
    c.data.modalities = ("crystal",)
    c.data.targets = ("ewald_energy_per_atom",)
    c.data.features.graph = "cgcnn"
    c.data.split = (0.8, 0.1, 0.1)         # cgcnn main.py: --train-ratio / --val-ratio 0.1 / --test-ratio 0.1
    c.optim.update(dict(schedule="constant", peak_lr=1e-3, weight_decay=0.0))  # --lr 0.01 (SGD), --wd 0
    c.data.batch_per_device = CGCNN_BATCH
    c.train.steps = base.steps_for(CGCNN_EPOCHS, int(0.8 * c.data.num_materials), CGCNN_BATCH)
    c.train.log_every = 5
    if small:
        c.system.encoder.update(dict(atom_fea_len=16, n_conv=2, h_fea_len=32))
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.optim.peak_lr = 3e-3
        c.train.steps = 400
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
