"""Featurisation speed: neighbour graphs, XRD smearing, full XRD patterns, symmetry labels.

    python benchmarks/featurize.py            # full: 2000 perovskites, 5 repeats
    python benchmarks/featurize.py --quick    # 200 perovskites, 3 repeats

Reads the first N Castelli perovskites of ../shared/data/perovskites/structures_all.json.gz
(and, for the XRD rows, the first 200 (quick 50) MP-40 test structures of ../shared/data/mp40).
XRD is timed for both peak backends: "fast" (vectorised NumPy) and "pymatgen" (reference).
Structures are parsed before timing; every number is the median over repeats (each repeat
processes the whole set; imports and warm-up excluded). Graph throughput is also measured with
a 2-process pool (per-process rate = total / workers). Targets (SPEC / task): >= 1,400 graphs/s on
2 cores, >= 2,000 smeared patterns/s per core at 4250 points.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import pathlib
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "perovskites" / "structures_all.json.gz"
MP40 = ROOT.parent / "shared" / "data" / "mp40" / "mp40_test.csv.gz"

_STRUCTURES: list = []


def load_structures(n: int):
    from pymatgen.core import Structure

    with gzip.open(DATA, "rt") as f:
        data = json.load(f)
    ids = sorted(data, key=int)[:n]
    return [Structure.from_str(data[i]["poscar"], fmt="poscar") for i in ids]


def load_mp40(n: int):
    """First n MP-40 test structures (file order), parsed from their CIFs."""
    import pandas as pd
    from pymatgen.core import Structure

    cifs = pd.read_csv(MP40).cif[:n]
    return [Structure.from_str(c, fmt="cif") for c in cifs]


def graph_one(structure) -> int:
    from mmjax.features import gaussian_expansion, neighbor_graph

    g = neighbor_graph(structure, 8.0, 12)
    e = gaussian_expansion(g["distances"])
    return e.shape[0]


def _init_worker(n: int):
    global _STRUCTURES
    warnings.simplefilter("ignore")
    _STRUCTURES = load_structures(n)
    graph_one(_STRUCTURES[0])


def _graph_chunk(bounds) -> int:
    lo, hi = bounds
    return sum(graph_one(s) for s in _STRUCTURES[lo:hi])


def median_rate(fn, n_items: int, repeats: int) -> tuple[float, float]:
    """(items per wall-clock second, items per CPU second of this process), medians over repeats.

    The CPU-time rate is what one uncontended core would do; it is meaningless for the pool rows
    (the work happens in the workers), which report wall-clock rates only.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return n_items / statistics.median(wall), n_items / max(statistics.median(cpu), 1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 structures, 3 repeats")
    parser.add_argument("-n", type=int, default=None, help="number of perovskites (default 2000, quick 200)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)
    repeats = args.repeats or (3 if args.quick else 5)
    warnings.simplefilter("ignore")

    from mmjax.features import smear_pattern, symmetry_labels, two_theta_grid, xrd_pattern, xrd_peaks

    structures = load_structures(n)
    rows = []

    graph_one(structures[0])
    rate, cpu = median_rate(lambda: [graph_one(s) for s in structures], n, repeats)
    rows.append(("neighbor_graph(8 Å, 12) + gaussian(41)", "1 process", rate, rate, cpu))

    if args.workers > 1:
        chunks = [(lo, min(lo + 50, n)) for lo in range(0, n, 50)]
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init_worker, initargs=(n,)) as pool:
            pool.map(_graph_chunk, chunks[: args.workers])  # warm-up
            rate, _ = median_rate(lambda: pool.map(_graph_chunk, chunks), n, repeats)
        rows.append(("neighbor_graph(8 Å, 12) + gaussian(41)", f"pool x{args.workers}", rate,
                     rate / args.workers, float("nan")))

    n_xrd = min(n, 100 if args.quick else 300)
    peaks = [xrd_peaks(s) for s in structures[:n_xrd]]
    grid = two_theta_grid(5.0, 90.0, 0.02)

    def smear_all():
        for x, y in peaks:
            p = smear_pattern(x, y, grid, 0.1)
            p *= 100.0 / p.max()

    smear_all()
    rate, cpu = median_rate(smear_all, n_xrd, repeats)
    rows.append((f"smear_pattern 4250 pts (mean {np.mean([len(x) for x, _ in peaks]):.0f} peaks)",
                 "1 process", rate, rate, cpu))

    xrd_cpu = {}
    for backend in ("fast", "pymatgen"):
        xrd_pattern(structures[0], backend=backend)
        rate, cpu = median_rate(lambda: [xrd_pattern(s, backend=backend) for s in structures[:n_xrd]],
                                n_xrd, repeats)
        rows.append((f"xrd_pattern backend={backend} (CuKa + smearing)", "1 process", rate, rate, cpu))
        xrd_cpu[("perovskites", backend)] = cpu

    if MP40.exists():  # larger, lower-symmetry cells (2-40 sites) from MP-40
        mixed = load_mp40(50 if args.quick else 200)
        for backend in ("fast", "pymatgen"):
            xrd_pattern(mixed[0], backend=backend)
            rate, cpu = median_rate(lambda: [xrd_pattern(s, backend=backend) for s in mixed],
                                    len(mixed), repeats)
            rows.append((f"xrd_pattern backend={backend}, MP-40 (mean {np.mean([len(s) for s in mixed]):.0f}"
                         " sites)", "1 process", rate, rate, cpu))
            xrd_cpu[("mp40", backend)] = cpu

    n_sym = min(n, 100 if args.quick else 300)
    rate, cpu = median_rate(lambda: [symmetry_labels(s) for s in structures[:n_sym]], n_sym, repeats)
    rows.append(("symmetry_labels (symprec 0.1)", "1 process", rate, rate, cpu))

    print(f"featurisation speed, {n} Castelli perovskites (5 atoms), median of {repeats} repeats")
    print(f"{'task':52s} {'mode':10s} {'items/s':>10s} {'per core':>10s} {'per CPU-s':>10s}")
    for task, mode, total, per_core, cpu in rows:
        print(f"{task:52s} {mode:10s} {total:10.0f} {per_core:10.0f} {cpu:10.0f}")
    for data in ("perovskites", "mp40"):
        if (data, "fast") in xrd_cpu:
            fast, ref = xrd_cpu[(data, "fast")], xrd_cpu[(data, "pymatgen")]
            print(f"xrd_pattern {data}: fast {1e3 / fast:.3f} ms, pymatgen {1e3 / ref:.3f} ms per pattern "
                  f"(CPU), speed-up {fast / ref:.1f}x")


if __name__ == "__main__":
    main()
