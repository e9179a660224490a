"""Training throughput: samples/s (compile excluded), TFLOP/s and MFU, and an input-pipeline check.

    python benchmarks/throughput.py --quick         # :small configs, 16 slots, short passes (CPU, ~1 min/row)
    python benchmarks/throughput.py --paper         # paper model sizes, 16 slots per device, ~1-3 min/row on CPU
    python benchmarks/throughput.py                 # paper model sizes at the rows' full batch (GPU)
    python benchmarks/throughput.py --rows=toy --out=results.json
    python benchmarks/throughput.py --quick --prefetch=0   # input pipeline without prefetching
    python benchmarks/throughput.py --quick --device_resident=off   # host-assembled batches only
    python benchmarks/throughput.py --quick --rows=cgcnn --delay_ms=10   # I/O-bound input (sleep per batch)
    python benchmarks/throughput.py --paper --peak_tflops=989 --dtype=bfloat16   # MFU against a given peak

Method: the jitted train step (`mmjax.train.step.make_train_step`, the one the loop runs) is compiled
once (``compile_s``: lower + compile, which also gives XLA's FLOP count), run `n_warmup` times, then
`n_repeat` rounds each of one CACHED pass and one PIPELINE pass of `steps` steps, interleaved (the
order alternates per round: cached-pipeline, pipeline-cached, ...) so machine noise hits both alike;
each pass ends with ``block_until_ready``; reported times are medians over passes (samples = material
slots, n_dev x B_dev, padding included).
  * cached: `steps` distinct batches of the same stream, put on the devices beforehand and cycled.
    (Not one batch repeated: the step's cost depends on the data (scatter / segment sums over
    different graphs, caches): on the CGCNN paper row, cycling 8 pre-transferred batches measured
    1.48x the step time of repeating the first one, with no input pipeline involved.)
  * pipeline: batches read from the data iterator, assembled and put on the devices as the training
    loop does it, through `mmjax.train.prefetch.Prefetcher` (``--prefetch`` batches ahead by a thread,
    default ``config.data.prefetch`` or 2; ``--prefetch=0``: synchronous). A fresh prefetcher per pass
    and one untimed step before the clock starts, so a queue filled during the cached pass never hides
    pipeline time. ``pipeline_over_cached`` = pipeline / cached step time; > 1 means the input pipeline
    slows training (goal: <= 1.1); ``pipeline_over_cached_paired``: the median over rounds of the
    ratio of the two passes of one round (less sensitive to the machine's speed drifting).
``feed``: "device" when the pipeline pass gathers batches on the devices from the dataset put there
once (``config.data.device_resident``, "auto" by default: `mmjax.data.device_store`; the host then
only picks record indices; the step program gathers its batch, no prefetch thread), "host" when
it assembles them on the host (the same batches).
``host_batch_ms``: median time to read one batch and put it on the devices without overlap (feed
"device": to read the record indices; the gather runs inside the step program). On a CPU
backend the "device" is the cores the pipeline runs on, so overlap needs idle cores; ``--delay_ms``
adds a sleep per batch (like I/O, no CPU) to show overlap independently of core contention.
``recompiles``: compilations of the step after the first (must be 0: every batch has one shape).
``command_samples_per_s`` (on by default, ``--no-train-command`` to skip): the training loop itself
(`mmjax.train.loop.train`, what ``python -m mmjax.main --mode=train`` runs) on the row's data and
config for 2 x steps x passes + 1 steps, its summary's rate (compile excluded) — the number users
feel — and ``command_over_cached`` = that / the cached step rate (< 1: the loop loses time around
the step).

FLOPs per step come from XLA's ``cost_analysis()`` of the compiled step (a static count of the
program, not a hardware counter); ``gflop_per_sample`` divides by the slots; TFLOP/s per device =
FLOPs / step time / n_dev; MFU = that / peak (`throughput_columns`). Peak dense bf16 TFLOP/s per device
(vendor datasheets, no sparsity): H100 SXM 989, H200 989 (same GH100 compute), A100 312, L4 121,
TPU v4 275, TPU v5e 197, TPU v5p 459, TPU v6e 918; CPU: none unless ``--peak_tflops`` gives one. fp32
runs are reported against the bf16 peak too. ``--dtype=bfloat16|float32`` sets ``config.train.compute_dtype``
(bf16 compute, fp32 parameters) for rows whose system reads it.

Rows: ``ROWS[name] = fn(size) -> (system, config)`` with size "small" | "paper" | "full".
"""

from __future__ import annotations

import argparse
import itertools
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


def throughput_columns(flops_per_step: float | None, step_time_s: float, samples_per_step: int, n_devices: int,
                       peak_tflops_per_device: float | None) -> dict:
    """Derived columns of one row.

    Args:
      flops_per_step: FLOPs of one step of the whole (SPMD) program, or None when unknown.
      step_time_s: seconds per step; samples_per_step: material slots per step (all devices);
      n_devices: devices the step runs on; peak_tflops_per_device: peak TFLOP/s of one device or None.
    Returns:
      dict(samples_per_s, samples_per_s_per_device, gflop_per_step, gflop_per_sample,
      tflops_per_device, mfu); FLOP columns None without FLOPs, mfu None without a peak.
    """
    out = {"samples_per_s": samples_per_step / step_time_s,
           "samples_per_s_per_device": samples_per_step / step_time_s / n_devices,
           "gflop_per_step": None, "gflop_per_sample": None, "tflops_per_device": None, "mfu": None}
    if flops_per_step:
        out["gflop_per_step"] = flops_per_step / 1e9
        out["gflop_per_sample"] = flops_per_step / samples_per_step / 1e9
        out["tflops_per_device"] = flops_per_step / step_time_s / 1e12 / n_devices
        if peak_tflops_per_device:
            out["mfu"] = out["tflops_per_device"] / peak_tflops_per_device
    return out


def _timed_pass(step_fn: Callable, state: Any, next_batch: Callable[[], Any], steps: int) -> tuple[float, Any]:
    """Seconds per step of `steps` steps (clock stopped after ``block_until_ready``), new state."""
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, next_batch())
    jax.block_until_ready((state, metrics))
    return (time.perf_counter() - t0) / steps, state


def _median_pass_time(step_fn: Callable, state: Any, batch_fn: Callable[[int], Any], steps: int,
                      n_warmup: int, n_repeat: int) -> tuple[float, Any]:
    for i in range(n_warmup):
        state, metrics = step_fn(state, batch_fn(i))
    if n_warmup:
        jax.block_until_ready((state, metrics))
    times = []
    for _ in range(n_repeat):
        counter = iter(range(steps))
        t, state = _timed_pass(step_fn, state, lambda: batch_fn(next(counter)), steps)
        times.append(t)
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


def measure_interleaved(step_fn: Callable, state: Any, cached_batches: list, open_feed: Callable[[], Any], *,
                        steps: int, n_repeat: int, n_warmup: int = 1) -> dict:
    """Cached vs pipeline step time, measured in alternating passes (see the module doc).

    Args:
      step_fn: ``(state, batch) -> (state, metrics)`` (may donate `state`).
      cached_batches: device batches already on the devices; cached step k uses batch k mod len.
      open_feed: ``() -> context manager iterator of device batches`` (a fresh `Prefetcher`); one
        untimed step is run from it before each pipeline pass is timed.
      steps: steps per pass; n_repeat: rounds (one pass of each kind per round); n_warmup: untimed
        cached steps first.
    Returns:
      dict(cached_s, pipeline_s: per-pass seconds per step, in order; cached_step_s,
      pipeline_step_s: their medians; state).
    """
    for i in range(n_warmup):
        state, metrics = step_fn(state, cached_batches[i % len(cached_batches)])
    if n_warmup:
        jax.block_until_ready((state, metrics))
    cached, piped = [], []

    def cached_pass(state):
        cycle = itertools.cycle(cached_batches)
        t, state = _timed_pass(step_fn, state, lambda: next(cycle), steps)
        cached.append(t)
        return state

    def pipeline_pass(state):
        with open_feed() as feed:
            state, metrics = step_fn(state, next(feed))  # pipeline start-up, untimed
            jax.block_until_ready((state, metrics))
            t, state = _timed_pass(step_fn, state, lambda: next(feed), steps)
        piped.append(t)
        return state

    for r in range(n_repeat):
        for run in ((cached_pass, pipeline_pass) if r % 2 == 0 else (pipeline_pass, cached_pass)):
            state = run(state)
    return {"cached_s": cached, "pipeline_s": piped, "cached_step_s": statistics.median(cached),
            "pipeline_step_s": statistics.median(piped), "state": state}


def compiled_flops(compiled) -> float | None:
    """FLOPs of a compiled executable from XLA's cost analysis (None if the backend gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def step_flops(jitted_step, state, batch) -> float | None:
    """FLOPs of one compiled step from XLA's cost analysis (None if the backend gives none)."""
    return compiled_flops(jitted_step.lower(state, batch).compile())


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


def host_batch_time(it, mesh, n: int, put_fn: Callable | None = None) -> float:
    """Median seconds to read one batch from `it` and put it on `mesh` (transfer awaited).

    `put_fn`: host batch -> device batch (default `mmjax.train.prefetch.batch_put_fn`, what the loop uses).
    """
    from mmjax.train.prefetch import batch_put_fn

    put_fn = batch_put_fn(mesh) if put_fn is None else put_fn
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(put_fn(next(it)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cache_size(jitted) -> int | None:
    size = getattr(jitted, "_cache_size", None)
    return int(size()) if callable(size) else None


def benchmark_system(system, config, *, n_warmup: int = 2, n_repeat: int = 5, steps: int = 10,
                     prefetch: int | None = None, delay_s: float = 0.0, peak: float | None = None) -> dict:
    """Throughput row for a system + config with its configured data source (see the module doc).

    `prefetch`: batches fed ahead in the pipeline timing (None: ``config.data.prefetch``, else 2).
    `delay_s`: extra sleep per batch in the pipeline timing (simulated I/O).
    `peak`: peak TFLOP/s per device for MFU (None: `peak_tflops` of the device kind).
    """
    from mmjax.train.data import build_iterator, device_feed
    from mmjax.train.loop import build_engine
    from mmjax.train.prefetch import Prefetcher, batch_put_fn
    from mmjax.train.state import init_state
    from mmjax.train.step import make_train_step

    it = build_iterator(config, "train")
    first = next(it)
    eng = build_engine(system, config, first)
    mesh = eng["mesh"]
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    n_params = sum(int(x.size) for x in jax.tree.leaves(state.params))
    # the loop's feed: device-resident batches when config.data.device_resident allows, else host batches
    source, feed_put, store = device_feed(it, config, mesh)
    feed_kind = "host" if store is None else "device"
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh, store=store)
    put = batch_put_fn(mesh)
    cached = [put(first)] + [put(next(it)) for _ in range(steps - 1)]  # distinct batches, pre-transferred
    t0 = time.perf_counter()
    flops = compiled_flops(step.lower(state, cached[0]).compile())
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, cached[0])  # the jit cache entry the loop uses (may trace again)
    jax.block_until_ready((state, metrics))
    n_compiled = _cache_size(step)

    if delay_s:
        source = _Delayed(source, delay_s)
    t_host = host_batch_time(source, mesh, max(steps, 5), feed_put)
    prefetch = int(config.data.get("prefetch", 2)) if prefetch is None else int(prefetch)
    if store is not None:  # as the loop: no thread, nothing awaited (see mmjax.train.loop)
        prefetch = 0
    res = measure_interleaved(step, state, cached, lambda: Prefetcher(source, feed_put, prefetch, wait=store is None),
                              steps=steps, n_repeat=n_repeat, n_warmup=n_warmup)
    n_dev = jax.device_count()
    kind = jax.devices()[0].device_kind
    samples = int(first["slot_valid"].size) * jax.process_count()
    cols = throughput_columns(flops, res["cached_step_s"], samples, n_dev, peak if peak else peak_tflops(kind))
    after = _cache_size(step)
    return {
        "system": system.name, "device_kind": kind, "devices": n_dev, "params": n_params,
        "compute_dtype": str(config.train.get("compute_dtype", "float32")), "samples_per_step": samples,
        "step_time_ms": 1e3 * res["cached_step_s"], "pipeline_step_time_ms": 1e3 * res["pipeline_step_s"],
        "pipeline_over_cached": res["pipeline_step_s"] / res["cached_step_s"],
        # median over rounds of pipeline / cached of the same round (adjacent passes share machine state)
        "pipeline_over_cached_paired": statistics.median(p / c for p, c in zip(res["pipeline_s"], res["cached_s"])),
        "pipeline_samples_per_s": samples / res["pipeline_step_s"],
        "cached_pass_ms": [round(1e3 * t, 3) for t in res["cached_s"]],
        "pipeline_pass_ms": [round(1e3 * t, 3) for t in res["pipeline_s"]],
        "steps_per_pass": steps, "passes": n_repeat, "prefetch": prefetch, "feed": feed_kind,
        "host_batch_ms": 1e3 * t_host,
        "delay_ms": 1e3 * delay_s, "compile_s": compile_s,
        "recompiles": (after - n_compiled) if after is not None and n_compiled is not None else None,
        **cols,
    }


def command_rate(system, config, steps: int) -> dict:
    """The training command's own rate on the row's data: `mmjax.train.loop.train` (what
    ``python -m mmjax.main --mode=train`` runs) for ``steps`` steps in a scratch workdir, eval off,
    one checkpoint at the end; ``samples_per_s`` from its summary (steps after the first, so
    compilation is excluded; checkpoint time is paused out by the loop)."""
    import tempfile

    from mmjax.train.data import build_iterator
    from mmjax.train.loop import train

    cfg = config.copy_and_resolve_references()
    cfg.train.steps = int(steps)
    cfg.train.epochs = 0.0
    cfg.train.eval_every = 0
    cfg.train.log_every = int(steps)
    cfg.train.progress = False
    cfg.checkpoint.every = 0
    with tempfile.TemporaryDirectory(prefix="mmjax_throughput_cmd_") as work:
        _, summary = train(system, cfg, work, build_iterator(cfg, "train"), None)
    return {"command_samples_per_s": summary["samples_per_s"], "command_steps": int(steps),
            "command_first_step_s": summary.get("first_step_s")}


PAPER_SLOTS = 16  # slots per device of the CPU paper-size rows (``--paper``; ``--slots`` overrides)
SIZES = ("small", "paper", "full")
# Data settings of the :small configs that the paper-size rows take over: the embedded default has
# crystal, composition and XRD, template text and no BERT weights offline (hashing stand-in, 768-d),
# no DOS or charge density. Everything else (encoder widths, featuriser grids) stays at paper size.
_EMBEDDED_DATA_KEYS = (("data", "modalities"), ("system", "modalities"), ("data", "text_model"))


def _toy_row(size: str, slots: int | None = None):
    from mmjax.systems.toy import make_toy, toy_system_config
    from mmjax.train.config import base_config

    small = size == "small"
    config = base_config()
    config.system = toy_system_config()
    config.system.hidden = 64 if small else 512
    config.data.batch_per_device = slots or (8 if small else 256)
    config.data.length = 64 if small else 4250
    config.train.steps = 1000
    return make_toy(config), config


def load_config(config_name: str, arg: str | None):
    """``configs/<config_name>.py``'s ``get_config(arg)``."""
    from mmjax.config_file import load_config as load_file

    return load_file(f"configs/{config_name}.py", arg)


def row_config(config_name: str, size: str, full_batch_per_device: int, slots: int | None = None):
    """Config of a row on the embedded default (featurised once into a cache in the temp folder).

    small: the ``:small`` config on 200 materials, 16 slots per device.
    paper: paper model sizes and featuriser grids, with the data modalities / text stand-in of the
      ``:small`` config (what the embedded default provides, `_EMBEDDED_DATA_KEYS`); 200 materials,
      `PAPER_SLOTS` slots per device (CPU).
    full: as paper on 3000 materials with ``full_batch_per_device`` slots (GPU).
    `slots` overrides the slots per device.
    """
    import os
    import tempfile

    if size not in SIZES:
        raise ValueError(f"row size {size!r}; expected one of {SIZES}")
    small = load_config(config_name, "small")
    config = small if size == "small" else load_config(config_name, None)
    if size != "small":
        for section, key in _EMBEDDED_DATA_KEYS:
            if key in small[section]:
                config[section][key] = small[section][key]
        config.data.features.text_robocrys = small.data.features.get("text_robocrys", None)
    config.data.data_dir = os.path.join(tempfile.gettempdir(), "mmjax_benchmark_data")
    config.data.num_materials = 3000 if size == "full" else 200
    config.data.batch_per_device = slots or {"small": 16, "paper": PAPER_SLOTS, "full": full_batch_per_device}[size]
    config.train.steps = 1000
    config.train.progress = False
    return config


def _config_row(config_name: str, full_batch_per_device: int):
    """Row for ``configs/<config_name>.py`` (see `row_config`)."""

    def row(size: str, slots: int | None = None):
        from mmjax.systems import build_system

        config = row_config(config_name, size, full_batch_per_device, slots)
        return build_system(config), config

    return row


ROWS: dict[str, Callable[..., tuple]] = {
    "toy": _toy_row,
    # XxaCT-NN at paper size (112 M parameters, bf16); the paper trains 4096 per GPU with remat.
    "xxact": _config_row("xxact", 256),
    "cgcnn": _config_row("cgcnn", 256),
    "crabnet": _config_row("crabnet", 512),
    "xrd_transformer": _config_row("xrd_transformer", 512),
    # Multimodal pretraining systems; on the embedded default they use the crystal, XRD and
    # (template text -> hashing stand-in) text modalities that the data provide.
    "xmopa": _config_row("xmopa", 64),
    "multimat": _config_row("multimat", 128),
    "matbind": _config_row("matbind", 256),
}
# (n_warmup, n_repeat, steps per pass) per size: each of n_repeat rounds times one cached and one
# pipeline pass; paper rows on a CPU: 3 rounds x 2 steps (>= 6 timed steps of each kind).
REPEATS = {"small": (2, 7, 8), "paper": (1, 3, 2), "full": (3, 7, 20)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=":small configs, 16 slots (CPU)")
    size.add_argument("--paper", action="store_true",
                      help=f"paper model sizes, {PAPER_SLOTS} slots per device, 3 rounds x 2 steps (CPU)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--slots", type=int, default=None, help="slots per device (default: per size)")
    p.add_argument("--repeats", type=int, default=None, help="rounds of (cached, pipeline) passes")
    p.add_argument("--steps", type=int, default=None, help="steps per timed pass")
    p.add_argument("--delay_ms", type=float, default=0.0,
                   help="sleep this long per batch in the pipeline timing (simulated I/O)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="batches prefetched in the pipeline timing (default: config.data.prefetch or 2; 0 = off)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="config.train.compute_dtype (default: the config's)")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="peak TFLOP/s per device for the MFU column (default: by device kind; CPU none)")
    p.add_argument("--device_resident", choices=("auto", "on", "off"), default=None,
                   help="config.data.device_resident of featurised rows (default: the config's, 'auto')")
    p.add_argument("--train-command", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the training loop itself on the row's data and report its samples/s "
                        "(command_samples_per_s, command_over_cached)")
    args = p.parse_args(argv)
    kind = "small" if args.quick else "paper" if args.paper else "full"
    n_warmup, n_repeat, steps = REPEATS[kind]
    n_repeat, steps = args.repeats or n_repeat, args.steps or steps
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        system, config = ROWS[name](kind, args.slots)
        if args.dtype:
            config.train.compute_dtype = args.dtype
            system, config = ROWS[name](kind, args.slots) if name == "toy" else _rebuild(config)
        if args.device_resident and "device_resident" in config.data:
            config.data.device_resident = args.device_resident
        row = {"row": name, "size": kind,
               **benchmark_system(system, config, n_warmup=n_warmup, n_repeat=n_repeat, steps=steps,
                                  prefetch=args.prefetch, delay_s=args.delay_ms / 1e3, peak=args.peak_tflops)}
        if args.train_command:
            row.update(command_rate(system, config, max(2 * steps * n_repeat, 4) + 1))
            row["command_over_cached"] = row["command_samples_per_s"] / row["samples_per_s"]
        row["row_wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return rows


def _rebuild(config):
    from mmjax.systems import build_system

    return build_system(config), config


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
