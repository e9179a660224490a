"""XxaCT-NN convergence on real data (issue #12): does pretraining make the supervised stage converge sooner?

    nice -n 10 python benchmarks/xxact_convergence.py                       # full CPU run (see README)
    python benchmarks/xxact_convergence.py --quick --out /tmp/conv_quick     # smoke test (a few minutes)

Data: the 14,946 Castelli perovskites tied to Matbench rows (``../shared/data/perovskites/
matbench_links.csv.gz`` + ``structures_all.json.gz``), each with its Matbench ``e_form`` (eV per
5-atom cell). They are written once into ``<workdir>/perovskites_linked.json.gz`` (the
``{id: {"poscar", "e_form"}}`` layout `mmjax.data.sources.read_poscar_json` reads; rewritten only when
its content would change) and featurised once into ``<workdir>/data`` as the XxaCT-NN config asks:
composition + simulated XRD on the paper's grid (Cu Kα, 5-90° at 0.02° = 4,250 points, σ 0.1).

Model and recipe: ``configs/xxact.py:small`` (the paper's architecture at CPU widths), target
``e_form`` only, random 90 / 5 / 5 split (``data.split_seed`` 0 for every seed). For every seed,
`mmjax.eval.experiments.convergence.xxact_convergence` trains the four XxaCT-NN Table 2 variants —
none (from scratch), clip, mxm, both (pretraining on the training materials, then the same
supervised schedule) — with validation every ``train_steps // eval_points`` steps. The speed-up of a
variant = supervised steps the no-pretraining run needs to reach its own best validation MAE ÷ the
steps the variant needs to reach that value (pretraining steps not counted, as in the paper).

Outputs under ``--out`` (default benchmarks/results/xxact_convergence_perovskites/):
``summary.json`` (``seeds``, ``speedup`` = mean over seeds per objective, ``speedup_per_seed``,
thresholds, best values, test MAE, validation curves, settings, wall times, hardware, command),
``convergence.png`` (validation curves of every seed and variant) and ``seed<k>/convergence.json``
as `xxact_convergence` writes it. A seed whose ``convergence.json`` is already there with the same
settings is reused, so a killed run continues (the training runs themselves resume from their
checkpoints in ``--workdir``).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# benchmarks/matbench.py (the linked perovskite rows), loaded under its own name so that it cannot
# shadow the installed matbench package
_spec = importlib.util.spec_from_file_location("bench_matbench", ROOT / "benchmarks" / "matbench.py")
mb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mb)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "xxact_convergence_perovskites"
DEFAULT_WORKDIR = ROOT / "runs" / "xxact_convergence_perovskites"
VARIANT_NAMES = ("none", "clip", "mxm", "both")
FULL = dict(pretrain_steps=2000, train_steps=2500, batch=64, eval_points=25, lr=2e-3)
QUICK = dict(pretrain_steps=40, train_steps=60, batch=32, eval_points=6, lr=2e-3, rows=600)


def source_document(limit: int | None = None) -> dict:
    """``{mbid: {"poscar": text, "e_form": Matbench value}}`` for the linked perovskites, in Matbench
    row order (`benchmarks/matbench.structure_items`); ``limit`` keeps the first rows."""
    from mmjax.eval.matbench import load_matbench_labels

    labels = load_matbench_labels(mb.LABELS)
    return {mbid: {"poscar": text, mb.TARGET: y[mb.TARGET]} for mbid, text, y in mb.structure_items(labels, limit)}


def write_if_changed(path: pathlib.Path, doc: dict) -> bool:
    """Write ``doc`` as gzipped JSON unless ``path`` already holds exactly that JSON (so the featurised
    cache keyed on the file stays valid); returns True when the file was (re)written."""
    text = json.dumps(doc, sort_keys=True).encode()
    if path.is_file():
        with gzip.open(path, "rb") as fh:
            if fh.read() == text:
                return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


def make_config(source: pathlib.Path, seed: int, settings: dict):
    """``configs/xxact.py:small`` on ``source`` with target e_form and the run's steps / batch / lr."""
    from configs import xxact
    from mmjax.eval.experiments.common import with_values

    c = xxact.get_config("small")
    with c.unlocked():
        c.data.source = str(source)
        c.data.targets = (mb.TARGET,)
        c.data.split = (0.9, 0.05, 0.05)
        c.data.split_seed = 0
    return with_values(c, seed=int(seed), data__batch_per_device=int(settings["batch"]),
                       pretrain__steps=int(settings["pretrain_steps"]), train__steps=int(settings["train_steps"]),
                       optim__peak_lr=float(settings["lr"]), train__log_every=max(1, int(settings["train_steps"]) // 30),
                       checkpoint__every=max(1, int(settings["train_steps"]) // 6))


def aggregate(per_seed: dict[int, dict]) -> dict:
    """Mean speed-up per objective over the seeds (a seed where an objective never reaches the
    threshold counts as no speed-up reached: the objective's mean is then None), per-seed values,
    thresholds, best validation and test MAE."""
    seeds = sorted(per_seed)
    objectives = [v for v in VARIANT_NAMES if v != "none" and all(v in per_seed[s]["runs"] for s in seeds)]
    speed = {v: [per_seed[s]["runs"][v]["speedup"] for s in seeds] for v in objectives}
    mean = {v: (float(np.mean(x)) if all(e is not None for e in x) else None) for v, x in speed.items()}
    variants = ["none", *objectives]
    return {
        "seeds": seeds,
        "speedup": {v: m for v, m in mean.items() if m is not None},
        "speedup_per_seed": speed,
        "threshold_per_seed": {str(s): per_seed[s]["threshold"] for s in seeds},
        "steps_to_threshold": {v: [per_seed[s]["runs"][v]["steps_to_threshold"] for s in seeds] for v in variants},
        "best_val_mae": {v: [per_seed[s]["runs"][v]["best"] for s in seeds] for v in variants},
        "test_mae": {v: [per_seed[s]["variants"][v]["test"].get(f"{mb.TARGET}/mae") for s in seeds] for v in variants},
        "wall_s": {v: [per_seed[s]["variants"][v]["wall_s"] for s in seeds] for v in variants},
        "curves": {str(s): per_seed[s]["curves"] for s in seeds},
    }


def plot(summary: dict, path: pathlib.Path) -> None:
    from mmjax.eval.report import new_figure, save_figure

    fig, ax = new_figure()
    colours = dict(zip(VARIANT_NAMES, ("k", "tab:blue", "tab:orange", "tab:green")))
    for k, (seed, curves) in enumerate(summary["curves"].items()):
        for v, cur in curves.items():
            ax.plot(cur["steps"], cur["values"], color=colours.get(v), ls=("-", "--", ":", "-.")[k % 4],
                    label=f"{v} (seed {seed})")
    ax.set_yscale("log")
    ax.set_xlabel("supervised step")
    ax.set_ylabel("validation e_form MAE (eV/cell)")
    ax.set_title("XxaCT-NN convergence, linked perovskites")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, str(path))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--workdir", type=pathlib.Path, default=None)
    p.add_argument("--seeds", default="0,1", help="comma-separated model seeds (the split is the same for all)")
    p.add_argument("--variants", default=",".join(VARIANT_NAMES[1:]), help="pretraining variants beside none")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of both stages")
    p.add_argument("--eval-points", type=int, default=None, help="validations per supervised run")
    p.add_argument("--rows", type=int, default=None, help="use only the first N linked rows (default all)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = p.parse_args(argv)
    preset = dict(QUICK if args.quick else FULL)
    for key in ("pretrain_steps", "train_steps", "batch", "lr", "eval_points", "rows"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    settings = {**preset, "variants": [v for v in args.variants.split(",") if v], "target": mb.TARGET,
                "config": "configs/xxact.py:small", "split": [0.9, 0.05, 0.05], "split_seed": 0}
    out = args.out or (DEFAULT_OUT if not args.quick else DEFAULT_OUT.with_name(DEFAULT_OUT.name + "_quick"))
    workdir = (args.workdir or (DEFAULT_WORKDIR if not args.quick else DEFAULT_WORKDIR.with_name(
        DEFAULT_WORKDIR.name + "_quick"))).resolve()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not mb.LINKS.is_file():
        print(f"error: {mb.LINKS} not found (the ../shared data)", file=sys.stderr)
        return 2

    from mmjax.eval.experiments.convergence import xxact_convergence
    from mmjax.eval.fit import command_line, hardware_description

    t_start = time.time()
    source = workdir / "perovskites_linked.json.gz"
    doc = source_document(preset.get("rows"))
    rewritten = write_if_changed(source, doc)
    print(f"source {source}: {len(doc)} linked perovskites ({'written' if rewritten else 'unchanged'})", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in seeds:
        seed_out = out / f"seed{seed}"
        done = seed_out / "convergence.json"
        if done.is_file():
            res = json.loads(done.read_text())
            if res.get("settings") == settings:
                print(f"seed {seed}: reusing {done}", flush=True)
                per_seed[seed] = res
                continue
        config = make_config(source, seed, settings)
        with config.unlocked():
            config.data.data_dir = str(workdir / "data")
        run_dir = workdir / f"seed{seed}"
        xxact_convergence(config, str(run_dir), variants=settings["variants"], eval_points=int(settings["eval_points"]))
        res = json.loads((run_dir / "convergence.json").read_text())  # as written there (arrays as lists)
        res["settings"] = settings
        seed_out.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(res, indent=1))
        per_seed[seed] = res
    summary = {**aggregate(per_seed), "settings": settings, "n_materials": len(doc),
               "metric": per_seed[seeds[0]]["key"],
               "definition": "speedup = supervised steps 'none' needs to reach its best validation MAE / steps the "
                             "objective needs to reach that value (pretraining steps not counted); mean over seeds",
               "command": command_line(argv), "wall_s_this_invocation": round(time.time() - t_start, 1),
               "hardware": hardware_description(), "code": mb.git_commit()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    plot(summary, out / "convergence.png")
    print(json.dumps({k: summary[k] for k in ("seeds", "speedup", "speedup_per_seed", "best_val_mae", "test_mae")},
                     indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
