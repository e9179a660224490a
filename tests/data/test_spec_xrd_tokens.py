"""The XRD transformer's token count comes from the one declared XRD grid (config.data.features),
computed when the system is built; a grid the patches do not tile, or a stated num_tokens that
disagrees, is one clear error naming the keys."""

import numpy as np
import pytest

from mmjax.config_file import load_config
from mmjax.data.features.xrd import two_theta_grid
from mmjax.data.spec import xrd_points, xrd_tokens
from mmjax.systems import build_system


def test_xrd_points_follow_the_featuriser_grid():
    c = load_config("configs/xxact.py")
    assert xrd_points(c) == 4250 == len(two_theta_grid(5.0, 90.0, 0.02))
    c.data.features.xrd_two_theta_range, c.data.features.xrd_step = (10.0, 70.0), 0.5
    assert xrd_points(c) == 120


def test_tokens_derived_and_checked():
    c = load_config("configs/xxact.py")
    assert xrd_tokens(c, {"patch_size": 250}, "config.system.xrd", 250)["num_tokens"] == 17
    assert xrd_tokens(c, {"patch_size": 250, "num_tokens": 17}, "config.system.xrd", 250)["num_tokens"] == 17
    assert xrd_tokens(c, {}, "s", 425)["num_tokens"] == 10  # the encoder's default patch
    with pytest.raises(ValueError, match=r"config.system.xrd.num_tokens=16 disagrees .* 4250 points = 17 x 250"):
        xrd_tokens(c, {"patch_size": 250, "num_tokens": 16}, "config.system.xrd", 250)
    with pytest.raises(ValueError, match=r"patch_size=300 does not divide the XRD grid .* 4250 points"):
        xrd_tokens(c, {"patch_size": 300}, "config.system.xrd", 250)


@pytest.mark.parametrize("name,section", [("xxact", "xrd"), ("xrd_transformer", "encoder")])
def test_systems_take_the_tokens_from_the_grid(name, section):
    c = load_config(f"configs/{name}.py")
    c.data.features.xrd_two_theta_range, c.data.features.xrd_step = (5.0, 45.0), 0.02  # 2000 points
    system = build_system(c)
    xrd = system.net.xrd if name == "xxact" else system.encoders["xrd"]
    assert (xrd.num_tokens, xrd.patch_size) == (8, 250)
    c.data.features.xrd_step = 0.03
    with pytest.raises(ValueError, match=rf"config.system.{section}.patch_size=250 does not divide"):
        build_system(c)
    assert np.isclose(c.data.features.xrd_step, 0.03)


def test_a_locked_config_gets_the_derived_tokens_too():
    """The command line locks its config: the derived count is still written (no KeyError)."""
    c = load_config("configs/xxact.py:small")
    c.lock()
    build_system(c)
    assert c.system.xrd.num_tokens == 17
