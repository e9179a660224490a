"""Systems (X-MoPA, XxaCT-NN, MultiMat, MatBind, baselines) and their registry.

``SYSTEMS`` maps ``config.system.name`` to a factory ``factory(config) -> System``
(the interface is documented in `mmjax.systems.base`).
"""

from mmjax.systems.base import System
from mmjax.systems.toy import ToySystem, make_toy

SYSTEMS = {
    "toy": make_toy,
}


def build_system(config) -> System:
    """The system named by ``config.system.name``, built by its registered factory."""
    name = config.system.name
    if name not in SYSTEMS:
        raise ValueError(f"config.system.name={name!r} is not a registered system; known: {sorted(SYSTEMS)}")
    return SYSTEMS[name](config)


__all__ = ["SYSTEMS", "System", "ToySystem", "build_system", "make_toy"]
