"""The prepared accelerator check: one command, one JSON file, README rows.

    python benchmarks/device_check.py                       # on a GPU machine (<= 8 min on one H100/H200)
    python benchmarks/device_check.py --cpu-smoke --out DIR   # the same code at tiny sizes on CPU (< 5 min)

Writes ``<out>/<device>.json`` (default ``benchmarks/results/device_check/``) and ``<device>.md``
(README rows), with one entry per key; a section that fails records its error and the others still
run; sections are skipped (recorded as such) once ``--budget-min`` minutes have passed:

* ``xxact_paper``: XxaCT-NN at paper size (configs/xxact.py, bf16 compute), 256 slots per device
  on the embedded default: samples/s, TFLOP/s per device, MFU against the device's peak
  (`throughput.peak_tflops`; H100/H200 989 dense bf16). Target: >= 20,000 samples/s on one H200 with
  MFU >= 40 % (the paper's rate is ~2,000 samples/s per H100).
* ``cgcnn_paper``: CGCNN at paper size (64/3/128; the rebuilt ``cgcnn92`` table, same arithmetic as
  CGCNN's atom_init, so no data folder is needed), structures/s at batch 256 and 1,024.
* ``matbind_paper``: MatBind at paper size, 256 slots.
* ``tensorclip_4096``: chunked TensorCLIP (`mmjax.objectives.tensorclip`, chunk 256) at B = 4,096,
  D = 128: value + gradient time (median of 5, compile excluded) and peak device memory.
* ``segment_pooling``: per-edge -> per-node (12 edges per node) and per-node -> per-graph (5 nodes
  per graph) sums with `mmjax.nn.graph.pool_sum` methods segment / sorted / onehot: forward +
  gradient time (median of 7) and the largest difference from "segment". The fastest method per
  pattern is the value to give the encoders' ``pooling`` field on that device.

``--cpu-smoke``: the :small configs on 48 materials at 16 / 32 slots (float32: bf16 is emulated on
CPU), B = 128 TensorCLIP, small pooling sizes, one short timing round each. A test runs it (tests/test_device_check.py); the numbers are not targets.

On a bare JAX GPU image: ``bash ../shared/tools/device-wheels.sh`` (outside the device machine) fetches
the wheels it lacks into an ignored folder; install them with ``pip install --no-index
--find-links <folder> -e .``, then run the command above (first call ~3-5 min including compiles).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# cheapest first, so a short budget still measures most keys
KEYS = ("segment_pooling", "tensorclip_4096", "cgcnn_paper", "matbind_paper", "xxact_paper")


def _timed(fn, *args, repeats: int):
    """Median seconds of ``fn(*args)`` (blocked), after one compile/warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes():
    import jax

    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _row(name: str, smoke: bool, slots: int, dtype: str | None = None, element_table: str | None = None):
    from throughput import REPEATS, benchmark_system, row_config

    from mmjax.systems import build_system

    config = row_config(name, "small" if smoke else "full", slots, slots)
    if smoke:
        config.data.num_materials = 48  # featurised in a few seconds
    if dtype and not smoke:  # bf16 is emulated on CPU (slow to compile, not what a GPU runs)
        config.train.compute_dtype = dtype
    if element_table is not None and "element_table" in config.system.encoder:
        config.system.encoder.element_table = element_table
    n_warmup, n_repeat, steps = (1, 2, 2) if smoke else REPEATS["full"]
    row = benchmark_system(build_system(config), config, n_warmup=n_warmup, n_repeat=n_repeat, steps=steps)
    keep = ("system", "device_kind", "devices", "params", "compute_dtype", "samples_per_step", "step_time_ms",
            "samples_per_s", "tflops_per_device", "mfu", "gflop_per_sample", "compile_s", "recompiles", "feed")
    return {k: row.get(k) for k in keep}


def xxact_paper(smoke):
    return _row("xxact", smoke, 16 if smoke else 256, dtype="bfloat16")


def cgcnn_paper(smoke):
    return {f"batch_{b}": _row("cgcnn", smoke, b, element_table="cgcnn92")
            for b in ((16, 32) if smoke else (256, 1024))}


def matbind_paper(smoke):
    return _row("matbind", smoke, 16 if smoke else 256)


def tensorclip_4096(smoke):
    import jax
    import jax.numpy as jnp

    from mmjax.objectives.tensorclip import tensor_clip

    b, d, chunk = (128, 32, 32) if smoke else (4096, 128, 256)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    a, bb, c = (jax.random.normal(k, (b, d), jnp.float32) for k in keys)
    f = jax.jit(jax.value_and_grad(lambda x, y, z: tensor_clip(x, y, z, 0.07, chunk_size=chunk), argnums=(0, 1, 2)))
    t = _timed(f, a, bb, c, repeats=5)
    out = {"batch": b, "dim": d, "chunk": chunk, "value_and_grad_ms": 1e3 * t, "peak_bytes": _peak_bytes(),
           "loss": float(f(a, bb, c)[0])}
    if smoke:  # the chunked value equals the naive B^3 one
        out["naive_loss"] = float(tensor_clip(a, bb, c, 0.07))
    return out


def segment_pooling(smoke):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmjax.nn.graph import POOLING_METHODS, pool_sum

    n_graph = 64 if smoke else 1024
    n_node = 5 * n_graph
    cases = {"edge_to_node": (12 * n_node, n_node, 64), "node_to_graph": (n_node, n_graph, 64)}
    out = {}
    for name, (n_in, n_out, dim) in cases.items():
        index = jnp.asarray(np.sort(np.random.default_rng(0).integers(0, n_out, n_in)).astype(np.int32))
        x = jax.random.normal(jax.random.PRNGKey(1), (n_in, dim), jnp.float32)
        ref = None
        row = {"rows": n_in, "segments": n_out, "dim": dim}
        for method in POOLING_METHODS:
            f = jax.jit(jax.value_and_grad(lambda x_, m=method: jnp.sum(jnp.sin(pool_sum(x_, index, n_out, m)))))
            val = np.asarray(pool_sum(x, index, n_out, method))
            ref = val if ref is None else ref
            row[method] = {"ms": 1e3 * _timed(f, x, repeats=7), "max_abs_diff": float(np.abs(val - ref).max())}
        row["fastest"] = min(POOLING_METHODS, key=lambda m: row[m]["ms"])
        out[name] = row
    return out


SECTIONS = {"xxact_paper": xxact_paper, "cgcnn_paper": cgcnn_paper, "matbind_paper": matbind_paper,
            "tensorclip_4096": tensorclip_4096, "segment_pooling": segment_pooling}


def readme_rows(result: dict) -> list[str]:
    """Markdown table rows (one per measured quantity) for the README."""
    dev, date = result["device"], result["date"]
    rows = []

    def add(what, value):
        rows.append(f"| {date} | {dev} | {what} | {value} |")

    x = result.get("xxact_paper") or {}
    if "samples_per_s" in x:
        add("XxaCT-NN paper, bf16", f"{x['samples_per_s']:,.0f} samples/s, {x.get('tflops_per_device') or 0:.1f} "
            f"TFLOP/s, MFU {x.get('mfu') if x.get('mfu') is not None else 'n/a'}")
    for k, v in (result.get("cgcnn_paper") or {}).items():
        if isinstance(v, dict) and "samples_per_s" in v:
            add(f"CGCNN paper, {k.replace('_', ' ')}", f"{v['samples_per_s']:,.0f} structures/s")
    m = result.get("matbind_paper") or {}
    if "samples_per_s" in m:
        add("MatBind paper", f"{m['samples_per_s']:,.0f} samples/s")
    t = result.get("tensorclip_4096") or {}
    if "value_and_grad_ms" in t:
        add(f"TensorCLIP B={t['batch']} chunk {t['chunk']}", f"{t['value_and_grad_ms']:.1f} ms, peak "
            f"{t['peak_bytes'] / 2**30:.2f} GiB" if t.get("peak_bytes") else f"{t['value_and_grad_ms']:.1f} ms")
    for k, v in (result.get("segment_pooling") or {}).items():
        if isinstance(v, dict) and "fastest" in v:
            add(f"pooling {k}", ", ".join(f"{m} {v[m]['ms']:.2f} ms" for m in ("segment", "sorted", "onehot"))
                + f" (fastest {v['fastest']})")
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (< 5 min), same keys")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "device_check"))
    ap.add_argument("--only", default=",".join(KEYS), help="comma-separated subset of the keys")
    ap.add_argument("--budget-min", type=float, default=8.0, help="skip the remaining sections after this")
    args = ap.parse_args(argv)
    import jax

    from mmjax.eval.fit import command_line, hardware_description

    t_start = time.time()
    device = jax.devices()[0].device_kind.replace(" ", "_").replace("/", "_")
    result = {"device": jax.devices()[0].device_kind, "date": datetime.date.today().isoformat(),
              "cpu_smoke": bool(args.cpu_smoke), "hardware": hardware_description(), "command": command_line(argv)}
    for key in args.only.split(","):
        if key not in SECTIONS:
            ap.error(f"unknown key {key!r}; choose from {KEYS}")
        if (time.time() - t_start) / 60 > args.budget_min:
            result[key] = {"skipped": f"time budget of {args.budget_min} min used up"}
            continue
        t0 = time.time()
        try:
            result[key] = SECTIONS[key](args.cpu_smoke)
        except Exception as err:  # one failing section must not lose the others' numbers
            result[key] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
        result[key]["section_s"] = round(time.time() - t0, 1)
        print(f"{key}: {json.dumps(result[key])}", flush=True)
    result["wall_s"] = round(time.time() - t_start, 1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{device}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = readme_rows(result)
    (out / f"{device}.md").write_text("| date | device | check | result |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"wrote {out / (device + '.json')} in {result['wall_s']} s")
    return result


if __name__ == "__main__":
    main()
