"""E3 retrieval demo on the MultiMat example data (DOS + MatBERT text embeddings + charge density).

    python benchmarks/retrieval_demo.py                 # all 408 ids of dos_mp408
    python benchmarks/retrieval_demo.py --quick         # first 150 ids (sorted), fewer repeats
    python benchmarks/retrieval_demo.py --out runs/retrieval_demo

Materials are the 408 MP ids of ../shared/data/dos/dos_mp408.npz (312 with a DOS); the MatBERT
text embeddings (100 ids) and charge densities (100 ids) cover disjoint subsets, so presence
masks are genuinely partial and text<->charge-density has no common material (n = 0).

Encoders are UNTRAINED placeholders: each modality's raw input (DOS resampled onto 601 points
over [-10, 10] eV, the 768-d text embedding, the charge density mean-pooled to 8³ and log1p'd)
goes through a fixed Gaussian random projection to a shared 128-d space. Cross-modal retrieval
is therefore at chance level (expected recall@k ≈ k / n); the table prints that chance level
beside the measurement. The lead swaps in trained encoders by replacing ``embed_modalities``.
Timing: median wall time of the all-pairs evaluation over repeats (loading excluded).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "dos"


def load_modalities(limit: int | None = None) -> tuple[np.ndarray, dict, dict]:
    """(ids [N], raw inputs per modality (rows aligned with ids), presence masks)."""
    from mmjax.eval.discovery import resample_dos

    dos = np.load(DATA / "dos_mp408.npz")
    ids = np.asarray(dos["material_ids"])
    if limit is not None:
        ids = ids[:limit]
    n = len(ids)
    row = {m: i for i, m in enumerate(ids)}
    grid = np.linspace(-10.0, 10.0, 601)
    exists = dos["exists"][:n].astype(bool)
    raw = {"dos": np.zeros((n, grid.size)), "text": np.zeros((n, 768)), "charge_density": np.zeros((n, 512))}
    raw["dos"][exists] = resample_dos(dos["energies"][:n][exists], dos["densities"][:n][exists], grid)
    present = {"dos": exists, "text": np.zeros(n, bool), "charge_density": np.zeros(n, bool)}
    txt = np.load(DATA / "text_embeds_matbert_mp100.npz")
    for mid, e in zip(txt["material_ids"], txt["embeddings"]):
        if mid in row:
            raw["text"][row[mid]] = e
            present["text"][row[mid]] = True
    cd = np.load(DATA / "charge_density_mp.npz")
    for mid, g in zip(cd["material_ids"], cd["grids"]):
        if mid in row:
            pooled = g.reshape(8, 4, 8, 4, 8, 4).mean(axis=(1, 3, 5))
            raw["charge_density"][row[mid]] = np.log1p(np.maximum(pooled, 0.0)).ravel()
            present["charge_density"][row[mid]] = True
    return ids, raw, present


def embed_modalities(raw: dict, dim: int = 128, seed: int = 0) -> dict:
    """Untrained baseline encoders: a fixed Gaussian random projection per modality."""
    rng = np.random.default_rng(seed)
    return {m: x @ rng.normal(size=(x.shape[1], dim)) / np.sqrt(x.shape[1]) for m, x in raw.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="first 150 ids, 3 timing repeats")
    ap.add_argument("--out", default=None, help="output folder for retrieval.json + heatmap (default: a temp dir)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"data folder {DATA} not found", file=sys.stderr)
        return 1
    from mmjax.eval.retrieval import DEFAULT_KS, all_pairs_retrieval, evaluate_retrieval

    ids, raw, present = load_modalities(150 if args.quick else None)
    emb = embed_modalities(raw)
    out = args.out
    if out is None:
        import tempfile

        out = tempfile.mkdtemp(prefix="retrieval_demo_")
    results, table = evaluate_retrieval(emb, present, out, model_name="random-projection (untrained)")
    print(f"materials: {len(ids)}; present: " + ", ".join(f"{m}={int(p.sum())}" for m, p in present.items()))
    print(table)
    print("chance level (k / n):")
    for pair, r in results.items():
        if r["n"]:
            print(f"  {pair:28s} n={r['n']:4d}  " + "  ".join(f"R@{k}={min(k / r['n'], 1):.3f}" for k in DEFAULT_KS))
    repeats = args.repeats or (3 if args.quick else 7)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        all_pairs_retrieval(emb, present)
        times.append(time.perf_counter() - t0)
    print(f"all-pairs retrieval: median {statistics.median(times) * 1e3:.1f} ms over {repeats} repeats; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
