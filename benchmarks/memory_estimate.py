"""The traced memory estimate of a config's train step (`mmjax.train.memory`) beside XLA's own figure.

    python benchmarks/memory_estimate.py configs/xxact.py:small --workdir /tmp/mx --set data.num_materials=64
    python benchmarks/memory_estimate.py configs/cgcnn.py --workdir /tmp/cg --set data.num_materials=300
    python benchmarks/memory_estimate.py configs/xxact.py --workdir /tmp/mxp --set data.num_materials=300 --no-compile

Prints one JSON line: the estimate (``peak_est``, plus the lower / upper bounds), the seconds of
tracing, and — unless ``--no-compile`` (a paper-size step compiles for minutes and may not fit) —
XLA's compiled ``memory_analysis()`` (temp + arguments + outputs) and ``xla_total / peak_est``.
The README's calibration (0.94–1.76x) comes from these commands (2026-12-02, 2-core CPU); the
paper-size XxaCT-NN figure of XLA is the allocation of its out-of-memory error.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="config file (path or path:arg)")
    ap.add_argument("--workdir", required=True, help="where the config's data is featurised")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (Python literal)")
    ap.add_argument("--no-compile", action="store_true", help="estimate only")
    args = ap.parse_args(argv)

    import jax

    from matbench import load_config
    from mmjax.systems import build_system
    from mmjax.train import memory
    from mmjax.train.data import build_iterator, peek
    from mmjax.train.loop import build_engine
    from mmjax.train.step import train_step_fn

    cfg = load_config(args.config)
    cfg.data.num_workers = 0
    for item in args.set:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[leaf] = ast.literal_eval(value)
    system = build_system(cfg)
    eng = build_engine(system, cfg, peek(build_iterator(cfg, "train", workdir=args.workdir)))
    fn = train_step_fn(system, eng["tx"], eng["schedule"])
    t0 = time.time()
    mem = memory.step_memory(fn, eng["abstract"], eng["example"])
    row = {"config": args.config, "trace_s": round(time.time() - t0, 1), "peak_est": mem.peak_bytes,
           "lower": mem.lower_bytes, "upper": mem.upper_bytes, "largest": mem.largest_what}
    if not args.no_compile:
        t0 = time.time()
        analysis = jax.jit(fn).lower(eng["abstract"], eng["example"]).compile().memory_analysis()
        xla = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
        row.update(compile_s=round(time.time() - t0, 1), xla_total=xla, xla_over_estimate=round(xla / mem.peak_bytes, 2))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
