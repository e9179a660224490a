"""X-MoPA (shared/seeds/xmopa.txt): crystal graph + text + XRD, cross-modal latent prediction.

    python -m mmjax.main --config=configs/xmopa.py:small --mode=pretrain --workdir=runs/xmopa   # CPU
    python -m mmjax.main --config=configs/xmopa.py:small --mode=probe --workdir=runs/xmopa_probe \
        --config.train.init_from=runs/xmopa                                                     # frozen encoders

--mode=train pretrains (config.pretrain.steps) then trains the heads with everything trainable;
the paper's downstream protocol is the probe (frozen encoders, heads only).

Text: the paper encodes robocrystallographer / template text with frozen MatSciBERT and keeps the
[CLS] embedding (config.data.text_model / text_pooling). MatSciBERT's weights are not available
offline: point config.data.text_model at a local checkpoint folder (or the hub id on a machine
with network). The paper gives no alpha, beta or tau (only "lambda << 1", Eq. 7): the loss
weights below are our choices.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="xmopa",
        stage="pretrain",           # set by the modes: "pretrain" | "finetune" (heads)
        small=small,                # tiny encoder widths (mmjax.nn.SMALL)
        element_features="cgcnn92",  # App. A: CGCNN node features (group, period, EN, IE, radius, valence, EA ...)
        latent_dim=150,             # App. A Eq. 1: joint embedding space; text [CLS] "projected to 150 dimensions"
        text_dim=150,               # the [CLS] projection's width (the text encoder's output)
        predictor_hidden=(256,),    # App. A: "lightweight MLP predictors" h_m (width not given: ours)
        predictor_activation="gelu",  # not given: ours
        sample_target=True,         # Abstract: "for each training instance, select two modalities, predict the third"
        stop_gradient_targets=False,  # no EMA / stop-gradient described; VICReg prevents collapse (App. A)
        reduction="sum",            # App. A Eq. 3: squared L2 norm ||z^_m - z~_m||^2
        vicreg_weight=0.01,         # Eq. 7: lambda << 1 (value not given: ours)
        vicreg_gamma=1.0,           # Eq. 5: gamma (not given; VICReg default 1)
        vicreg_lambda_var=1.0,      # Eq. 5: lambda_v (not given)
        vicreg_lambda_cov=1.0,      # Eq. 5: lambda_c (not given)
        vicreg_use_std=False,       # Eq. 5 hinges Var; True = original VICReg std hinge (its
                                    # gradient does not vanish at collapse)
        contrastive_weight=0.1,     # main text Eq. 3: beta (not given: ours)
        temperature=0.07,           # App. A Eq. 6: tau (not given; CLIP's 0.07)
        learnable_temperature=False,
        # downstream heads (Sec. 5: "fine tuning of only the final prediction heads"); embedded default
        # target here, a Matbench target (e.g. {"e_form": 1}) with a Matbench source
        targets=ml_collections.ConfigDict({"ewald_energy_per_atom": 1}, type_safe=False),
        head_source="latent",       # heads read the joint-space latents z~_m; "encoder": f_m(x_m) before P_m
        head_hidden=(256,),         # not given: ours (0.6 % of 111 M parameters are trained downstream)
        encoder_overrides=ml_collections.ConfigDict({}, type_safe=False),
    ))
    c.data.modalities = ("crystal", "text", "xrd")
    c.data.features.graph = "cgcnn"                    # App. C: CGCNN graphs (8 A x 12 neighbours)
    c.data.features.xrd_two_theta_range = (5.0, 90.0)  # App. C: "2 theta range of 5 to 90 degrees"
    c.data.features.xrd_step = 0.02                    # App. C: "fixed-length 1D intensity array" (4250 points)
    c.data.features.text_robocrys = False              # App. A: "descriptions ... generated using a template"
    c.data.text_model = "m3rg-iitd/matscibert"         # Sec. 2: MatSciBERT (frozen); needs the weights locally
    c.data.text_pooling = "cls"                        # Sec. 2: "The [CLS] token embedding"
    # Optimiser (Sec. 3): AdamW with weight decay, cosine annealing; values not given: ours.
    c.optim.update(dict(schedule="cosine", peak_lr=1e-3, init_lr=0.0, end_lr=0.0, warmup_fraction=0.05,
                        weight_decay=0.01))
    c.objective.terms = ml_collections.ConfigDict(dict(supervised=1.0))
    c.pretrain.terms = ml_collections.ConfigDict(dict(supervised=0.0))
    c.data.batch_per_device = 64
    c.pretrain.steps = 20000
    c.train.steps = 5000
    if small:
        # Offline stand-ins for the embedded default: template descriptions (robocrys takes ~1 s per
        # structure) and the hashing text encoder (no BERT weights offline). Use a real checkpoint
        # folder in config.data.text_model for real work.
        c.data.features.text_robocrys = False
        c.data.text_model = "hashing"
        c.system.latent_dim = 32
        c.system.text_dim = 16
        c.system.predictor_hidden = (32,)
        c.system.head_hidden = (32,)
        c.data.num_materials = 400
        c.data.batch_per_device = 16
        c.data.features.xrd_step = 0.2                 # 425 points: fast on CPU
        c.pretrain.steps = 200
        c.train.steps = 200
        c.train.log_every = 50
    return c
