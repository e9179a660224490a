"""Config files: one loader by path (mmjax.config_file), and ``configs`` an importable package."""

import subprocess
import sys

import pytest

from mmjax.config_file import ROOT, load_config


def test_load_config_by_path_and_arg():
    paper = load_config("configs/cgcnn.py")
    matbench = load_config("configs/cgcnn.py:matbench")
    assert (paper.system.encoder.n_conv, matbench.system.encoder.n_conv) == (3, 4)
    assert load_config(ROOT / "configs" / "cgcnn.py", "matbench").system.encoder.atom_fea_len == 32
    assert load_config("configs/xxact_mxm.py:small").pretrain.terms.mxm == 1.0
    with pytest.raises(FileNotFoundError, match="no_such.py does not exist"):
        load_config("configs/no_such.py")


def test_configs_import_their_defaults_from_any_working_directory(tmp_path):
    """``from configs import base`` inside a config resolves outside the checkout (the package is
    installed with mmjax), so a config file loads from another folder."""
    code = ("from mmjax.config_file import load_config; import configs.base as b; "
            f"c = load_config({str(ROOT / 'configs' / 'multimat_tensorclip.py')!r}, 'small'); "
            "print(b.__file__, c.system.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(ROOT / "configs" / "base.py") in out.stdout and "multimat" in out.stdout
