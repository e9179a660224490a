"""Matbench harness: a system on matbench_perovskites (official folds), ours beside the leaderboard.

    python benchmarks/matbench.py --folds 0                      # CGCNN from scratch on fold 0
    python benchmarks/matbench.py --folds 0 1 2 3 4 --epochs 200 # every fold
    python benchmarks/matbench.py --quick                        # smoke test (~1-2 min)
    python benchmarks/matbench.py --system crabnet --config configs/crabnet.py:small

Offline data: Matbench ships labels but no structures (../shared/data/matbench). The labelled
Castelli perovskites (../shared/data/perovskites/labelled.csv.gz) that carry an ``mbid`` (8,100 of
the task's 18,928 rows) are tied to their Matbench row, so each row keeps its **official** fold
(`mmjax.data.matbench_folds` over the rows in file order). For each fold the model trains on the
fold's training rows that have a structure (a nested 10 % validation split drawn from the training
rows only, `mmjax.eval.matbench.fold_splits`, used for early stopping) and predicts the fold's test
rows that have a structure; the table says how many rows were available. Target: Matbench
``e_form`` (eV per 5-atom cell), the row's Matbench value. Scores on this subset are not the
leaderboard's full-task scores (about 43 % of the rows; fewer training rows than the leaderboard
models had).

Featurisation runs once into ``--cache`` (default runs/bench_cache/matbench_perovskites/<modalities>):
CGCNN graphs (8 Å, 12 neighbours), plus XRD / composition only when the system's config asks for
them (``config.data.modalities``); every fold reuses it.

Default system: CGCNN from scratch (``configs/cgcnn.py``: 92-d element table, 64-d atoms, 3 convs,
128-d pooled, LayerNorm), AdamW with a 5 % warm-up to ``--lr`` and cosine decay to 1 % of it,
weight decay ``--weight-decay``, batch ``--batch-size``, up to ``--epochs`` epochs, early stopping
(patience ``--patience`` epochs), targets normalised with the training rows' mean / std.
``--system`` / ``--config`` pick another system (its config file; ``path:arg`` passes arg).

Outputs: per-fold and mean MAE beside the reported numbers (`benchmarks/reported.py`), and in
``--out`` (default benchmarks/results/matbench_perovskites_<system>/): ``results.json.gz``
(Matbench layout, `mmjax.eval.matbench.MatbenchResults`), ``matbench_summary.json`` and
``run.json`` (settings, counts, hardware, wall time, per-fold validation curves).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import pathlib
import shlex
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
LABELS = SHARED / "matbench" / "matbench_perovskites.json.bz2"
STRUCTURES = SHARED / "perovskites" / "labelled.csv.gz"
TASK = "matbench_perovskites"
TARGET = "e_form"
QUICK_ROWS = 800
QUICK_ENCODER = dict(atom_fea_len=16, n_conv=2, h_fea_len=32)


def load_config(spec: str):
    """``path`` or ``path:arg`` -> ``get_config(arg)`` of that config file."""
    path, _, arg = spec.partition(":")
    path = pathlib.Path(path)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    mod_spec = importlib.util.spec_from_file_location(f"bench_cfg_{path.stem}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(arg or None)


def structure_items(labels: dict, limit: int | None = None) -> list[tuple]:
    """``(mbid, cif, {"e_form": Matbench value})`` for every labelled perovskite with an mbid
    (in Matbench row order); parsed inside the featurisation workers."""
    import pandas as pd

    frame = pd.read_csv(STRUCTURES, usecols=["mbid", "cif"], dtype=str, keep_default_na=False)
    frame = frame[frame["mbid"] != ""]
    row_of = {m: i for i, m in enumerate(labels["ids"])}
    unknown = sorted(set(frame["mbid"]) - set(row_of))
    if unknown:
        raise ValueError(f"{STRUCTURES}: {len(unknown)} mbids are not rows of {LABELS}, e.g. {unknown[0]!r}")
    frame = frame.assign(row=frame["mbid"].map(row_of)).sort_values("row")
    if limit:
        frame = frame.iloc[:limit]
    return [(m, cif, {TARGET: float(labels["targets"][r])}) for m, cif, r in zip(frame["mbid"], frame["cif"], frame["row"])]


def featurise(items: list, modalities: tuple[str, ...], cache: pathlib.Path, workers: int):
    from mmjax.data import store
    from mmjax.data.featurize import FeatureSpec, featurize_dataset, material_from_text

    if (cache / store.MANIFEST).exists():
        return store.Dataset.open(cache)
    spec = FeatureSpec(graph="cgcnn" if "crystal" in modalities else None, cutoff=8.0, max_neighbors=12,
                       xrd="xrd" in modalities, composition="composition" in modalities, symmetry=False,
                       dos=False, charge_density=False, targets=(TARGET,))
    manifest = featurize_dataset(items, spec, cache, num_workers=workers, parse=material_from_text, progress=False,
                                 sources=[str(STRUCTURES), str(LABELS)], command=" ".join(sys.argv))
    if manifest.skipped:
        print(f"  featurisation skipped {len(manifest.skipped)} structures, e.g. {manifest.skipped[0]}")
    return store.Dataset.open(cache)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="cgcnn", help="system name; its config defaults to configs/<system>.py")
    ap.add_argument("--config", default="", help="config file (path or path:arg); default configs/<system>.py")
    ap.add_argument("--folds", type=int, nargs="+", default=[0], help="official folds to run (0-4)")
    ap.add_argument("--epochs", type=int, default=150, help="maximum epochs per fold (ignored with --steps)")
    ap.add_argument("--steps", type=int, default=0, help="maximum optimiser steps per fold")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--patience", type=int, default=30, help="epochs without a new best validation MAE")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="featurisation worker processes")
    ap.add_argument("--quick", action="store_true", help=f"smoke test: first {QUICK_ROWS} structures, tiny model, fold 0, 200 steps")
    ap.add_argument("--cache", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if any(f not in range(5) for f in args.folds):
        ap.error(f"--folds must be in 0..4, got {args.folds}")
    for path in (LABELS, STRUCTURES):
        if not path.exists():
            print(f"{path} not found; nothing to run")
            return 1
    if args.quick:
        args.folds, args.steps = [0], args.steps or 200

    import numpy as np

    from mmjax.eval.fit import fit_predict, hardware_description
    from mmjax.eval.matbench import dummy_fold_maes, load_matbench_labels, run_matbench
    from mmjax.eval.report import format_table, write_json
    from reported import reported

    t_start = time.time()
    hardware = hardware_description()
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv))
    config = load_config(args.config or f"configs/{args.system}.py")
    if config.system.name != args.system:
        ap.error(f"--config builds system {config.system.name!r}, not --system {args.system!r}")
    if args.quick and args.system == "cgcnn":
        config.system.encoder.update(QUICK_ENCODER)
    modalities = tuple(config.data.modalities)
    config.optim.update(dict(schedule="cosine", peak_lr=args.lr, init_lr=args.lr * 0.01, end_lr=args.lr * 0.01,
                             warmup_fraction=0.05, weight_decay=args.weight_decay, clip_norm=1.0))
    print(f"command: {command}\nhardware: {json.dumps(hardware)}\nsystem: {args.system}, modalities {modalities}")

    labels = load_matbench_labels(LABELS)
    tag = "-".join(modalities) + ("-quick" if args.quick else "")
    cache = pathlib.Path(args.cache or ROOT / "runs" / "bench_cache" / TASK / tag)
    t0 = time.time()
    items = structure_items(labels, QUICK_ROWS if args.quick else None)
    ds = featurise(items, modalities, cache, args.workers)
    t_feat = time.time() - t0
    row_of = {m: i for i, m in enumerate(labels["ids"])}
    ds_rows = np.asarray([row_of[i] for i in ds.ids], np.int64)
    position = np.full(len(labels["ids"]), -1, np.int64)
    position[ds_rows] = np.arange(len(ds))
    available = position >= 0
    print(f"{TASK}: {len(labels['ids'])} rows, {len(items)} labelled structures with an mbid, {available.sum()} featurised "
          f"({t_feat:.1f} s, cache {cache})")

    fold_runs: dict[int, dict] = {}
    fold_iter = iter(sorted(args.folds))

    def fit(train_rows, val_rows, test_rows):
        fold = next(fold_iter)
        steps_per_epoch = max(1, math.ceil(len(train_rows) / args.batch_size))
        steps = args.steps or args.epochs * steps_per_epoch
        eval_every = min(steps_per_epoch, steps) if not args.quick else 25
        patience = max(1, args.patience if not args.quick else 100)
        print(f"\n== fold {fold}: train {len(train_rows)}, val {len(val_rows)}, test {len(test_rows)} structures; "
              f"{steps} steps max ({steps_per_epoch}/epoch), batch {args.batch_size}")
        res = fit_predict(config, ds.subset(position[train_rows]), ds.subset(position[val_rows]),
                          ds.subset(position[test_rows]), target=TARGET, steps=steps, batch_size=args.batch_size,
                          eval_every=eval_every, patience=patience, seed=args.seed + fold,
                          log=print if args.verbose else None)
        y = labels["targets"]
        mae = float(np.mean(np.abs(res.predictions - y[test_rows])))
        dummy = float(np.mean(np.abs(y[test_rows] - y[train_rows].mean())))
        print(f"   fold {fold}: test MAE {mae:.4f} eV/cell (train-mean baseline {dummy:.4f}); best val MAE "
              f"{res.best_val_mae:.4f} at step {res.best_step} of {res.steps_run}; {res.wall_s:.0f} s")
        fold_runs[fold] = {"fit": res.summary(), "mae": mae, "mae_train_mean_baseline": dummy, "steps_max": steps,
                           "val_curve": [(h["step"], round(h["val/mae"], 5)) for h in res.history]}
        return res.predictions, {"system": args.system, "steps_max": steps, "best_step": res.best_step,
                                 "best_val_mae": res.best_val_mae}

    out = pathlib.Path(args.out or ROOT / "benchmarks" / "results" / f"{TASK}_{args.system}{'_quick' if args.quick else ''}")
    results, _ = run_matbench(TASK, labels["ids"], labels["targets"], fit, out, available=available,
                              val_fraction=args.val_fraction, seed=args.seed, folds=tuple(args.folds))

    # ------------------------------------------------------------------ table
    full_dummy = dummy_fold_maes(labels["targets"])
    rows = []
    for fold in sorted(fold_runs):
        c = results.fold_counts[f"fold_{fold}"]
        rows.append({"fold": fold, "test avail/total": f"{c['n_test_available']}/{c['n_test_total']}",
                     "train avail/total": f"{fold_runs[fold]['fit']['counts']['train'] + fold_runs[fold]['fit']['counts']['val']}"
                                          f"/{c['n_train_total']}",
                     "MAE ours": fold_runs[fold]["mae"], "train-mean (avail)": fold_runs[fold]["mae_train_mean_baseline"],
                     "Dummy (full fold)": full_dummy[fold], "best step": fold_runs[fold]["fit"]["best_step"],
                     "wall s": fold_runs[fold]["fit"]["wall_s"]})
    s = results.summary()
    rows.append({"fold": "mean", "MAE ours": s["mae"]["mean"],
                 "train-mean (avail)": float(np.mean([r["mae_train_mean_baseline"] for r in fold_runs.values()])),
                 "Dummy (full fold)": float(np.mean(full_dummy[sorted(fold_runs)]))})
    rows.append({"fold": "std", "MAE ours": s["mae"]["std"]})
    print("\n" + format_table(rows))
    lb = reported(table="matbench_v0.1_leaderboard", task=TASK)
    print(f"\nreported (Matbench v0.1 leaderboard, all 18,928 rows, mean ± std over 5 folds, eV/unit cell):")
    print(format_table([{"model": r.model, "MAE": r.value, "std": r.std} for r in lb]))
    print(f"ours: {args.system} on the {int(available.sum())} rows with structures, folds {sorted(fold_runs)}: "
          f"{s['mae']['mean']:.4f} ± {s['mae']['std']:.4f}; total {time.time() - t_start:.0f} s")
    write_json(out / "run.json", {
        "task": TASK, "system": args.system, "command": command, "hardware": hardware, "modalities": modalities,
        "settings": {k: v for k, v in vars(args).items() if k not in ("cache", "out", "verbose")},
        "encoder": config.system.encoder.to_dict() if "encoder" in config.system else None,
        "optim": config.optim.to_dict(), "featurise_s": round(t_feat, 1), "n_structures": int(available.sum()),
        "folds": fold_runs, "summary": s, "fold_counts": results.fold_counts,
        "reported": [{"model": r.model, "mae": r.value, "std": r.std, "source": r.source} for r in lb],
        "dummy_full_fold_mae": full_dummy.tolist(), "wall_s": round(time.time() - t_start, 1),
    })
    print(f"wrote {out}/results.json.gz, matbench_summary.json, run.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
