"""Loss-kernel benchmark: TensorCLIP naive vs chunked, InfoNCE and Barlow Twins (E6 / O3 / O9).

For every configuration it AOT-compiles ``value_and_grad`` (gradients w.r.t. the embeddings, as
in training), reads XLA's memory analysis (temp + argument + output bytes: the analysed
requirement), and -- when that fits the memory budget -- times the compiled function: median of
``--repeats`` runs after one warm-up, compile excluded. The naive TensorCLIP forms B^3 floats
(B = 2048 -> 32 GiB for one copy), so beyond the budget it is compiled for analysis only and
reported as skipped with the reason.

    .venv/bin/python benchmarks/losses.py --quick        # seconds: small sizes, 3 repeats
    .venv/bin/python benchmarks/losses.py                # full table (minutes on 2 CPU cores)

Prints a table (and ``--json PATH`` writes the rows). Numbers are noisy on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mmjax.objectives import barlow_twins, info_nce, tensor_clip  # noqa: E402

GIB = 1024**3


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * GIB


def analysed_bytes(compiled) -> int | None:
    """temp + argument + output bytes from XLA's memory analysis (None if unavailable)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if m is None:
        return None
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def bench(name, loss_fn, n_args, batch, dim, repeats, budget_bytes, max_seconds):
    """Compile value_and_grad(loss_fn) at [batch, dim] inputs; time it if it fits the budget."""
    rng = np.random.default_rng(0)
    args = [jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32) for _ in range(n_args)]
    mask = jnp.asarray(rng.random(batch) > 0.1)
    f = jax.jit(jax.value_and_grad(lambda *zs: loss_fn(*zs, mask), argnums=tuple(range(n_args))))
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    need = analysed_bytes(compiled)
    row = {"loss": name, "B": batch, "D": dim, "compile_s": round(compile_s, 2),
           "analysed_GiB": None if need is None else round(need / GIB, 3)}
    if need is not None and need > budget_bytes:
        row["status"] = f"skipped: needs {need / GIB:.1f} GiB > budget {budget_bytes / GIB:.1f} GiB"
        return row
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))  # warm-up (AOT-compiled: no compile inside)
    times = [time.perf_counter() - t0]
    if times[0] <= max_seconds / 4:  # fast config: discard the warm-up and repeat
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
            if sum(times) > max_seconds:
                break
    # else: slow config, the single (already compiled) first run is the measurement
    row["median_ms"] = round(1e3 * statistics.median(times), 2)
    row["runs"] = len(times)
    row["status"] = "ok"
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes only (CI smoke run)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=16, help="TensorCLIP chunk size (rows per step)")
    p.add_argument("--budget-gib", type=float, default=None,
                   help="skip running configs whose analysed memory exceeds this "
                        "(default: half the physical memory)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop repeating a config after this much run time")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--tc-sizes", default=None, help="comma-separated TensorCLIP batch sizes")
    p.add_argument("--pair-sizes", default=None, help="comma-separated InfoNCE/Barlow batch sizes")
    a = p.parse_args(argv)
    repeats = a.repeats or 3
    budget = int((a.budget_gib or _total_memory_bytes() / GIB / 2) * GIB)
    if a.quick:
        tc_sizes, pair_sizes = (64, 128), (256, 512)
    else:
        tc_sizes, pair_sizes = (128, 256, 512, 1024, 2048), (256, 512, 1024, 2048, 4096)
    if a.tc_sizes is not None:
        tc_sizes = tuple(int(x) for x in a.tc_sizes.split(",") if x)
    if a.pair_sizes is not None:
        pair_sizes = tuple(int(x) for x in a.pair_sizes.split(",") if x)
    print(f"backend={jax.default_backend()} devices={len(jax.devices())} D={a.dim} "
          f"chunk={a.chunk} budget={budget / GIB:.1f} GiB repeats={repeats}", flush=True)
    tau = 0.1
    configs = []
    for b in tc_sizes:
        configs.append(("tensor_clip naive", lambda x, y, z, m: tensor_clip(x, y, z, tau, m), 3, b))
        configs.append((f"tensor_clip chunk={a.chunk}",
                        lambda x, y, z, m: tensor_clip(x, y, z, tau, m, chunk_size=a.chunk), 3, b))
    for b in pair_sizes:
        configs.append(("info_nce", lambda x, y, m: info_nce(x, y, tau, m), 2, b))
        configs.append(("barlow_twins", lambda x, y, m: barlow_twins(x, y, 0.0051, m), 2, b))
    rows = []
    header = f"{'loss':<22}{'B':>6}{'compile s':>11}{'analysed GiB':>14}{'median ms':>11}  status"
    print(header)
    print("-" * len(header))
    for name, fn, n_args, b in configs:
        row = bench(name, fn, n_args, b, a.dim, repeats, budget, a.max_seconds)
        rows.append(row)
        gib = "?" if row["analysed_GiB"] is None else f"{row['analysed_GiB']:.3f}"
        ms = f"{row['median_ms']:.1f}" if "median_ms" in row else "-"
        print(f"{name:<22}{b:>6}{row['compile_s']:>11.2f}{gib:>14}{ms:>11}  {row['status']}",
              flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"process peak RSS: {peak:.2f} GiB")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": rows, "peak_rss_GiB": round(peak, 3)}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
