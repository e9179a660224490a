"""A new modality is one file (``cell_modality.py``: a featuriser + `register`) and one config
entry: it is featurised, stored with statistics, batched (host and device store), and a system
trains on it; the registry refuses names and keys the schema owns, and an unknown modality in a
config is one error naming the known ones."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cell_modality  # noqa: E402  (registers "cell")

from mmjax.config_file import load_config  # noqa: E402
from mmjax.data import modalities  # noqa: E402
from mmjax.data.featurize import featurize_dataset, featurize_material  # noqa: E402
from mmjax.data.device_store import estimate_nbytes  # noqa: E402
from mmjax.data.pipeline import make_batches  # noqa: E402
from mmjax.data.sources.prototypes import generate_one  # noqa: E402
from mmjax.data.spec import FeatureSpec, feature_spec  # noqa: E402
from mmjax.data.store import Dataset  # noqa: E402
from mmjax.train import mesh as mesh_lib  # noqa: E402
from mmjax.train.modes import run_train  # noqa: E402
from mmjax.train.prefetch import batch_put_fn  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _registered_here_only():
    """The modalities of cell_modality.py exist for this module's tests only."""
    for m in (cell_modality.CELL, cell_modality.SPARSE_CELL):
        modalities.register(m)
    yield
    for m in (cell_modality.CELL, cell_modality.SPARSE_CELL):
        modalities.unregister(m.name)


def _config(tmp_path, n=120):
    c = load_config("configs/dense_mlp.py:small")
    c.system.modality = "cell"
    c.data.modalities = ("cell",)
    c.data.num_materials = n
    c.data.num_workers = 0
    c.data.data_dir = str(tmp_path / "data")
    c.train.steps = 120
    c.train.eval_every = 0
    c.train.progress = False
    c.train.compilation_cache_dir = str(tmp_path / "xla")
    c.checkpoint.every = 0
    return c


def test_registry_knows_the_new_modality_and_guards_the_schema():
    assert "cell" in modalities.known() and modalities.presence_key("cell") == "cell"
    assert modalities.dense_keys()["cell"] == "cell" and "cell" in modalities.scale_keys()
    assert modalities.worker_modules(["cell"]) == (("cell_modality",), [])
    with pytest.raises(ValueError, match="built in"):
        modalities.register(modalities.DenseModality("xrd", "xrd2", featurize=cell_modality.cell_features))
    with pytest.raises(ValueError, match="taken by the schema"):
        modalities.register(modalities.DenseModality("pattern", "xrd", featurize=cell_modality.cell_features))
    with pytest.raises(ValueError, match="taken by modality 'cell'"):
        modalities.register(modalities.DenseModality("cell2", "cell", featurize=cell_modality.cell_features))
    with pytest.raises(ValueError, match="not a Batch key"):
        modalities.register(modalities.DenseModality("targets", "my_targets", featurize=cell_modality.cell_features))
    with pytest.raises(ValueError, match="must match"):
        modalities.register(modalities.DenseModality("shout", "Shout-Key", featurize=cell_modality.cell_features))
    with pytest.raises(KeyError, match="unknown modality 'nope'; known: .*'cell'"):
        modalities.presence_key("nope")


def test_unknown_modality_in_a_config_is_one_error(tmp_path):
    c = _config(tmp_path)
    c.data.modalities = ("cell", "celll")
    with pytest.raises(ValueError, match=r"config.data.modalities: unknown modality 'celll'; known: .*'cell'"):
        feature_spec(c)
    with pytest.raises(ValueError, match="not registered modalities"):
        FeatureSpec(extra=("celll",))


def test_featurised_stored_and_batched(tmp_path):
    spec = feature_spec(_config(tmp_path))
    assert spec.extra == ("cell",) and spec.graph is None and not spec.xrd
    mats = [generate_one(i, seed=3) for i in range(10)]
    rec = featurize_material(mats[0], spec)
    np.testing.assert_allclose(rec["cell"], cell_modality.cell_features(mats[0]), rtol=1e-6)
    featurize_dataset(mats, spec, tmp_path / "ds", num_workers=0)
    ds = Dataset.open(tmp_path / "ds")
    assert ds.manifest.schema["cell"]["shape"] == [4]
    scale = ds.manifest.statistics["scales"]["cell"]
    allv = np.stack([cell_modality.cell_features(m) for m in mats])
    assert scale["count"] == allv.size and np.isclose(scale["mean"], allv.mean(), rtol=1e-5)
    batch = next(iter(make_batches(ds, 8, seed=0, shuffle=False, num_epochs=1, devices=2, modalities=("cell",),
                                   targets=())))
    assert batch["cell"].shape == (2, 4, 4) and batch["cell"].dtype == np.float32
    assert batch["present"]["cell"].all()
    np.testing.assert_allclose(batch["cell"].reshape(8, 4), allv[:8], rtol=1e-6)
    # the device-resident store gives the same batches (and its size estimate counts the column)
    mesh = mesh_lib.make_mesh(jax.devices()[:2])
    kw = dict(seed=1, shuffle=True, num_epochs=1, devices=2, modalities=("cell",), targets=())
    host, dev = make_batches(ds, 4, **kw), make_batches(ds, 4, **kw)
    store_ = dev.device_store()
    assert abs(estimate_nbytes(dev.assembler, ds) - store_.nbytes) <= 0.02 * store_.nbytes + 64 * len(ds)
    put_host, put_dev = batch_put_fn(mesh), store_.put_fn(mesh)
    for a in host:
        got, want = put_dev(dev.next_indices()), put_host(a)
        np.testing.assert_array_equal(np.asarray(got["cell"]), np.asarray(want["cell"]))
        np.testing.assert_array_equal(np.asarray(got["present"]["cell"]), np.asarray(want["present"]["cell"]))


def test_spawned_workers_know_the_registered_modality(tmp_path):
    spec = FeatureSpec(graph=None, xrd=False, composition=False, symmetry=False, dos=False, charge_density=False,
                       extra=("cell",))
    mats = [generate_one(i, seed=5) for i in range(4)]
    featurize_dataset(mats, spec, tmp_path / "ds", num_workers=1)
    ds = Dataset.open(tmp_path / "ds")
    present, values = ds.column("cell")
    assert present.all()
    np.testing.assert_allclose(values, np.stack([cell_modality.cell_features(m) for m in mats]), rtol=1e-6)


def test_a_system_trains_on_the_new_modality(tmp_path):
    """dense_mlp on "cell" learns the prototypes' Ewald energy better than the training mean."""
    c = _config(tmp_path)
    summary = run_train(c, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["steps"] == 120
    test = summary["test"] if "test" in summary else saved["test"]
    stats = json.loads((tmp_path / "run" / "targets.json").read_text())["ewald_energy_per_atom"]
    mae = test["ewald_energy_per_atom/mae"]
    assert np.isfinite(mae) and mae < 0.8 * stats["std"], (mae, stats)


def test_rows_without_the_modality_count_nowhere(tmp_path):
    """A material lacking the modality a unimodal head reads adds nothing to the loss or the
    metrics (``<target>/n``), and its prediction is NaN (no input), not the head's bias."""
    import jax

    from mmjax.systems import build_system
    from mmjax.train.inference import prediction_metrics

    c = _config(tmp_path)
    c.system.modality, c.data.modalities = "cell_sparse", ("cell_sparse",)
    spec = feature_spec(c)
    mats = [generate_one(i, seed=3) for i in range(16)]
    featurize_dataset(mats, spec, tmp_path / "ds", num_workers=0)
    ds = Dataset.open(tmp_path / "ds")
    batch = next(iter(make_batches(ds, 16, seed=0, shuffle=False, num_epochs=1, devices=1,
                                   modalities=("cell_sparse",), targets=("ewald_energy_per_atom",),
                                   normalize_targets=True)))
    present = batch["present"]["cell_sparse"].reshape(-1)
    assert 0 < present.sum() < 16
    system = build_system(c)
    params = system.init(jax.random.PRNGKey(0), batch)
    _, metrics = system.loss(params, batch, jax.random.PRNGKey(1), False)
    labelled = batch["target_mask"]["ewald_energy_per_atom"].reshape(-1)
    assert int(metrics["ewald_energy_per_atom/n"]) == int((present & labelled).sum())
    pred = np.asarray(system.predict(params, batch)["ewald_energy_per_atom"])
    assert np.isnan(pred[~present]).all() and np.isfinite(pred[present]).all()
    outputs = {"ewald_energy_per_atom": pred, "target/ewald_energy_per_atom": batch["targets"]["ewald_energy_per_atom"].reshape(-1),
               "target_mask/ewald_energy_per_atom": labelled}
    m = prediction_metrics(outputs, {"ewald_energy_per_atom": {"kind": "regression", "mean": 0.0, "std": 1.0}})
    assert m["ewald_energy_per_atom/n"] == int((present & labelled).sum()) and np.isfinite(m["ewald_energy_per_atom/mae"])
    assert m["ewald_energy_per_atom/no_input"] == int((~present).sum())


def test_a_modality_workers_cannot_import_is_featurised_in_process(tmp_path, caplog):
    """Registered from a module a fresh interpreter cannot import by name (e.g. a config file),
    a modality is featurised in this process with one warning, instead of breaking the pool."""
    import importlib.util
    import logging

    src = tmp_path / "my_config_modality.py"
    src.write_text("import numpy as np\n"
                   "def natoms(material):\n"
                   "    return np.asarray([len(material.structure)], np.float32)\n")
    spec_ = importlib.util.spec_from_file_location("mmjax_config_file_7f3a", src)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    modalities.register(modalities.DenseModality("natoms", record_key="natoms", featurize=module.natoms))
    try:
        assert modalities.worker_modules(["natoms", "cell"]) == (("cell_modality",), ["natoms"])
        fspec = FeatureSpec(graph=None, xrd=False, composition=False, symmetry=False, dos=False,
                            charge_density=False, extra=("natoms",))
        mats = [generate_one(i, seed=2) for i in range(4)]
        with caplog.at_level(logging.WARNING):
            featurize_dataset(mats, fspec, tmp_path / "ds", num_workers=2)
        assert any("featurising in this process" in r.getMessage() and "natoms" in r.getMessage()
                   for r in caplog.records)
        present, values = Dataset.open(tmp_path / "ds").column("natoms")
        assert present.all() and values[:, 0].tolist() == [len(m.structure) for m in mats]
    finally:
        modalities.unregister("natoms")


def test_cache_keys_follow_registered_featurisers_only(tmp_path):
    """A spec without registered modalities has no ``extra`` in its dict (the cache key of every
    existing dataset is unchanged by the registry); a registered featuriser whose code changes
    gets another cache folder."""
    from mmjax.data.cache import dataset_dir

    plain = load_config("configs/cgcnn.py")
    assert "extra" not in feature_spec(plain).to_dict()
    c = _config(tmp_path)
    first = dataset_dir(c, str(tmp_path))
    assert dataset_dir(c, str(tmp_path)) == first
    src = tmp_path / "featuriser_v2.py"
    src.write_text("import numpy as np\ndef cell_features(material):\n    return np.zeros(4, np.float32)  # v2\n")
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("featuriser_v2", src)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    modalities.register(modalities.DenseModality("cell", record_key="cell", featurize=module.cell_features))
    try:
        assert dataset_dir(c, str(tmp_path)) != first
    finally:
        modalities.register(cell_modality.CELL)
    assert dataset_dir(c, str(tmp_path)) == first


def test_a_multi_dimensional_integer_modality(tmp_path):
    """Shape [2, 3] and dtype int32 survive featurisation, the store, host batches and the device
    store (whose size estimate counts 4-byte items)."""
    def grid(material):
        z = sorted(site.specie.Z for site in material.structure)
        return np.asarray([[z[0], z[-1], len(z)], [1, 2, 3]], np.int32)

    modalities.register(modalities.DenseModality("zgrid", record_key="zgrid", featurize=grid, dtype=np.int32,
                                                 scale=False))
    try:
        fspec = FeatureSpec(graph=None, xrd=False, composition=False, symmetry=False, dos=False,
                            charge_density=False, extra=("zgrid",))
        mats = [generate_one(i, seed=4) for i in range(6)]
        featurize_dataset(mats, fspec, tmp_path / "ds", num_workers=0)
        ds = Dataset.open(tmp_path / "ds")
        assert ds.manifest.schema["zgrid"]["shape"] == [2, 3] and "zgrid" not in ds.manifest.statistics["scales"]
        it = make_batches(ds, 6, seed=0, shuffle=False, num_epochs=1, devices=2, modalities=("zgrid",), targets=())
        batch = next(iter(it))
        assert batch["zgrid"].dtype == np.int32 and batch["zgrid"].shape == (2, 3, 2, 3)
        np.testing.assert_array_equal(batch["zgrid"].reshape(6, 2, 3), np.stack([grid(m) for m in mats]))
        dev = make_batches(ds, 6, seed=0, shuffle=False, num_epochs=1, devices=2, modalities=("zgrid",), targets=())
        store_ = dev.device_store()
        assert abs(estimate_nbytes(dev.assembler, ds) - store_.nbytes) <= 0.02 * store_.nbytes + 64 * len(ds)
        mesh = mesh_lib.make_mesh(jax.devices()[:2])
        got = store_.put_fn(mesh)(dev.next_indices())
        np.testing.assert_array_equal(np.asarray(got["zgrid"]), batch["zgrid"].reshape(np.asarray(got["zgrid"]).shape))
    finally:
        modalities.unregister("zgrid")
