"""XxaCT-NN (shared/seeds/xxact-nn.txt): composition + XRD, cross-attention fusion, MXM + CLIP pretraining.

    python -m mmjax.main --config=configs/xxact.py:small --workdir=runs/xxact   # CPU, a few minutes
    python -m mmjax.main --config=configs/xxact.py --workdir=runs/xxact_full    # paper sizes (GPU)

--mode=train pretrains (config.pretrain: MXM + CLIP) in <workdir>/pretrain, then trains the
multi-target heads (config.objective: uniform task sampling) in <workdir> starting from it.
Transfer with a frozen trunk (paper: band gap):
    --mode=probe --config.train.init_from=runs/xxact --config.data.targets="('band_gap',)"

The embedded default data are synthetic prototype crystals: the paper's formation energy is
replaced by the synthetic regression target ``ewald_energy_per_atom``; use a real source
(``--config.data.source=path/to/alexandria.json.bz2``) and its target names for real work.
"""

from __future__ import annotations

import ml_collections

from configs import base


# Paper, Sec. 3.4: "a large batch size of 32,768 on 8 NVIDIA H100".
PAPER_GLOBAL_BATCH = 32768
PAPER_DEVICES = 8


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()

    c.system = ml_collections.ConfigDict(dict(
        name="xxact",
        # Composition encoder: CrabNet (Sec. 3.1; CrabNet sizes: d 512, 3 layers, 4 heads, FFN 2048,
        # 200-d element vectors) with a [CLS] token, tokens projected to the 768-d fusion width
        # (9.7 M parameters in the paper).
        composition=dict(d_model=512, num_layers=3, num_heads=4, mlp_dim=2048, element_dim=200,
                         resolution=5000, out_dim=768, dropout_rate=0.1),
        # XRD encoder (Sec. 3.1): 4250 points -> 17 tokens x 250; "3 layers deep, embedding dimension
        # 512, 4 attention heads, 1024 dimensions for the feedforward blocks"; learnable [CLS] and
        # positions; projected to 768 (6.8 M parameters in the paper).
        xrd=dict(patch_size=250,  # num_tokens derived: 4250 points / 250 = 17
                 d_model=512, num_layers=3, num_heads=4, mlp_dim=1024, out_dim=768, dropout_rate=0.1),
        # Fusion (Sec. 3.1): "12-layer deep transformer with 768 embedding dimensions, 12 attention
        # heads, and 2048 dimensions for the feedforward blocks" (94.5 M parameters).
        fusion=dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=2048, dropout_rate=0.1),
        mask_ratio=0.05,            # MXM: "5 % of input XRD tokens are randomly replaced with [MASK]"
        temperature_init=0.07,      # CLIP: "learnable temperature parameter initialized to 0.07"
        learnable_temperature=True,
        task_sampling="uniform",    # Sec. 3.3: "uniform task sampling strategy that selects a task per example"
        remat=False,                # paper: gradient checkpointing (set True on accelerators for memory)
    ))
    c.data.modalities = ("composition", "xrd")
    # Sec. 3.3 targets: formation energy (here the synthetic ewald_energy_per_atom), crystal system,
    # space group number.
    c.data.targets = ("ewald_energy_per_atom", "crystal_system", "space_group")
    c.data.split = (0.9, 0.05, 0.05)  # Sec. 3.3: ~90 % train / ~10 % test (half of it used for validation here)
    c.data.features.xrd_two_theta_range = (5.0, 90.0)  # Sec. 3.3: Cu Kα, 5-90°, 0.02° -> 4250 points
    c.data.features.xrd_step = 0.02
    c.data.features.xrd_sigma = 0.1                    # Sec. 3.3: Gaussian smearing σ = 0.1

    # Objectives: pretraining MXM + CLIP (Sec. 3.2, "contrastive + MXM"), then supervised heads.
    c.objective.terms = ml_collections.ConfigDict(dict(supervised=1.0, mxm=0.0, clip=0.0))
    c.pretrain.terms = ml_collections.ConfigDict(dict(supervised=0.0, mxm=1.0, clip=1.0))

    # Optimiser (Sec. 3.4): AdamW b1 0.9, b2 0.98, weight decay 0.01; linear warm-up from 1e-6 to 5e-4
    # over 10 % of training, cosine decay to 1e-7; no gradient clipping.
    c.optim.update(dict(schedule="cosine", peak_lr=5e-4, init_lr=1e-6, end_lr=1e-7, warmup_fraction=0.1,
                        b1=0.9, b2=0.98, weight_decay=0.01, clip_norm=0.0))
    c.train.compute_dtype = "bfloat16"  # paper: automatic mixed precision

    # Schedule (Sec. 3.4): pretraining 100 epochs, supervised 50 epochs, global batch 32,768.
    # On Alexandria (4,554,752 train entries) that is 139 steps per epoch; here the steps follow
    # config.data.num_materials.
    c.data.batch_per_device = PAPER_GLOBAL_BATCH // PAPER_DEVICES
    n_train = int(c.data.split[0] * c.data.num_materials)
    c.pretrain.steps = base.steps_for(100, n_train, PAPER_GLOBAL_BATCH)
    c.train.steps = base.steps_for(50, n_train, PAPER_GLOBAL_BATCH)
    c.train.log_every = 1
    c.checkpoint.every = 0

    if small:
        # CPU-sized variant for the embedded default: same architecture and objectives, tiny widths,
        # fp32, a higher learning rate and a few hundred steps (a few minutes on 2 CPU cores).
        c.system.composition.update(dict(d_model=32, num_layers=2, num_heads=2, mlp_dim=64, element_dim=16,
                                         out_dim=64, dropout_rate=0.0))
        c.system.xrd.update(dict(d_model=32, num_layers=2, num_heads=2, mlp_dim=64, out_dim=64, dropout_rate=0.0))
        c.system.fusion.update(dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=128, dropout_rate=0.0))
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.train.compute_dtype = "float32"
        c.optim.peak_lr = 2e-3
        c.pretrain.steps = 300
        c.train.steps = 600
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
