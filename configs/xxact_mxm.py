"""XxaCT-NN with MXM-only pretraining (Table 2, "Masked XRD Modeling (MXM)"); otherwise configs/xxact.py.

    python -m mmjax.main --config=configs/xxact_mxm.py:small --workdir=runs/xxact_mxm
"""

from configs import xxact


def get_config(arg=None):
    c = xxact.get_config(arg)
    c.pretrain.terms.update(dict(supervised=0.0, mxm=1.0, clip=0.0))
    return c
