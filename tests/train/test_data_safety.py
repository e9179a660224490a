"""No silent wrong inputs: the featurised-data cache is keyed on content (rewriting an input file in
place, or changing the text model / pooling of a dataset with text, gives another cache folder);
an element beyond the model's element table is a named bad record; epochs follow the real data."""

import os
import sys

from mmjax.data.sources.prototypes import generate_one
from mmjax.data import cache as data_cache
from mmjax.data import spec as data_spec

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "systems"))
from xxact_helpers import load_config  # noqa: E402


def _write_cifs(folder, seeds):
    folder.mkdir(exist_ok=True)
    for i, s in enumerate(seeds):
        generate_one(s, seed=0).structure.to(filename=str(folder / f"m{i}.cif"))


def test_in_place_rewrite_of_an_input_file_changes_the_key(tmp_path):
    cifs = tmp_path / "cifs"
    _write_cifs(cifs, [1, 2])
    config = load_config("cgcnn")
    before = data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs))
    assert data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs)) == before  # stable
    st = os.stat(cifs)
    generate_one(7, seed=0).structure.to(filename=str(cifs / "m0.cif"))  # same name, new structure
    os.utime(cifs, ns=(st.st_atime_ns, st.st_mtime_ns))  # the folder's own stamp as before
    assert data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs)) != before


def test_a_rewrite_that_keeps_size_and_time_changes_the_key_and_a_touch_does_not(tmp_path):
    """cp -p, rsync -a and tar restore modification times: a key of (size, mtime) reused the old
    features of an edited file of the same length. The key reads the bytes."""
    cifs = tmp_path / "cifs"
    _write_cifs(cifs, [1, 2])
    config = load_config("cgcnn")
    f = cifs / "m0.cif"
    before = data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs))
    text, st = f.read_text(), f.stat()
    edited = text[:-2] + ("x" if text[-2] != "x" else "y") + text[-1]  # one byte changed, same length
    f.write_text(edited)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs)) != before
    f.write_text(text)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, a new time: the same data
    assert data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs)) == before
    single = data_cache.content_fingerprint(str(f))
    f.write_text(edited)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data_cache.content_fingerprint(str(f)) != single


def test_text_model_and_pooling_are_part_of_the_key(tmp_path):
    config = load_config("xmopa")
    assert data_spec.feature_spec(config).text
    a = data_cache.dataset_dir(config, str(tmp_path))
    config.data.text_pooling = "mean" if config.data.text_pooling != "mean" else "cls"
    b = data_cache.dataset_dir(config, str(tmp_path))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text("{}")
    config.data.text_model = str(bert)
    c = data_cache.dataset_dir(config, str(tmp_path))
    (bert / "config.json").write_text('{"hidden_size": 768}')  # other weights/config in the same folder
    d = data_cache.dataset_dir(config, str(tmp_path))
    assert len({a, b, c, d}) == 4
    plain = load_config("cgcnn")  # no text features: the text settings do not matter
    k = data_cache.dataset_dir(plain, str(tmp_path))
    plain.data.text_model = str(bert)
    assert data_cache.dataset_dir(plain, str(tmp_path)) == k


def test_element_beyond_the_model_table_is_a_named_bad_record():
    """CGCNN's table stops at Fm (Z = 100): an Og structure is refused with its id and the reason,
    not featurised as Fm; a model with a learned table accepts it."""
    from pymatgen.core import Lattice, Structure

    from mmjax.data.featurize import featurize_material
    from mmjax.data.material import Material, RecordError

    config = load_config("cgcnn")  # :small, the rebuilt cgcnn92 table (Z <= 100)
    spec = data_spec.feature_spec(config)
    assert spec.max_atomic_number == 100
    og = Material(id="og-1", structure=Structure(Lattice.cubic(4.0), ["Og", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    import pytest

    with pytest.raises(RecordError, match=r"og-1.*element Og \(Z=118\) is outside the model's element table"):
        featurize_material(og, spec)
    config.system.encoder.element_table = ""
    assert data_spec.feature_spec(config).max_atomic_number is None


def test_epochs_become_steps_from_the_actual_training_set(tmp_path):
    """configs with train.epochs: the step count follows the data the user gives, not the
    embedded default the config was written for (the README's own-data CGCNN example)."""
    from mmjax.train.modes import run_train

    config = load_config("cgcnn")
    config.system.encoder.update(dict(atom_fea_len=8, n_conv=1, h_fea_len=8))
    config.data.num_materials, config.data.num_workers, config.data.batch_per_device = 40, 0, 2
    config.data.split = (0.8, 0.1, 0.1)
    config.train.epochs, config.train.eval_every, config.train.progress = 3.0, 0, False
    config.checkpoint.every = 0
    summary = run_train(config, str(tmp_path))
    # 32 training materials, 2 x 8 devices = 16 per step: 2 steps per epoch, 3 epochs
    assert summary["steps"] == 6


def test_a_folder_of_only_refused_structures_names_each_reason(tmp_path):
    """Every input refused (a disordered structure, a file that does not parse): the error names each
    record and its reason instead of "the config needs modality ...", and leaves no cache behind."""
    import pytest
    from pymatgen.core import Lattice, Structure

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(cifs / "disordered.cif"))
    (cifs / "broken.cif").write_text("data_x\n_cell_length_a oops\n")
    config = load_config("cgcnn")
    config.data.num_workers = 0
    with pytest.raises(ValueError, match=r"none of the 2 materials could be used: broken.cif: CIF does not parse.*; disordered: disordered "
                                         r"structure \(partial occupancy\)"):
        data_cache.prepare_dataset(config, str(tmp_path / "w"), str(cifs))
    assert not os.path.exists(data_cache.dataset_dir(config, str(tmp_path / "w"), str(cifs)))


def test_an_isolated_atom_is_kept_with_a_warning_in_the_manifest_and_on_screen(tmp_path, capsys):
    """An atom with no neighbour inside CGCNN's 8 Å cutoff is valid input, but not silently: the
    record is written and the manifest (and the screen) say which sites are isolated."""
    from pymatgen.core import Lattice, Structure

    cifs = tmp_path / "cifs"
    _write_cifs(cifs, [1])
    Structure(Lattice.cubic(20.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0, 0]]).to(filename=str(cifs / "gas.cif"))  # 10 Å apart
    config = load_config("cgcnn")
    config.data.num_workers = 0
    ds = data_cache.prepare_dataset(config, str(tmp_path / "w"), str(cifs))
    assert len(ds) == 2 and ds.manifest.skipped == []
    (warning,) = ds.manifest.warnings
    assert warning["id"] == "gas" and "2 of 2 atoms have no neighbour within the 8" in warning["warning"]
    assert "warning: gas: 2 of 2 atoms" in capsys.readouterr().out


def test_resuming_on_changed_training_data_is_refused_naming_it(tmp_path):
    """A workdir's checkpoints record the featurised dataset they trained on; the same command after
    the source's content changed is a mismatch naming both datasets (it resumed the old run on the
    new data silently), and --config.resume_mismatch=True continues anyway."""
    import pytest

    from mmjax.train.loop import ConfigMismatch
    from mmjax.train.modes import run_train

    root = tmp_path / "root"
    _write_cifs(root, range(1, 21))
    (root / "id_prop.csv").write_text("".join(f"m{i},{0.1 * i}\n" for i in range(20)))
    config = load_config("cgcnn")
    config.system.encoder.update(dict(atom_fea_len=8, n_conv=1, h_fea_len=8))
    config.system.targets = {"target": 1}
    config.data.source, config.data.targets = str(root), ("target",)
    config.data.num_workers, config.data.batch_per_device = 0, 1
    config.train.steps, config.train.eval_every, config.train.progress = 2, 0, False
    config.checkpoint.every = 1
    workdir = str(tmp_path / "w")
    run_train(config, workdir)
    generate_one(99, seed=0).structure.to(filename=str(root / "m3.cif"))  # new content, same name
    config.train.steps = 3
    with pytest.raises(ConfigMismatch, match=r"training data: featurised root-\w+ -> root-\w+"):
        run_train(config, workdir)
    config.resume_mismatch = True
    assert run_train(config, workdir)["steps"] == 3
