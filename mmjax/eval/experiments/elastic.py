"""MultiMat's 15-output elastic tensor as a probe on DOS features (its own data files)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mmjax.data.features.dos import dos_energy_grid, dos_features
from mmjax.data.splits import random_split
from mmjax.eval.experiments.common import bar_chart, show
from mmjax.eval.probe import evaluate_regression_probe, ridge_probe
from mmjax.eval.report import format_table, write_json


ELASTIC_COLUMNS = tuple(f"elastic_C{i}{j}" for i in range(1, 6) for j in range(1, i + 1))


def load_dos_moduli(data_dir: str, dos_file: str = "dos/dos_mp408.npz",
                    moduli_file: str = "dos/moduli_mp100.csv.gz") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids [n], DOS densities float32 [n, 601] on the fixed -10..10 eV Fermi-shifted grid (0 where
    the source does not cover an energy), coverage mask bool [n, 601], elastic tensor float64
    [n, 15] in GPa (`ELASTIC_COLUMNS`)) for the moduli materials that have a DOS."""
    import pandas as pd  # the optional [text] extra; only this command reads a CSV with it
    dos = np.load(os.path.join(data_dir, dos_file), allow_pickle=False)
    moduli = pd.read_csv(os.path.join(data_dir, moduli_file))
    missing = [c for c in ELASTIC_COLUMNS if c not in moduli.columns]
    if missing:
        raise ValueError(f"{moduli_file}: no columns {missing}")
    row = {str(i): k for k, i in enumerate(dos["material_ids"])}
    grid = dos_energy_grid()
    ids, feats, masks, ys = [], [], [], []
    for _, r in moduli.iterrows():
        k = row.get(str(r["material_id"]))
        if k is None or not dos["exists"][k]:
            continue
        f = dos_features(dos["energies"][k], dos["densities"][k], grid=grid, record_id=str(r["material_id"]))
        ids.append(str(r["material_id"]))
        feats.append(f["densities"])
        masks.append(f["mask"])
        ys.append([float(r[c]) for c in ELASTIC_COLUMNS])
    if len(ids) < 10:
        raise ValueError(f"only {len(ids)} moduli materials have a DOS in {dos_file}")
    return np.asarray(ids), np.stack(feats), np.stack(masks), np.asarray(ys, np.float64)


def elastic_tensor_probe(data_dir: str, workdir: str, *, split: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                         train_head: bool = True, max_epochs: int = 300) -> tuple[dict, str]:
    """15-output elastic tensor from the DOS (MultiMat's multi-output fine-tuning target).

    Features: the Fermi-shifted DOS on the fixed 601-point grid (`load_dos_moduli`), standardised
    on the training rows. Probes: closed-form ridge (alpha chosen on validation MAE) and, with
    `train_head`, a trained 15-output linear head (`linear_head_probe`, early-stopped on
    validation MAE). Baseline: the training mean of each component. Reports test MAE (GPa) per
    component and averaged -> ``<workdir>/elastic_tensor.{json,png}``, ``probe_elastic_tensor.*``."""
    workdir = os.path.abspath(workdir)
    ids, x, _, y = load_dos_moduli(data_dir)
    tr, va, te = random_split(len(ids), tuple(split), seed=seed)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    r, _ = evaluate_regression_probe(splits, workdir, "elastic_tensor", train_head=train_head, max_epochs=max_epochs,
                                     seed=seed)

    ridge = ridge_probe(x[tr], y[tr], x[va], y[va])
    per_comp = {"ridge": np.mean(np.abs(ridge.predict(x[te]) - y[te]), axis=0),
                "train_mean": np.mean(np.abs(y[tr].mean(axis=0) - y[te]), axis=0)}
    res = {"n": {"train": len(tr), "val": len(va), "test": len(te)}, "columns": list(ELASTIC_COLUMNS),
           "test_ids": ids[te], "ridge_alpha": ridge.alpha,
           "test_mae": {"ridge": r["ridge"]["test"]["mae"], "train_mean": float(per_comp["train_mean"].mean())},
           "test_mae_per_component": {k: dict(zip(ELASTIC_COLUMNS, v)) for k, v in per_comp.items()}}
    if "linear_head" in r:
        res["test_mae"]["linear_head"] = r["linear_head"]["test"]["mae"]
    write_json(os.path.join(workdir, "elastic_tensor.json"), res)
    bar_chart({(c, k): float(per_comp[k][i]) for i, c in enumerate(ELASTIC_COLUMNS) for k in per_comp},
               "test MAE (GPa)", os.path.join(workdir, "elastic_tensor.png"))
    table = format_table([{"probe": k, "test_mae_GPa": v} for k, v in res["test_mae"].items()])
    show(f"elastic tensor (15 outputs) from the DOS, {len(te)} test materials:\n{table}")
    return res, table
