"""CGCNN baseline (Xie & Grossman 2018; reference code txie-93/cgcnn): crystal graph -> property heads.

    python -m mmjax.main --config=configs/cgcnn.py:small --workdir=runs/cgcnn

Graph: 8 Å cutoff, 12 nearest neighbours, 41 Gaussians on [0, 8] Å (cgcnn/data.py); CGCNN's own
92-d ``atom_init.json`` (``element_table="cgcnn_atom_init"``, read at run time from
``$MMJAX_ELEMENT_DIR`` or ../shared/data/element_properties); 64-d atom features, 3 convolutions,
mean pool, softplus Dense 128 (cgcnn/model.py defaults); MSE; optimiser preset ``"cgcnn"``
(main.py: SGD lr 0.01, momentum 0.9, no weight decay, MultiStepLR at epoch 100 x 0.1), batch 256,
30 epochs.

``:matbench`` is the Matbench leaderboard entry's variant: 4 convolutions, hidden 32, batch 128
(that entry trained until 500 epochs passed without a validation improvement; give the budget with
``--config.train.steps``). ``:small`` is CPU-sized and keeps the pymatgen-rebuilt table
(``"cgcnn92"``, no data folder needed) and AdamW.
BatchNorm as the reference (``norm="batch"``: bn1 over the edges, bn2 over the atoms, momentum
0.1, eps 1e-5), its statistics masked to real edges / atoms and global over the whole batch
(every device's slice); ``:small`` uses LayerNorm (``norm="layer"``, stateless).
"""

from __future__ import annotations

import ml_collections

from configs import base
from mmjax.train.optim import optim_config


CGCNN_BATCH = 256  # cgcnn main.py: --batch-size 256
CGCNN_EPOCHS = 30  # cgcnn main.py: --epochs 30


def get_config(arg=None):
    matbench = (arg or "").strip() == "matbench"
    small = base.parse_arg(None if matbench else arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="cgcnn",
        encoder=dict(atom_fea_len=64,      # --atom-fea-len 64
                     n_conv=3,             # --n-conv 3
                     h_fea_len=128,        # --h-fea-len 128
                     n_h=1,                # --n-h 1
                     cutoff=8.0, gaussian_centers=41,
                     norm="batch",         # ConvLayer bn1 / bn2 (BatchNorm1d)
                     conv_form="factored",  # "full": z_ij @ W per edge as fc_full does (same values; timing)
                     element_table="cgcnn_atom_init"),
        head_hidden=(),                    # linear output layer
        loss="mse",
        target_losses=ml_collections.ConfigDict({}, type_safe=False),
    ))
    c.data.modalities = ("crystal",)
    c.data.targets = ("ewald_energy_per_atom",)
    c.data.features.graph = "cgcnn"
    c.data.split = (0.8, 0.1, 0.1)         # cgcnn main.py: --train-ratio / --val-ratio 0.1 / --test-ratio 0.1
    c.optim = optim_config("cgcnn")        # --optim SGD --lr 0.01 --momentum 0.9 --wd 0 --lr-milestones 100
    c.optim.steps_per_epoch = base.steps_for(1, int(0.8 * c.data.num_materials), CGCNN_BATCH)
    c.data.batch_per_device = CGCNN_BATCH
    c.train.steps = base.steps_for(CGCNN_EPOCHS, int(0.8 * c.data.num_materials), CGCNN_BATCH)
    c.train.epochs = float(CGCNN_EPOCHS)    # steps recomputed from the actual training set
    c.train.log_every = 5
    if matbench:
        c.system.encoder.update(dict(n_conv=4, atom_fea_len=32, h_fea_len=32))
        c.data.batch_per_device = 128
        c.optim.steps_per_epoch = base.steps_for(1, int(0.8 * c.data.num_materials), 128)
        c.train.steps = base.steps_for(CGCNN_EPOCHS, int(0.8 * c.data.num_materials), 128)
    if small:
        c.system.encoder.update(dict(atom_fea_len=16, n_conv=2, h_fea_len=32, element_table="cgcnn92",
                                     norm="layer"))
        c.optim = optim_config("generic")
        c.train.epochs = 0.0
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.optim.peak_lr = 3e-3
        c.train.steps = 400
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
