"""End-to-end throughput of the training command (`python -m mmjax.main --mode=train`), the number
users feel: config variants run in interleaved rounds, samples/s read from each run's summary.json.

    python benchmarks/train_command.py --config configs/crabnet.py \\
        --source ../shared/data/crabnet_benchmarks/mp_bulk_modulus/train.csv.gz --targets target \\
        --batch 256 --steps 60 --rounds 3 \\
        --variant padded:system.packed_tokens=0 --variant packed:system.packed_tokens=-1 \\
        --out benchmarks/results/train_command/crabnet_mp_bulk_modulus.json

Each round runs every variant once (the order alternates between rounds, so a machine that speeds up
or slows down hits all variants alike), each as its own process in a fresh workdir under ``--work``;
the featurised data is shared (``config.data.data_dir``), so only the first run featurises.
From each run's ``summary.json``: ``samples_per_s`` (the loop's own rate: material slots per second
over the steps after the first, so compilation is excluded), ``first_step_s`` and ``compile_s``.
Each round also keeps the lines where the command states values it derived from the data
(``system.packed_tokens=-1 (auto): ...``). Reported per variant: the median over rounds and every
round's value; ratios are each variant's
median over the first variant's. Eval is off (``train.eval_every=0``) and one checkpoint is
written at the end, so the rate is the training loop's.

``--original cgcnn|crabnet`` also runs the ORIGINAL training code once per round, between the
variants, through `benchmarks/original_code.py` (its torch venv, ``--torch-python``): ``cgcnn``
runs txie-93/cgcnn ``main.py`` on ``--source``, which must then be a CGCNN root_dir (``id_prop.csv``
+ CIFs, as ``original_code.py prepare-cgcnn`` writes; mmjax reads the same folder), ``crabnet``
runs CrabNet's ``Model.train`` on ``--original-task`` (the same rows as ``--source``'s train.csv).
Its per-round rate is the median of its epochs after the first (graph building / warm-up
excluded, as ours excludes compilation); each variant then also gets ``ratio_to_original``, the
ratio of medians over rounds, measured in the same run on the same machine::

    python benchmarks/original_code.py prepare-cgcnn --n 4096
    python benchmarks/train_command.py --config configs/cgcnn.py --source runs/original_cgcnn/4096 \
        --targets target --batch 256 --steps 60 --rounds 3 --original cgcnn \
        --torch-python /tmp/torchenv/bin/python --out benchmarks/results/train_command/cgcnn_vs_original.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` -> (name, ["--config.key=value", ...]); ``name:`` = no override."""
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"variant {text!r}: expected name:key=value[,key=value]")
    overrides = [f"--config.{kv.strip()}" for kv in rest.split(",") if kv.strip()]
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"variant {text!r}: {o[len('--config.'):]!r} is not key=value")
    return name, overrides


def command(args, workdir: pathlib.Path, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "mmjax.main", f"--config={args.config}", f"--workdir={workdir}", "--mode=train",
           f"--config.data.data_dir={args.work / 'data'}", f"--config.train.steps={args.steps}",
           "--config.train.epochs=0", "--config.train.eval_every=0", "--config.checkpoint.every=0",
           f"--config.train.log_every={max(1, args.steps // 4)}"]
    if args.source:
        cmd.append(f"--config.data.source={args.source}")
    if args.targets:
        cmd.append(f"--config.data.targets={tuple(args.targets)!r}")
    if args.batch:
        cmd.append(f"--config.data.batch_per_device={args.batch}")
    return cmd + list(args.set) + overrides


def run_once(args, name: str, overrides: list[str], k: int) -> dict:
    workdir = args.work / f"{name}-round{k}"
    shutil.rmtree(workdir, ignore_errors=True)  # our own scratch run folder (never user data)
    cmd = command(args, workdir, overrides)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} round {k} exited {proc.returncode}:\n" + proc.stderr[-3000:])
    summary = json.loads((workdir / "summary.json").read_text())
    train = summary.get("train", summary)
    derived = [line for line in proc.stdout.splitlines() if line.startswith(("system.", "train.epochs"))]
    return {"samples_per_s": train["samples_per_s"], "first_step_s": train.get("first_step_s"),
            "compile_s": train.get("compile_s"), "wall_s": round(wall, 1), "command": " ".join(cmd),
            "derived": derived}


def run_original(args, k: int) -> dict:
    """One run of the original code (``original_code.py run-cgcnn`` / ``run-crabnet``) -> its rate."""
    out = args.work / f"original-round{k}.json"
    script = [sys.executable, str(ROOT / "benchmarks" / "original_code.py")]
    if args.original == "cgcnn":
        cmd = script + ["run-cgcnn", "--root", str(pathlib.Path(args.source).resolve())]
        key = "structures_per_s"
    else:
        cmd = script + ["run-crabnet", "--task", args.original_task]
        key = "samples_per_s"
    cmd += ["--epochs", str(args.original_epochs), "--threads", str(args.threads), "--out", str(out)]
    if args.torch_python:
        cmd += ["--torch-python", args.torch_python]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"original {args.original} round {k} exited {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-3000:])
    res = json.loads(out.read_text())
    return {"samples_per_s": res[key]["median_after_first"], "first_epoch_samples_per_s": res[key]["first_epoch"],
            "per_epoch": [e.get(key) for e in res["per_epoch"]], "wall_s": round(time.time() - t0, 1),
            "command": " ".join(cmd), "torch": res.get("torch"), "source": res.get("source")}


def main(argv=None) -> int:
    from mmjax.eval.fit import command_line, hardware_description

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="config file (path or path:arg)")
    p.add_argument("--source", default="", help="config.data.source (default: the config's)")
    p.add_argument("--targets", nargs="*", default=[], help="config.data.targets")
    p.add_argument("--batch", type=int, default=0, help="config.data.batch_per_device (0: the config's)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variant", action="append", default=[], help="name:key=value[,key=value] (repeatable)")
    p.add_argument("--set", action="append", default=[], help="--config.key=value for every variant")
    p.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "bench_train_command")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--original", choices=("cgcnn", "crabnet"), default=None,
                   help="also run the original training code each round (benchmarks/original_code.py)")
    p.add_argument("--original-task", default="mp_bulk_modulus", help="crabnet: the CrabNet benchmark task")
    p.add_argument("--original-epochs", type=int, default=3, help="epochs of the original per round (>= 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the original")
    p.add_argument("--torch-python", default="", help="python of the torch venv (original_code.py's default if empty)")
    args = p.parse_args(argv)
    if args.original == "cgcnn" and not (pathlib.Path(args.source) / "id_prop.csv").is_file():
        p.error("--original cgcnn needs --source to be a CGCNN root_dir with id_prop.csv (original_code.py prepare-cgcnn)")
    if args.original and args.original_epochs < 2:
        p.error("--original-epochs must be >= 2 (the first epoch is reported apart)")
    variants = [parse_variant(v) for v in (args.variant or ["default:"])]
    if len({n for n, _ in variants}) != len(variants):
        p.error("variant names must differ")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {n: [] for n, _ in variants}
    original: list[dict] = []
    for k in range(args.rounds):
        order = variants if k % 2 == 0 else variants[::-1]
        for j, (name, overrides) in enumerate(order):
            if args.original and j == len(order) // 2:  # the original sits between the variants
                original.append(run_original(args, k))
                print(f"round {k} original {args.original}: {original[-1]['samples_per_s']:.1f} samples/s "
                      f"(wall {original[-1]['wall_s']:.0f} s)", flush=True)
            r = run_once(args, name, overrides, k)
            runs[name].append(r)
            print(f"round {k} {name}: {r['samples_per_s']:.1f} samples/s (first step {r['first_step_s']:.1f} s, "
                  f"wall {r['wall_s']:.0f} s)", flush=True)
    first = variants[0][0]
    med = {n: statistics.median(r["samples_per_s"] for r in rs) for n, rs in runs.items()}
    result = {
        "what": "training command end-to-end samples/s (summary.json samples_per_s: steps after the first)",
        "config": args.config, "source": args.source, "targets": args.targets, "batch_per_device": args.batch,
        "steps": args.steps, "rounds": args.rounds,
        "variants": {n: {"overrides": o, "median_samples_per_s": med[n], f"ratio_to_{first}": med[n] / med[first],
                         "rounds": runs[n]} for n, o in variants},
        "command": command_line(argv), "hardware": hardware_description(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if original:
        med_o = statistics.median(r["samples_per_s"] for r in original)
        result["original"] = {"code": args.original, "median_samples_per_s": med_o, "rounds": original,
                              "timed": "original_code.py: median of each run's epochs after the first"}
        for n in med:
            result["variants"][n]["ratio_to_original"] = med[n] / med_o
    for n in med:
        print(f"{n}: median {med[n]:.1f} samples/s, {med[n] / med[first]:.2f}x {first}"
              + (f", {med[n] / result['original']['median_samples_per_s']:.2f}x the original" if original else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
