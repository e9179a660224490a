"""XxaCT-NN with contrastive-only pretraining (Table 2, "Contrastive"); otherwise configs/xxact.py.

    python -m mmjax.main --config=configs/xxact_clip.py:small --workdir=runs/xxact_clip
"""

from configs import xxact


def get_config(arg=None):
    c = xxact.get_config(arg)
    c.pretrain.terms.update(dict(supervised=0.0, mxm=0.0, clip=1.0))
    return c
