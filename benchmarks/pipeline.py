"""Featurisation and batching throughput on the Castelli perovskites (18,928 five-atom cells).

(a) featurise structures_all.json.gz (CGCNN graph 8 Å x 12 + XRD 5-90° / 0.02° + composition +
    symmetry labels; POSCARs parsed inside the workers) into a store, wall time;
(b) read the store back into padded Batches (crystal + xrd + composition, B slots): batches/s and
    materials/s, median of repeats, the first batch (warm-up) excluded; column-wise reads (the
    default) and the per-record assembly they replace.

    python benchmarks/pipeline.py                 # full: all 18,928 structures, 2 workers
    python benchmarks/pipeline.py --quick         # 1,000 structures, fewer repeats
    python benchmarks/pipeline.py --store DIR     # (b) only, on an existing store
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time



def load_items(data: pathlib.Path, limit: int | None):
    """[(id, poscar_text, targets)] in file order; labels from labelled.csv.gz (NaN-free dicts)."""
    with gzip.open(data / "perovskites" / "structures_all.json.gz", "rt") as f:
        doc = json.load(f)
    labels = {}
    with gzip.open(data / "perovskites" / "labelled.csv.gz", "rt") as f:
        for row in csv.DictReader(io.StringIO(f.read())):
            labels[row["material_id"]] = {"heat_all": float(row["heat_all"]), "dir_gap": float(row["dir_gap"])}
    items = [(rid, entry["poscar"], labels.get(rid, {})) for rid, entry in doc.items()]
    return items[:limit] if limit else items


def bench_featurize(items, out: pathlib.Path, workers: int) -> float:
    from mmjax.data.featurize import featurize_dataset, material_from_text
    from mmjax.data.spec import FeatureSpec

    spec = FeatureSpec(graph="cgcnn", xrd=True, composition=True, symmetry=True, targets=("heat_all", "dir_gap"))
    t0 = time.perf_counter()
    m = featurize_dataset(items, spec, out, num_workers=workers, parse=material_from_text, chunk_size=64,
                          sources=["shared/data/perovskites/structures_all.json.gz"], command=" ".join(sys.argv))
    wall = time.perf_counter() - t0
    print(f"(a) featurised {m.counts['written']} / {m.counts['input']} structures "
          f"({m.counts['skipped']} skipped) with {workers} workers in {wall:.1f} s "
          f"= {m.counts['input'] / wall:.0f} structures/s")
    return wall


def bench_batches(store_dir: pathlib.Path, batch_size: int, devices: int, max_batches: int, repeats: int,
                  vectorized: bool = True):
    """Batches/s and materials/s of `make_batches`; ``vectorized=False``: the per-record assembly
    (the tests' reference, ``tests/reference_assembly.py``)."""
    from mmjax.data.pipeline import make_batches
    from mmjax.data.store import Dataset

    per_record = None
    if not vectorized:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
        from reference_assembly import PerRecordBatches as per_record

    ds = Dataset.open(store_dir)
    rates = []
    for r in range(repeats):
        it = make_batches(ds, batch_size, seed=r, num_epochs=None, devices=devices,
                          modalities=["crystal", "xrd", "composition"])
        batches = per_record(it) if per_record else it
        next(batches)  # warm-up (opens memory maps)
        n_mat = 0
        t0 = time.perf_counter()
        for _ in range(max_batches):
            next(batches)
            n_mat += int(it.last_indices.__ge__(0).sum())
        dt = time.perf_counter() - t0
        rates.append((max_batches / dt, n_mat / dt))
    bps = statistics.median(r[0] for r in rates)
    mps = statistics.median(r[1] for r in rates)
    budget = it.assembler.budget
    print(f"(b) B={batch_size} devices={devices} budget/device={budget} "
          f"{'column-wise' if vectorized else 'per-record'}: {bps:.1f} batches/s, "
          f"{mps:.0f} materials/s (median of {repeats} x {max_batches} batches)")
    return bps, mps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 structures, fewer batches")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=pathlib.Path,
                   default=pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--store", type=pathlib.Path, default=None, help="existing store: skip (a)")
    p.add_argument("--out", type=pathlib.Path, default=None, help="where to write the store (default: temp dir)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--keep", action="store_true", help="keep the written store")
    args = p.parse_args(argv)

    tmp = None
    store_dir = args.store
    if store_dir is None:
        items = load_items(args.data, 1000 if args.quick else None)
        if args.out is None:
            tmp = pathlib.Path(tempfile.mkdtemp(prefix="mmjax_bench_store_"))
            store_dir = tmp / "store"
        else:
            store_dir = args.out
        bench_featurize(items, store_dir, args.workers)
    n_batches, repeats = (50, 3) if args.quick else (200, 5)
    for vectorized in (True, False):
        bench_batches(store_dir, args.batch_size, 1, n_batches, repeats, vectorized)
        bench_batches(store_dir, args.batch_size, 2, n_batches, repeats, vectorized)
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp)
    elif tmp is not None:
        print(f"store kept at {store_dir}")


if __name__ == "__main__":
    main()
