"""Shared helpers for engine tests: the tiny toy config and an in-process engine."""

import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `import toy_config`


@pytest.fixture
def toy_config():
    """A fresh (unlocked) copy of tests/train/toy_config.py's config."""
    from toy_config import get_config

    return get_config()
