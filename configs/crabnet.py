"""CrabNet baseline (Wang et al. 2021; reference code anthony-wang/CrabNet): composition -> property heads.

    python -m mmjax.main --config=configs/crabnet.py:small --workdir=runs/crabnet

As published (crabnet/kingcrab.py, model.py, train_crabnet.py):
* encoder: frozen mat2vec element vectors (``element_table="mat2vec"``, read at run time from
  ``$MMJAX_ELEMENT_DIR`` or ../shared/data/element_properties), d_model 512, 3 layers, 4 heads,
  FFN 2048, dropout 0.1, fractional encodings (resolution 5000), 2 % fraction jitter in training;
  every layer initialised as PyTorch initialises it (``torch_init``), the three transformer layers
  starting identical (``identical_layers``: PyTorch's TransformerEncoder deep-copies one layer);
* head: the Roost residual network [1024, 512, 256, 128] on every element, (value, log sigma,
  gate) per target, masked mean, value x sigmoid(gate) (``head="crabnet"``);
* loss RobustL1 (``loss="robust_l1"``); optimiser preset ``"crabnet"``: Lamb + Lookahead (6, 0.5),
  triangular CyclicLR 1e-4 <-> 6e-3 (the procedure sets the half-cycle: 10 epochs, as the code
  behind Table 2; the main command keeps the preset's one epoch);
* procedure (batch rule 2^round(log2 N - 4) in [128, 4096], at most 300 epochs as
  benchmark_crabnet.py (the script behind the paper's Table 2), CrabNet's validation-gated SWA,
  which stops training after 3 SWA epochs without a new validation minimum):
  `mmjax.eval.crabnet_protocol`, run by ``benchmarks/crabnet.py --paper-recipe``.
Packed element tokens (``packed_tokens``, not a CrabNet setting, a speed one): the transformer and the
head run on each batch's real elements only, packed into that fraction of the [batch, slots] grid
(-1: from the training set's element counts, resolved by the training command and written into the
saved config, padded on more than one device; 0: padded as CrabNet pads). Same values and gradients;
dropout masks are drawn per packed token. See `mmjax.nn.packing`.
The main command (``--mode=train``) trains with the same system and optimiser; its batch is
``data.batch_per_device`` (512 here, CrabNet's inference batch) and it does not run the SWA
procedure (``c.train.epochs`` = 40, as train_crabnet.py). ``:small`` keeps a learned element table (runs without the data folder) and MSE.
"""

from __future__ import annotations

import ml_collections

from configs import base
from mmjax.train.optim import optim_config


CRABNET_BATCH = 512
EPOCHS = 40  # train_crabnet.py: model.fit(epochs=40)


def get_config(arg=None):
    small = base.parse_arg(arg)
    c = base.make_base()
    c.system = ml_collections.ConfigDict(dict(
        name="crabnet",
        encoder=dict(d_model=512, num_layers=3, num_heads=4, mlp_dim=2048, element_dim=200, resolution=5000,
                     dropout_rate=0.1, fraction_noise=0.02, element_table="mat2vec", torch_init=True),
        head="crabnet",
        head_hidden=(1024, 512, 256, 128),
        identical_layers=True,             # nn.TransformerEncoder deep-copies its one layer
        packed_tokens=-1.0,                # the real element tokens only, in this fraction of the slots; -1 = from the data
        loss="robust_l1",
        target_losses=ml_collections.ConfigDict({}, type_safe=False),
    ))
    c.data.modalities = ("composition",)
    c.data.targets = ("ewald_energy_per_atom",)
    c.optim = optim_config("crabnet")
    c.optim.steps_per_epoch = max(1, -(-int(0.8 * c.data.num_materials) // CRABNET_BATCH))
    c.data.batch_per_device = CRABNET_BATCH
    c.train.steps = base.steps_for(EPOCHS, int(0.8 * c.data.num_materials), CRABNET_BATCH)
    c.train.epochs = float(EPOCHS)  # steps recomputed from the actual training set
    c.train.log_every = 10
    if small:
        c.system.encoder.update(dict(d_model=32, num_layers=2, num_heads=2, mlp_dim=64, element_dim=16,
                                     dropout_rate=0.0, element_table="", torch_init=False))
        c.system.head = "mlp"
        c.system.identical_layers = False
        c.system.loss = "mse"
        c.system.head_hidden = (64, 32)
        c.optim = optim_config("generic")
        c.train.epochs = 0.0
        c.data.num_materials = 600
        c.data.batch_per_device = 32
        c.optim.peak_lr = 2e-3
        c.train.steps = 400
        c.train.log_every = 50
        c.train.eval_every = 200
        c.checkpoint.every = 200
    return c
