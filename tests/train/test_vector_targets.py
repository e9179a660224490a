"""Vector regression targets (e.g. the 21 independent components of an elastic tensor) from the
source reader through the store, the Batch, the losses and heads, to train / evaluate / predict."""

import csv
import json
import math
import sys

import jax
import numpy as np
import pytest

from mmjax.data import store, store_writer
from mmjax.data.featurize import target_value
from mmjax.data.pipeline import make_batches
from mmjax.data.material import RecordError
from mmjax.data.sources.prototypes import generate_one
from mmjax.data.sources.tabular import to_target
from mmjax.data.spec import check_target_shapes, config_target_dims
from mmjax.nn.heads import CrabNetHead
from mmjax.systems import build_system
from mmjax.systems.supervised import head_outputs, head_widths, supervised_loss
from mmjax.train.data import HostBatches

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "systems"))
from xxact_helpers import load_config, record, tiny_xxact_config  # noqa: E402

D = 4  # components of the toy vector target "v"


def voigt(i: int) -> np.ndarray:
    """A symmetric 6 x 6 'elastic tensor' that varies by material (GPa-like magnitudes)."""
    base = 50.0 + 10.0 * (i % 7)
    c = np.full((6, 6), 0.2 * base) + np.diag(np.full(6, base))
    c[:3, :3] += 0.5 * base
    c[0, 5] = c[5, 0] = i - 10.0
    return c


# ------------------------------------------------------------------------------ reading values


def test_to_target_reads_numbers_lists_and_symmetric_matrices():
    assert to_target(2.5, "x") == 2.5 and math.isnan(to_target(None, "x"))
    np.testing.assert_array_equal(to_target([1, None, 3], "x"), [1.0, np.nan, 3.0])
    c = voigt(3)
    tri = to_target(c.tolist(), "elastic")
    assert tri.shape == (21,)
    # row by row upper triangle: C11 C12 .. C16, C22 .. C26, ..., C66
    expect = [c[i, j] for i in range(6) for j in range(i, 6)]
    np.testing.assert_array_equal(tri, expect)
    asym = c.copy()
    asym[1, 2] += 1.0
    with pytest.raises(ValueError, match="'elastic' is a 6 x 6 matrix that is not symmetric"):
        to_target(asym.tolist(), "elastic")
    with pytest.raises(ValueError, match="'x' has shape \\[2, 3\\]"):
        to_target([[1, 2, 3], [4, 5, 6]], "x")
    with pytest.raises(ValueError, match="'x' is not a list of numbers"):
        to_target(["a", "b"], "x")
    np.testing.assert_array_equal(to_target(np.arange(3.0), "x"), [0.0, 1.0, 2.0])  # numpy input too
    np.testing.assert_array_equal(to_target(c, "elastic"), expect)
    one_side = c.tolist()
    one_side[0][1] = None  # C12 only given below the diagonal: kept
    np.testing.assert_array_equal(to_target(one_side, "elastic"), expect)


def test_stored_target_value_rules():
    assert target_value("m", "y", None) is None and target_value("m", "y", math.nan) is None
    assert target_value("m", "y", 1.5) == np.float32(1.5)
    assert target_value("m", "v", [math.nan, math.nan]) is None  # no labelled component: unlabelled
    v = target_value("m", "v", [1.0, math.nan, 2.0])
    assert v.dtype == np.float32 and v.shape == (3,) and np.isnan(v[1])
    with pytest.raises(RecordError, match="'v' has shape \\[2, 2\\]"):
        target_value("m", "v", [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(RecordError, match="'v' is not a number"):
        target_value("m", "v", "high")


# ------------------------------------------------------------------------------ store + Batch


def vector_record(rng, i):
    rec = record(rng, i)
    rec.pop("target/y")
    if i % 6 != 5:  # every 6th material unlabelled: no key at all
        v = (np.arange(D) * 10.0 + rng.normal(0, 1 + np.arange(D))).astype(np.float32)
        if i % 4 == 1:
            v[2] = np.nan  # one unlabelled component
        rec["target/v"] = v
    return rec


@pytest.fixture(scope="module")
def vector_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("vector")
    rng = np.random.default_rng(0)
    writer = store_writer.StoreWriter(root, records_per_file=7)  # several chunks, some without the key
    values = {}
    for i in range(24):
        rec = vector_record(rng, i)
        writer.add(f"mat-{i:03d}", rec)
        values[f"mat-{i:03d}"] = rec.get("target/v")
    store_writer.finish_manifest(root, writer, skipped=[], num_input=24)
    return store.Dataset.open(root), values


def test_statistics_are_per_component(vector_dataset):
    ds, values = vector_dataset
    assert ds.manifest.schema["target/v"]["shape"] == [D]
    labelled = np.stack([v for v in values.values() if v is not None]).astype(np.float64)
    st = ds.manifest.statistics["targets"]["v"]
    np.testing.assert_allclose(st["mean"], np.nanmean(labelled, axis=0), rtol=1e-6)
    np.testing.assert_allclose(st["std"], np.nanstd(labelled, axis=0), rtol=1e-6)
    assert st["count"] == np.isfinite(labelled).sum(axis=0).tolist()
    assert st["count"][2] < st["count"][0]  # the NaN components are not counted


def batches(ds, devices=2):
    it = make_batches(ds, 8, seed=0, shuffle=False, num_epochs=1, devices=devices, modalities=("composition",),
                      targets=("v",), normalize_targets=True)
    return list(HostBatches(it, ds.ids, 0, devices))


def test_batches_carry_per_component_normalised_values_and_masks(vector_dataset):
    ds, values = vector_dataset
    st = ds.manifest.statistics["targets"]["v"]
    mean, std = np.asarray(st["mean"]), np.asarray(st["std"])
    seen = 0
    it = make_batches(ds, 8, seed=0, shuffle=False, num_epochs=1, devices=2, modalities=("composition",),
                      targets=("v",), normalize_targets=True)
    host = HostBatches(it, ds.ids, 0, 2)
    for batch in host:
        ids = host.last_ids().reshape(-1)
        t, m = batch["targets"]["v"].reshape(-1, D), batch["target_mask"]["v"].reshape(-1, D)
        assert batch["targets"]["v"].shape == (2, 4, D) and m.dtype == bool
        for slot, rid in enumerate(ids):
            if not batch["slot_valid"].reshape(-1)[slot]:
                assert not m[slot].any()
                continue
            seen += 1
            v = values[str(rid)]
            if v is None:
                assert not m[slot].any() and (t[slot] == 0).all()
                continue
            np.testing.assert_array_equal(m[slot], np.isfinite(v))
            np.testing.assert_allclose(t[slot][m[slot]], ((v - mean) / std)[np.isfinite(v)], rtol=1e-5, atol=1e-6)
    assert seen == len(ds)


def test_column_and_record_assemblers_agree_on_vector_targets(vector_dataset):
    from reference_assembly import assemble_records

    from mmjax.data.gather import ColumnGather
    from mmjax.data.pipeline import BatchAssembler

    ds, _ = vector_dataset
    asm = BatchAssembler(ds.manifest, 8, 2, None, ("composition",), ("v",), normalize_targets=True)
    groups = [[0, 5, 9], [13, 2, 21, 22]]
    by_record = assemble_records(asm, [[ds.record(i, asm.keys) for i in g] for g in groups])
    by_column = asm.assemble_indices(ColumnGather(ds), groups)
    for key in ("targets", "target_mask"):
        np.testing.assert_array_equal(by_record[key]["v"], by_column[key]["v"])
    assert by_column["target_mask"]["v"].shape == (2, 4, D)


# ------------------------------------------------------------------------------ loss + heads


def test_supervised_loss_on_a_vector_target_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(1)
    n = 6
    pred = rng.normal(size=(n, D)).astype(np.float32)
    y = rng.normal(size=(n, D)).astype(np.float32)
    mask = rng.random((n, D)) > 0.3
    valid = np.array([True] * 5 + [False])
    batch = {"slot_valid": valid[None], "targets": {"v": y[None]}, "target_mask": {"v": mask[None]}}
    outputs = {"v": (D,)}
    loss, m = supervised_loss({"v": pred}, batch, outputs)
    use = mask & valid[:, None]
    assert float(loss) == pytest.approx(np.mean((pred - y)[use] ** 2), rel=1e-5)
    assert float(m["v/mae"]) == pytest.approx(np.mean(np.abs(pred - y)[use]), rel=1e-5)
    assert float(m["v/n"]) == use.sum()
    # garbage in the padding slot and in unlabelled components changes nothing
    pred2, y2 = pred.copy(), y.copy()
    pred2[~use] = 1e6
    y2[~use] = np.nan
    batch2 = dict(batch, targets={"v": y2[None]})
    loss2, _ = supervised_loss({"v": pred2}, batch2, outputs)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    # robust_l1: the head is twice as wide and splits into value / log sigma of D components each
    assert head_widths(outputs, {"v": "robust_l1"}) == {"v": 2 * D}
    raw = rng.normal(size=(n, 2 * D)).astype(np.float32)
    out = head_outputs({"v": raw}, outputs, {"v": "robust_l1"})
    np.testing.assert_array_equal(out["v"], raw[:, :D])
    np.testing.assert_array_equal(out["v/log_sigma"], raw[:, D:])
    loss3, _ = supervised_loss(out, batch, outputs, losses={"v": "robust_l1"})
    p, s = raw[:, :D].astype(np.float64), raw[:, D:].astype(np.float64)
    ref = np.mean((np.sqrt(2) * np.abs(p - y) * np.exp(-s) + s)[use])
    assert float(loss3) == pytest.approx(ref, rel=1e-5)


def test_crabnet_head_splits_vector_targets_in_order():
    tokens = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8))
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    head = CrabNetHead(("a", "v"), (8, 4), widths=(1, D), vectors=(False, True))
    params = head.init(jax.random.PRNGKey(1), tokens, mask)
    out = head.apply(params, tokens, mask)
    assert out["a"].shape == (3,) and out["v"].shape == (3, D) and out["v/log_sigma"].shape == (3, D)
    # the same per-element network as one wide output: columns (3c, 3c+1, 3c+2) per component c
    from mmjax.nn.heads import ResidualMLP, gated_element_average

    per = ResidualMLP((8, 4), 3 * (1 + D)).apply({"params": params["params"]["residual"]}, tokens)
    pred, log_sigma = gated_element_average(per, mask)
    np.testing.assert_allclose(out["a"], pred[:, 0], rtol=1e-6)
    np.testing.assert_allclose(out["v"], pred[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(out["v/log_sigma"], log_sigma[:, 1:], rtol=1e-6)


# ------------------------------------------------------------------------------ config checks


def test_config_declarations_are_checked_against_the_data(vector_dataset):
    ds, _ = vector_dataset
    c = load_config("crabnet")
    c.data.targets = ("v",)
    with pytest.raises(ValueError, match="target 'v' has 4 components per record in the dataset; declare it "
                                         "with config.data.target_dims.v=4"):
        check_target_shapes(ds.manifest.schema, c, ("v",))
    c.data.target_dims = {"v": 3}
    with pytest.raises(ValueError, match="config.data.target_dims.v=3, but the dataset's target/v is 4 components"):
        check_target_shapes(ds.manifest.schema, c, ("v",))
    c.data.target_dims = {"v": D}
    check_target_shapes(ds.manifest.schema, c, ("v",))
    assert config_target_dims(c) == {"v": D}
    c.data.target_dims = {"v": 0}
    with pytest.raises(ValueError, match="config.data.target_dims.v=0"):
        config_target_dims(c)
    m = load_config("multimat")
    m.data.target_dims = {"v": D}
    m.system.targets = {"v": D}  # an int is a class count: it contradicts the declaration
    with pytest.raises(ValueError, match=f"write config.system.targets.v=\\({D},\\)"):
        config_target_dims(m)
    m.system.targets = {"v": (D,)}
    assert config_target_dims(m) == {"v": D}


def test_xxact_refuses_vector_targets_with_a_clear_message():
    c = tiny_xxact_config({"supervised": 1.0}, targets=("v",))
    c.data.target_dims = {"v": D}
    with pytest.raises(ValueError, match="\\['v'\\] are vector targets"):
        build_system(c)


def test_baseline_with_a_vector_target_has_a_head_of_that_width(vector_dataset):
    ds, _ = vector_dataset
    c = load_config("crabnet")
    c.system.head_hidden = ()
    c.system.encoder.update(dict(d_model=8, num_layers=1, num_heads=2, mlp_dim=16, element_dim=8, resolution=100))
    c.data.targets, c.data.target_dims = ("v",), {"v": D}
    system = build_system(c)
    batch = batches(ds)[0]
    params = system.init(jax.random.PRNGKey(0), batch)
    out = system.predict(params, batch)
    assert out["v"].shape == (8, D)
    loss, m = system.loss(params, batch, jax.random.PRNGKey(1), False)  # eval: no dropout / fraction noise
    use = batch["target_mask"]["v"].reshape(-1, D) & batch["slot_valid"].reshape(-1)[:, None]
    ref = np.mean((np.asarray(out["v"]) - batch["targets"]["v"].reshape(-1, D))[use] ** 2)
    assert float(loss) == pytest.approx(ref, rel=1e-4)


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def elastic_run(tmp_path_factory):
    """CGCNN (configs/cgcnn.py:small, shrunk) trained 3 steps on a JSON source whose ``elastic``
    field is a 6 x 6 Voigt matrix (material 1 has none, material 0 one unknown pair)."""
    from mmjax.train.modes import run_train

    root = tmp_path_factory.mktemp("elastic")
    doc, truth = {}, {}
    for i in range(30):
        s = generate_one(i).structure
        c = voigt(i)
        entry = {"poscar": s.to(fmt="poscar")}
        if i == 0:
            c[0, 1] = c[1, 0] = np.nan
        if i != 1:
            entry["elastic"] = [[None if np.isnan(x) else float(x) for x in row] for row in c]
            truth[f"m{i:02d}"] = c[np.triu_indices(6)]
        doc[f"m{i:02d}"] = entry
    src = root / "elastic.json"
    src.write_text(json.dumps(doc))
    cfg = load_config("cgcnn")
    cfg.system.encoder.update(dict(n_conv=1))
    cfg.data.source = str(src)
    cfg.data.source_kwargs = {"targets": ["elastic"]}
    cfg.data.targets = ("elastic",)
    cfg.data.target_dims = {"elastic": 21}
    cfg.data.num_workers, cfg.data.batch_per_device, cfg.data.split = 0, 2, (0.6, 0.2, 0.2)
    cfg.train.steps, cfg.train.eval_every, cfg.train.progress, cfg.checkpoint.every = 3, 0, False, 0
    cfg.train.log_every = 1
    workdir = root / "run"
    summary = run_train(cfg, str(workdir))
    return cfg, workdir, summary, truth


def test_elastic_tensor_trains_evaluates_and_predicts_per_component(elastic_run):
    from mmjax.data import cache as data_cache
    from mmjax.data import spec as data_spec
    from mmjax.train.modes import run_evaluate, run_predict

    cfg, workdir, summary, truth = elastic_run
    stats = json.loads((workdir / "targets.json").read_text())["elastic"]
    labelled = np.stack(list(truth.values()))
    assert stats["shape"] == [21]
    np.testing.assert_allclose(stats["mean"], np.nanmean(labelled, axis=0), rtol=1e-5)
    cols = run_predict(cfg, str(workdir))
    with open(workdir / "predictions.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert [f"elastic_{i}" for i in range(21)] == [h for h in header if h.startswith("elastic_") and
                                                   not h.endswith("_true")]
    ds = data_cache.prepare_dataset(cfg, str(workdir))
    test_ids = ds.ids[data_spec.split_indices(cfg, len(ds))["test"]]
    assert sorted(cols["id"]) == sorted(test_ids.tolist())
    pred = np.stack([np.asarray(cols[f"elastic_{i}"], np.float64) for i in range(21)], axis=1)
    true = np.stack([np.asarray(cols[f"elastic_{i}_true"], np.float64) for i in range(21)], axis=1)
    for row, rid in enumerate(cols["id"]):
        if rid in truth:  # labels come back in target units, the unknown pair as NaN
            np.testing.assert_allclose(true[row], truth[rid], rtol=1e-5)
        else:
            assert np.isnan(true[row]).all()
    out = run_evaluate(cfg, str(workdir))
    known = np.isfinite(true)
    assert out["test/normalised/elastic/n"] == known.sum() > 0
    assert out["test/elastic/n"] == known.sum()
    assert out["test/elastic/mae"] == pytest.approx(np.mean(np.abs(pred - true)[known]), rel=1e-4)
    assert out["test/elastic/mae_20"] == pytest.approx(np.mean(np.abs(pred - true)[known[:, 20], 20]), rel=1e-4)
    assert summary["test"]["elastic/mae"] == pytest.approx(out["test/elastic/mae"], rel=1e-5)


def test_elastic_run_without_the_declaration_is_refused_before_training(elastic_run, tmp_path):
    from mmjax.train.modes import run_train

    cfg, workdir, _, _ = elastic_run
    c = cfg.copy_and_resolve_references()
    c.data.target_dims = {}
    c.data.data_dir = str(workdir / "data")  # the cached featurised data: nothing is recomputed
    with pytest.raises(ValueError, match="declare it with config.data.target_dims.elastic=21"):
        run_train(c, str(tmp_path / "run2"))


def test_benchmark_fit_refuses_a_vector_target_by_name(vector_dataset):
    from mmjax.eval.fit import target_values

    ds, _ = vector_dataset
    with pytest.raises(ValueError, match="target 'v' is a vector \\(\\[4\\] per record\\); the benchmark fit takes scalar"):
        target_values(ds, "v")


def test_an_input_vector_label_is_read_and_one_without_it_is_not_scored(elastic_run, tmp_path):
    """--input is read with the model's target names: the elastic tensors of a JSON input are its
    labels (the 21 Voigt components come back in predictions.csv, evaluate scores them; the reader's
    defaults named scalar fields only, so they were silently unlabelled). An input without them
    predicts every component, and evaluate refuses to score nothing."""
    from mmjax.data.sources.tabular import to_target
    from mmjax.train.modes import run_evaluate, run_predict

    cfg, workdir, _, _ = elastic_run
    doc = {f"new{i}": {"poscar": generate_one(i).structure.to(fmt="poscar"), "elastic": voigt(i).tolist()}
           for i in range(40, 45)}
    src = tmp_path / "new.json"
    src.write_text(json.dumps(doc))
    cols = run_predict(cfg, str(workdir), input_path=str(src), output=str(tmp_path / "p.csv"))
    assert sorted(cols["id"]) == sorted(doc) and all(f"elastic_{i}" in cols for i in range(21))
    true = np.stack([np.asarray(cols[f"elastic_{i}_true"], float) for i in range(21)], axis=1)
    expect = np.stack([to_target(doc[k]["elastic"], "elastic") for k in cols["id"]])
    np.testing.assert_allclose(true, expect, rtol=1e-5, atol=1e-3)
    out = run_evaluate(cfg, str(workdir), input_path=str(src), output=str(tmp_path / "e.json"))
    assert out["predict/elastic/n"] == 5 * 21 and out["predict/elastic/mae"] > 0
    for v in doc.values():
        del v["elastic"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(doc))
    cols = run_predict(cfg, str(workdir), input_path=str(bare), output=str(tmp_path / "p2.csv"))
    assert sorted(cols["id"]) == sorted(doc) and np.isnan(np.asarray(cols["elastic_0_true"], float)).all()
    with pytest.raises(ValueError, match=r"no row has a label for \['elastic'\]; nothing to evaluate"):
        run_evaluate(cfg, str(workdir), input_path=str(bare), output=str(tmp_path / "e2.json"))
