"""MultiMat with 3-D Barlow Twins over (crystal, DOS, charge density) (Supp. Eq. S3-S4).

    python -m mmjax.main --config=configs/multimat_barlow3d.py --workdir=runs/multimat_bt3d

The code runs it with --use_final_bn (BatchNorm at the end of every encoder); here the
cross-correlation centres and normalises the embedding columns itself (Eq. S4), so no final BN.
"""

from __future__ import annotations

from configs import multimat


def get_config(arg=None):
    c = multimat.get_config(arg)
    c.system.objective = "barlow_3d"            # FastBTLoss3D
    c.system.modalities = ("crystal", "dos", "charge_density")
    c.data.modalities = ("crystal", "dos", "charge_density")
    c.system.barlow_lambda = 0.0051             # code --lmda 0.0051
    c.system.barlow_half = True                 # code --barlow_half
    return c
