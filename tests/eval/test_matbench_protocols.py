"""Transfer protocols of the Matbench harness: the pretraining and supervised-stage configs.

`pretraining_config` must read no label (no targets, no head); `downstream_config` must give the
X-MoPA protocol frozen encoders + trained heads and the MultiMat protocol a fine-tuned crystal
encoder + linear head.
"""

import importlib

import pytest

from mmjax.eval.matbench import PROTOCOLS, downstream_config, pretraining_config
from mmjax.systems import build_system
from mmjax.data.spec import config_targets, feature_spec


def load_config(name: str, arg: str = "small"):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", ["xmopa", "multimat"])
def test_pretraining_config_reads_no_label(tmp_path, name):
    base = load_config(name)
    assert config_targets(base)  # the shipped config has a target: the copy must drop it
    c = pretraining_config(base, source="/data/all.json.gz", steps=120, batch_size=64, n_devices=8,
                           data_dir=str(tmp_path), lr=5e-4, workers=1)
    assert config_targets(c) == () and len(c.system.targets) == 0
    assert c.data.source == "/data/all.json.gz" and c.data.data_dir == str(tmp_path)
    assert c.pretrain.steps == 120 and c.data.batch_per_device == 8 and c.optim.peak_lr == 5e-4
    assert tuple(c.data.split) == pytest.approx((0.95, 0.05, 0.0)) and c.data.num_workers == 1
    assert build_system(c).head is None  # nothing to predict, so no label is batched
    # the input config is untouched
    assert config_targets(base) and base.data.source == "prototypes" and base.pretrain.steps == 200
    # same featurisation as the supervised stage will use (text through the offline stand-in)
    spec = feature_spec(c)
    assert spec.text and spec.graph == {"xmopa": "cgcnn", "multimat": "potnet"}[name]
    assert c.data.text_model == "hashing"


def test_pretraining_config_rejects_bad_sizes(tmp_path):
    base = load_config("xmopa")
    with pytest.raises(ValueError, match="steps >= 1"):
        pretraining_config(base, source="x", steps=0, batch_size=64, n_devices=8, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="batch 60 is not a multiple of the 8 devices"):
        pretraining_config(base, source="x", steps=5, batch_size=60, n_devices=8, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="eval_fraction"):
        pretraining_config(base, source="x", steps=5, batch_size=64, n_devices=8, data_dir=str(tmp_path),
                           eval_fraction=0.0)


def test_xmopa_protocol_trains_heads_only():
    c, trainable = downstream_config(load_config("xmopa"), "xmopa", "e_form")
    assert trainable == ("head",)
    assert c.system.stage == "finetune" and dict(c.system.targets) == {"e_form": 1}
    assert tuple(c.data.targets) == ("e_form",)
    assert tuple(c.data.modalities) == ("crystal", "text", "xrd")  # heads read all three latents
    system = build_system(c)
    assert system.stage == "finetune" and system.head_source == "latent"


def test_xmopa_fine_tuned_form_and_encoder_head_source():
    """--downstream finetune trains every group; system.head_source="encoder" puts the heads on the
    encoder outputs (before the projections), "latent" (default) after them."""
    base = load_config("xmopa")
    c, trainable = downstream_config(base, "xmopa", "e_form", "finetune")
    assert trainable is None and c.system.stage == "finetune"
    assert downstream_config(base, "xmopa", "e_form", "frozen")[1] == ("head",)
    base.system.head_source = "encoder"
    assert build_system(downstream_config(base, "xmopa", "e_form")[0]).head_source == "encoder"
    with pytest.raises(ValueError, match="downstream must be one of"):
        downstream_config(base, "xmopa", "e_form", "linear")


def test_multimat_protocol_fine_tunes_crystal_with_linear_head():
    c, trainable = downstream_config(load_config("multimat"), "multimat", "e_form")
    assert trainable is None  # everything trainable (the crystal encoder is fine-tuned)
    assert tuple(c.system.head_hidden) == () and tuple(c.data.modalities) == ("crystal",)
    assert c.system.stage == "finetune" and dict(c.system.targets) == {"e_form": 1}
    system = build_system(c)
    assert system.head_inputs == ("crystal",) and system.head_source == "encoder"


def test_scratch_protocol_and_unknown_protocol():
    base = load_config("cgcnn")
    c, trainable = downstream_config(base, "scratch", "e_form")
    assert trainable is None and tuple(c.data.targets) == ("e_form",)
    assert c.system.to_dict() == base.system.to_dict()
    assert set(PROTOCOLS) == {"scratch", "xmopa", "multimat"}
    with pytest.raises(ValueError, match="needs a pretraining protocol"):
        downstream_config(base, "scratch", "e_form", "finetune")
    assert downstream_config(load_config("multimat"), "multimat", "e_form", "frozen")[1] == ("head",)
    with pytest.raises(ValueError, match="unknown protocol 'matbind'"):
        downstream_config(base, "matbind", "e_form")
