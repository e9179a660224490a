"""Systems (X-MoPA, XxaCT-NN, MultiMat, MatBind, baselines) and their registry.

``SYSTEMS`` maps ``config.system.name`` to a factory ``factory(config) -> System``
(the interface is documented in `mmjax.systems.base`). Factories are imported on first use, so
a system module that fails to import (or is not there yet) breaks only its own name.
"""

from __future__ import annotations

import importlib
from typing import Callable

from mmjax.systems.base import System
from mmjax.systems.toy import ToySystem, make_toy


def _lazy(module: str, attr: str) -> Callable:
    """A factory that imports ``mmjax.systems.<module>.<attr>`` when called."""

    def factory(config):
        try:
            mod = importlib.import_module(f"mmjax.systems.{module}")
        except ImportError as err:
            raise ImportError(f"system {config.system.name!r} lives in mmjax.systems.{module}, which could not "
                              f"be imported: {err}") from err
        return getattr(mod, attr)(config)

    factory.__name__ = f"{module}.{attr}"
    factory.__qualname__ = factory.__name__
    return factory


SYSTEMS: dict[str, Callable] = {
    "toy": make_toy,
    "xxact": _lazy("xxact", "make_xxact"),
    "cgcnn": _lazy("baselines", "make_cgcnn"),
    "crabnet": _lazy("baselines", "make_crabnet"),
    "xrd_transformer": _lazy("baselines", "make_xrd_transformer"),
    "dense_mlp": _lazy("baselines", "make_dense_mlp"),
    "xmopa": _lazy("xmopa", "make_system"),
    "multimat": _lazy("multimat", "make_system"),
    "matbind": _lazy("matbind", "make_system"),
}


def build_system(config) -> System:
    """The system named by ``config.system.name``, built by its registered factory."""
    name = config.system.name
    if name not in SYSTEMS:
        raise ValueError(f"config.system.name={name!r} is not a registered system; known: {sorted(SYSTEMS)}")
    return SYSTEMS[name](config)


__all__ = ["SYSTEMS", "System", "ToySystem", "build_system", "make_toy"]
