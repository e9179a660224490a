"""MatBind (shared/seeds/matbind.txt; code HFMI-SOL-AI/MatBind): hub-and-spoke InfoNCE.

    python -m mmjax.main --config=configs/matbind.py:small --mode=pretrain --workdir=runs/matbind   # CPU
    python -m mmjax.main --config=configs/matbind.py --mode=pretrain --workdir=runs/matbind_full    # GPU
    --config.system.central_modality=text   # the code's paper config (train_crys_dos_pxrd_text.yaml)

Downstream: --mode=probe --config.train.init_from=runs/matbind (linear probe on the frozen crystal
encoder; experiments/linear_prob.py) and retrieval (mmjax.eval) on --mode=embed outputs.

Data: the embedded default has crystal + XRD (+ text with a BERT checkpoint), no DOS, so the small
variant binds crystal (hub) with pXRD only. MatBind's pXRD is matminer's 128-point pattern over
0-127 degrees (one point per degree), used here. Text needs MatBERT embeddings
(config.data.text_model: a local MatBERT folder; attention-mask mean pooling).
"""

from __future__ import annotations

import ml_collections

from configs import base


PAPER_BATCH = 180  # train_crys_dos_pxrd_text.yaml: batch 180 per device


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="matbind",
        stage="pretrain",            # set by the modes
        small=small,
        modalities=("crystal", "xrd", "dos", "text"),  # crystal structure, pXRD, DOS, text
        latent_dim=128,              # projection heads -> 128 ("as in CLIP", bias-free last layer)
        central_modality="crystal",  # data config default: crystal_structure (paper config: text)
        spoke_reduction="mean",      # loss = mean over the (hub, spoke) pairs
        temperature=0.07,            # NCE(temperature=0.07), fixed
        learnable_temperature=False,  # LearnableLogitScaling (init 1/0.07, max 100) in its ablation only
        dos_dropout=0.1,             # DOS nn.TransformerEncoder dropout 0.1
        targets=ml_collections.ConfigDict({"crystal_system": 7}, type_safe=False),  # linear_prob.py: 7-class mapping
        head_hidden=(),              # linear_prob.py: a single Linear
        encoder_overrides=ml_collections.ConfigDict({}, type_safe=False),
    ))
    # Encoders (mmjax.nn PAPER_CONFIGS "matbind_*"): GCN 6 x CGConv 128-d + LN, 41 Gaussians;
    # pXRD ResNet1d spec 777 (kernel 9, GroupNorm 32); DOS transformer 512-d, 2 post-LN layers,
    # 8 heads, FFN 2048, ReLU, sinusoidal positions (max 2001).
    c.data.modalities = ("crystal", "xrd", "dos", "text")
    c.data.features.graph = "cgcnn"                    # RADIUS 8.0, MAX_NUM_NBR 12
    c.data.features.cutoff = 8.0
    c.data.features.max_neighbors = 12
    c.data.features.xrd_two_theta_range = (0.0, 128.0)  # matminer XRDPowderPattern: 0-127 degrees,
    c.data.features.xrd_step = 1.0                      # 128 points (pattern_length 128)
    c.data.features.xrd_sigma = 0.5                     # matminer uses a per-material KDE: ours
    c.data.features.dos_length = 2001                   # DOS padded to 2001 with a mask
    c.data.text_model = ""                              # required for text: local MatBERT folder
    c.data.text_pooling = "mean"                        # mean of the last layer over non-pad tokens
    c.data.split = (0.95, 0.05, 0.0)                    # frac_train 0.95
    # Optimiser (model/default.yaml): AdamW lr 5e-4, wd 1e-4, betas (0.9, 0.95), grad clip 1.0;
    # cosine with 10 % warm-up (the code has one optimiser per modality: one here).
    c.optim.update(dict(schedule="cosine", peak_lr=5e-4, init_lr=0.0, end_lr=5e-11, warmup_fraction=0.1,
                        b1=0.9, b2=0.95, weight_decay=1e-4, clip_norm=1.0))
    c.data.batch_per_device = PAPER_BATCH
    n_train = int(c.data.split[0] * c.data.num_materials)
    c.pretrain.steps = base.steps_for(500, n_train, PAPER_BATCH)  # 500 epochs
    c.train.steps = base.steps_for(50, n_train, 300)              # linear probe (batch 300; early stopping)
    c.train.compute_dtype = "bfloat16"                            # precision: bf16-mixed
    if small:
        # Offline stand-ins for the embedded default: template descriptions (robocrys takes ~1 s per
        # structure) and the hashing text encoder (no BERT weights offline). Use a real checkpoint
        # folder in config.data.text_model for real work.
        c.data.features.text_robocrys = False
        c.data.text_model = "hashing"
        c.system.modalities = ("crystal", "xrd", "text")  # what the embedded default provides (no DOS)
        c.data.modalities = ("crystal", "xrd", "text")
        c.system.latent_dim = 16
        c.data.num_materials = 400
        c.data.split = (0.8, 0.1, 0.1)
        c.data.batch_per_device = 16
        c.train.compute_dtype = "float32"
        c.optim.peak_lr = 2e-3
        c.pretrain.steps = 200
        c.train.steps = 200
        c.train.log_every = 50
    return c
