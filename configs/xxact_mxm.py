"""XxaCT-NN with MXM-only pretraining (Table 2, "Masked XRD Modeling (MXM)"); otherwise configs/xxact.py.

    python -m mmjax.main --config=configs/xxact_mxm.py:small --workdir=runs/xxact_mxm
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("mmjax_configs_xxact", pathlib.Path(__file__).with_name("xxact.py"))
xxact = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xxact)


def get_config(arg=None):
    c = xxact.get_config(arg)
    c.pretrain.terms.update(dict(supervised=0.0, mxm=1.0, clip=0.0))
    return c
