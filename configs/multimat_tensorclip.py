"""MultiMat with TensorCLIP over (crystal, DOS, charge density) (Supp. Eq. S1-S2).

    python -m mmjax.main --config=configs/multimat_tensorclip.py --workdir=runs/multimat_tc
    --config.system.tensor_clip_variant=multimat_code   # the public code's TensorCLIPLoss2
    --config.system.chunk_size=32                       # stream the B^3 tensor in chunks

Needs all three modalities in the data (not on the embedded default: no DOS / charge density);
the small variant keeps the three encoders tiny and is meant for a dataset that has them.
"""

from __future__ import annotations

from configs import multimat


def get_config(arg=None):
    c = multimat.get_config(arg)
    c.system.objective = "tensor_clip"          # code --loss_function_name tensor_clip
    c.system.modalities = ("crystal", "dos", "charge_density")  # TensorCLIPLoss2 is hard-wired to these
    c.data.modalities = ("crystal", "dos", "charge_density")
    c.system.tensor_clip_variant = "paper"      # Supp. Eq. S1-S2 (default); "multimat_code" for the code
    c.system.chunk_size = 0                     # B = 128: the B^3 tensor fits (2.1 M logits)
    return c
