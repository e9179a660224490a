"""Training throughput: samples/s (compile excluded), TFLOP/s and MFU, and an input-pipeline check.

    python benchmarks/throughput.py                 # every registered row, full size
    python benchmarks/throughput.py --quick         # tiny repeats (smoke run, CPU-friendly)
    python benchmarks/throughput.py --rows=toy --out=results.json
    python benchmarks/throughput.py --quick --prefetch=0   # input pipeline without prefetching
    python benchmarks/throughput.py --quick --rows=cgcnn --delay_ms=10   # I/O-bound input (sleep per batch)

Method: the jitted train step (`mmjax.train.step.make_train_step`, the one the loop runs) is
called `n_warmup` times (compilation and first-touch excluded), then `n_repeat` timed passes of
`steps` steps each, each pass ended by `block_until_ready`; samples/s is the median over passes
(samples = material slots, n_dev x B_dev, padding included). FLOPs per step come from XLA's
`cost_analysis()` of the compiled step; TFLOP/s = FLOPs / median step time, MFU = TFLOP/s per
device / peak. Input pipeline: the same timing with batches drawn from the data iterator and
assembled each step (`host_to_global`) vs one cached device batch; ratio > 1 means the input
pipeline slows training. The pipeline timing feeds batches as the training loop does: through
`mmjax.train.prefetch.Prefetcher` (``--prefetch`` batches read and transferred ahead by a thread,
default ``config.data.prefetch`` or 2; ``--prefetch=0``: synchronous, the pre-prefetch loop).
``host_batch_ms`` is the median time to read one batch and assemble it on the devices without
overlap: when it exceeds the step time no amount of prefetching can hide the pipeline. On a CPU
backend the "device" is the same cores the pipeline runs on, so overlap needs idle cores;
``--delay_ms`` makes each batch wait that long without using the CPU, like I/O, which shows the
overlap independently of core contention (included in host_batch_ms).

Peak dense bf16 TFLOP/s per device used for MFU (vendor datasheets, dense, no sparsity):
H100 SXM 989, H200 989 (same GH100 compute), A100 312, L4 121, TPU v4 275, TPU v5e 197,
TPU v5p 459, TPU v6e 918. CPU: no MFU. Note fp32 runs are reported against the bf16 peak too.

Rows: ``ROWS[name] = fn() -> (system, config)``; the lead adds one per system.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

import jax

PEAK_BF16_TFLOPS = {
    "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0,
}


def peak_tflops(device_kind: str) -> float | None:
    """Peak dense bf16 TFLOP/s of one device of this kind, None when unknown (e.g. CPU)."""
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def _median_pass_time(step_fn: Callable, state: Any, batch_fn: Callable[[int], Any], steps: int,
                      n_warmup: int, n_repeat: int) -> tuple[float, Any]:
    for i in range(n_warmup):
        state, metrics = step_fn(state, batch_fn(i))
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(n_repeat):
        t0 = time.perf_counter()
        for i in range(steps):
            state, metrics = step_fn(state, batch_fn(i))
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times), state


def measure(step_fn: Callable, state: Any, batches: list, n_warmup: int = 2, n_repeat: int = 5) -> dict:
    """Median samples/s of ``state, metrics = step_fn(state, batch)`` over `batches` (global, on device).

    Each timed pass runs every batch once. `state` is threaded through (the step may donate it).
    Returns dict(samples_per_s, step_time_s, samples_per_step, state).
    """
    samples = int(batches[0]["slot_valid"].size)
    step_time, state = _median_pass_time(step_fn, state, lambda i: batches[i % len(batches)], len(batches),
                                         n_warmup, n_repeat)
    return {"samples_per_s": samples / step_time, "step_time_s": step_time, "samples_per_step": samples,
            "state": state}


def step_flops(jitted_step, state, batch) -> float | None:
    """FLOPs of one compiled step from XLA's cost analysis (None if the backend gives none)."""
    cost = jitted_step.lower(state, batch).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class _Delayed:
    """`iterator` with a sleep of `delay_s` seconds before each batch (simulated I/O wait)."""

    def __init__(self, iterator, delay_s: float):
        self.it, self.delay_s = iterator, delay_s

    def __next__(self):
        time.sleep(self.delay_s)
        return next(self.it)

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def host_batch_time(it, mesh, n: int) -> float:
    """Median seconds to read one batch from `it` and assemble it on `mesh` (transfer awaited)."""
    from mmjax.train import mesh as mesh_lib

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(mesh_lib.host_to_global(next(it), mesh))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def benchmark_system(system, config, *, n_warmup: int = 2, n_repeat: int = 5, steps: int = 10,
                     prefetch: int | None = None, delay_s: float = 0.0) -> dict:
    """Throughput row for a system + config with its configured data source.

    `prefetch`: batches fed ahead in the pipeline timing (None: ``config.data.prefetch``, else 2).
    `delay_s`: extra sleep per batch in the pipeline timing (simulated I/O).
    """
    from mmjax.train import mesh as mesh_lib
    from mmjax.train.data import build_iterator
    from mmjax.train.loop import build_engine
    from mmjax.train.prefetch import prefetch_to_mesh
    from mmjax.train.state import init_state
    from mmjax.train.step import make_train_step

    it = build_iterator(config, "train")
    host_batches = [next(it) for _ in range(steps)]
    eng = build_engine(system, config, host_batches[0])
    mesh = eng["mesh"]
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    flops = step_flops(step, state, eng["example"])

    cached = mesh_lib.host_to_global(host_batches[0], mesh)
    res = measure(step, state, [cached] * steps, n_warmup, n_repeat)
    state = res.pop("state")
    if delay_s:
        it = _Delayed(it, delay_s)
    t_host = host_batch_time(it, mesh, steps)
    # Input pipeline: fresh batches from the iterator, fed as the training loop feeds them.
    prefetch = int(config.data.get("prefetch", 2)) if prefetch is None else int(prefetch)
    with prefetch_to_mesh(it, mesh, prefetch) as feed:
        t_pipe, state = _median_pass_time(step, state, lambda i: next(feed), steps, n_warmup=1, n_repeat=n_repeat)
    n_dev = jax.device_count()
    kind = jax.devices()[0].device_kind
    row = {
        "system": system.name, "device_kind": kind, "devices": n_dev, "samples_per_step": res["samples_per_step"],
        "samples_per_s": res["samples_per_s"], "samples_per_s_per_device": res["samples_per_s"] / n_dev,
        "step_time_ms": 1e3 * res["step_time_s"], "pipeline_step_time_ms": 1e3 * t_pipe,
        "pipeline_over_cached": t_pipe / res["step_time_s"], "prefetch": prefetch,
        "host_batch_ms": 1e3 * t_host, "delay_ms": 1e3 * delay_s, "gflop_per_step": flops / 1e9 if flops else None,
    }
    if flops:
        tflops_dev = flops / res["step_time_s"] / 1e12 / n_dev  # cost_analysis counts the whole SPMD program
        row["tflops_per_device"] = tflops_dev
        peak = peak_tflops(kind)
        row["mfu"] = tflops_dev / peak if peak else None
    return row


def _toy_row(quick: bool):
    from mmjax.systems.toy import make_toy, toy_system_config
    from mmjax.train.config import base_config

    config = base_config()
    config.system = toy_system_config()
    config.system.hidden = 64 if quick else 512
    config.data.batch_per_device = 8 if quick else 256
    config.data.length = 64 if quick else 4250
    config.train.steps = 1000
    return make_toy(config), config


def _config_row(config_name: str, full_batch_per_device: int):
    """Row for ``configs/<config_name>.py`` on the embedded default (featurised once into a cache in
    the temp folder). Full: paper model sizes, ``full_batch_per_device`` slots per device, 3000
    materials; quick: the ``:small`` config on 200 materials, 16 slots per device."""

    def row(quick: bool):
        import importlib.util
        import os
        import pathlib
        import tempfile

        from mmjax.systems import build_system

        path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{config_name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_cfg_{config_name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config("small" if quick else None)
        config.data.data_dir = os.path.join(tempfile.gettempdir(), "mmjax_benchmark_data")
        config.data.num_materials = 200 if quick else 3000
        config.data.batch_per_device = 16 if quick else full_batch_per_device
        config.train.steps = 1000
        config.train.progress = False
        return build_system(config), config

    return row


ROWS: dict[str, Callable[[bool], tuple]] = {
    "toy": _toy_row,
    # XxaCT-NN at paper size (112 M parameters, bf16); the paper trains 4096 per GPU with remat.
    "xxact": _config_row("xxact", 256),
    "cgcnn": _config_row("cgcnn", 256),
    "crabnet": _config_row("crabnet", 512),
    "xrd_transformer": _config_row("xrd_transformer", 512),
    # Multimodal pretraining systems; on the embedded default their :small configs use the crystal,
    # XRD and (template text -> hashing stand-in) text modalities that the data provide.
    "xmopa": _config_row("xmopa", 64),
    "multimat": _config_row("multimat", 128),
    "matbind": _config_row("matbind", 256),
}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes and repeats")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--delay_ms", type=float, default=0.0,
                   help="sleep this long per batch in synthetic sources (simulated I/O; toy row)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="batches prefetched in the pipeline timing (default: config.data.prefetch or 2; 0 = off)")
    args = p.parse_args(argv)
    n_warmup, n_repeat, steps = (1, 3, 5) if args.quick else (3, 7, 20)
    rows = []
    for name in args.rows.split(","):
        system, config = ROWS[name](args.quick)
        row = {"row": name, **benchmark_system(system, config, n_warmup=n_warmup, n_repeat=n_repeat, steps=steps,
                                                      prefetch=args.prefetch, delay_s=args.delay_ms / 1e3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
