"""MultiMat (shared/seeds/multimat.txt; code vmoro1/multimat): crystal / DOS / charge density / text.

    python -m mmjax.main --config=configs/multimat.py:small --mode=pretrain --workdir=runs/multimat  # CPU
    python -m mmjax.main --config=configs/multimat.py --workdir=runs/multimat_full                   # GPU

Objective: config.system.objective = clip | all_pairs | anchored (default, the code's default) |
tensor_clip | barlow_3d | barlow (variants: configs/multimat_tensorclip.py, multimat_barlow3d.py).
Downstream (paper): fine-tune the crystal encoder + a linear head (--mode=train runs the
pretraining stage, then the supervised stage with everything trainable).

Data: the embedded default has crystal structures, XRD, composition and text but no DOS or
charge density; the small variant therefore uses crystal + text (anchored CLIP on one pair).
Text needs frozen MatBERT embeddings (config.data.text_model: a local MatBERT folder; MatBERT is
not on the hub). Real MP DOS / charge densities / MatBERT embeddings are in shared/data/dos/*.npz,
but keyed by MP id without structures: running on them needs the matching MP structures (e.g. an
MP JSON export with "dos"/"chgcar" fields, read by mmjax.data.sources.read_mp_json).
"""

from __future__ import annotations

import ml_collections

from configs import base


PAPER_BATCH = 128  # multimat.py: --batch_size 128


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="multimat",
        stage="pretrain",             # set by the modes: "pretrain" | "finetune"
        small=small,
        modalities=("crystal", "dos", "charge_density", "text"),  # paper Fig. 1 / code --modalities
        element_features="cgcnn92",   # PotNet node input: 92-d CGCNN atom features -> Linear(92, 256)
        latent_dim=128,               # code --latent_dim 128 (PotNet fc 256 -> 128, DOS/ResNeXt/text -> 128)
        objective="anchored",         # code --loss_function_name anchored_clip (default)
        anchor="crystal",             # anchored_clip anchors on the crystal
        clip_pair=("crystal", "dos"),  # objective "clip" / "barlow": the two modalities
        triple=("crystal", "dos", "charge_density"),  # TensorCLIPLoss2 / 3-D Barlow order in the code
        temperature=0.2,              # code --temp 0.2 (fixed)
        learnable_temperature=False,
        tensor_clip_variant="paper",  # Supp. Eq. S1-S2; "multimat_code" = TensorCLIPLoss2 weights 1/0.5/0
        chunk_size=0,                 # 0: form the B^3 tensor (B = 128: 2.1 M logits); > 0: stream chunks
        barlow_lambda=0.0051,         # code --lmda 0.0051
        barlow_half=True,             # code --barlow_half: target 1/2 on the semi-hyper-diagonals
        # fine-tuning targets (paper: bulk / shear modulus, elastic tensor, band gap); embedded default here
        targets=ml_collections.ConfigDict({"ewald_energy_per_atom": 1}, type_safe=False),
        head_hidden=(),               # tasks/prediction_finetune.py: a single nn.Linear(128, n_out)
        encoder_overrides=ml_collections.ConfigDict({}, type_safe=False),
    ))
    c.data.modalities = ("crystal", "dos", "charge_density", "text")
    c.data.features.graph = "potnet"     # PotNet graphs: 4 A x 16 neighbours + infinite potential edges
    c.data.features.dos_length = 601     # generate_dos_bandgap.py: resampled to 601 points
    c.data.text_model = ""               # required for text: a local MatBERT checkpoint folder
    c.data.text_pooling = "mean"         # not given by the code (embeddings ship precomputed): ours
    c.data.normalize_targets = False     # prediction_finetune.py: --non_normalize_targets default True
    c.data.split = (0.7, 0.2, 0.1)       # prediction_finetune.py: 70 / 20 / 10
    # Pretraining optimiser (multimat.py): AdamW lr 1e-4, wd 0.05, betas (0.9, 0.95), 10 warm-up epochs,
    # cosine to 0 (the paper; "multimat_code" preset = the code's effective 5e-5 peak).
    c.optim.update(dict(schedule="cosine", peak_lr=1e-4, init_lr=0.0, end_lr=0.0, b1=0.9, b2=0.95,
                        weight_decay=0.05, warmup_fraction=10 / 500))  # 10 of 500 epochs
    c.data.batch_per_device = PAPER_BATCH   # global 128 on one device; divide by the device count
    n_train = int(c.data.split[0] * c.data.num_materials)
    c.pretrain.steps = base.steps_for(500, n_train, PAPER_BATCH)  # multimat.py: 500 epochs
    c.train.steps = base.steps_for(200, n_train, PAPER_BATCH)     # prediction_finetune.py: 200 epochs
    c.train.compute_dtype = "bfloat16"      # multimat.py: torch.cuda.amp autocast
    if small:
        # Offline stand-ins for the embedded default: template descriptions (robocrys takes ~1 s per
        # structure) and the hashing text encoder (no BERT weights offline). Use a real checkpoint
        # folder in config.data.text_model for real work.
        c.data.features.text_robocrys = False
        c.data.text_model = "hashing"
        c.system.modalities = ("crystal", "text")  # what the embedded default provides
        c.data.modalities = ("crystal", "text")
        c.system.latent_dim = 16
        c.data.num_materials = 400
        c.data.batch_per_device = 16
        c.train.compute_dtype = "float32"
        c.optim.peak_lr = 2e-3
        c.pretrain.steps = 200
        c.train.steps = 200
        c.train.log_every = 50
    return c
