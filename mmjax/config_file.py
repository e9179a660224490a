"""Config files by path, as ``--config=path[:arg]`` reads them (for scripts and benchmarks).

``load_config("configs/cgcnn.py:matbench")`` -> that file's ``get_config("matbench")``. A relative
path that does not exist from the working directory is looked up from the checkout root. Config
files import their defaults as ``from configs import base`` (``configs/`` is a package installed
with mmjax, so that import works from any working directory).
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(spec: str | pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the config file ``spec`` (``path`` or ``path:arg``; an ``arg`` given
    here wins over one in ``spec``; none = the file's default)."""
    path, _, spec_arg = str(spec).partition(":")
    path = pathlib.Path(path)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"mmjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg if arg is not None else (spec_arg or None))
