"""E4 discovery with TRAINED encoders: a held-out DOS queries another modality's embeddings (MultiMat Fig. 3B).

    python benchmarks/discovery_demo.py --quick                       # trains a tiny model (< 3 min)
    python benchmarks/discovery_demo.py --embeddings benchmarks/results/demo_retrieval/multimat/embeddings.npz
    nice -n 19 python benchmarks/discovery_demo.py                    # trains the full MultiMat demo model

MultiMat's discovery task embeds a target DOS and retrieves the nearest *crystals*. The MultiMat
example data (../shared/data/dos) has no crystal structures, so the searched modality here is
the one that exists: the MatBERT text embeddings (100 materials) and the charge densities (100
materials), each through its trained encoder. Queries: every held-out material (never seen in
training) that has a usable DOS. Candidate database: every material (training or held-out) that
has the searched modality AND a DOS (the DOS is only used to score a retrieved candidate, never
to rank it); the query material itself is excluded, so a hit is a *different* material with a
similar DOS. Score (`mmjax.eval.discovery`, MultiMat Eq. 5): best-of-n normalised DOS MAE over
[-5, 5] eV of the n nearest candidates, as n grows, beside the exact random-ranking expectation
and the floor (the best candidate in the pool) from `reference_best_of_n`.

Model: `retrieval_demo.train_multimat` (MultiMat AllPairs CLIP over DOS / text / charge density)
unless ``--embeddings`` gives the ``embeddings.npz`` a retrieval-demo run wrote (same split).
Outputs under ``--out`` (default benchmarks/results/demo_discovery[_quick]/): ``<modality>/discovery.json``
+ ``discovery_nmae.png`` (library), ``discovery_demo.json`` (all curves, counts, settings) and
``discovery_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import retrieval_demo as rd  # noqa: E402

NS = (1, 2, 3, 5, 10, 20)


def discovery_curves(emb: dict, present: dict, dos_on_grid: np.ndarray, grid: np.ndarray, query_idx: np.ndarray,
                     out_dir: pathlib.Path, searched=("text", "charge_density"), ns=NS, query_modality: str = "dos") -> dict:
    """Best-of-n curves for held-out DOS queries against each searched modality.

    emb: {m: [N, d]}; present: {m: bool [N]}; dos_on_grid: [N, G] DOS on ``grid`` (rows without a
    DOS unused); query_idx: rows that may be queries (held-out). Returns {modality: result} with
    the latent curve, the exact random expectation, the floor and the counts.
    """
    from mmjax.eval.discovery import evaluate_discovery, reference_best_of_n

    queries = np.asarray([i for i in query_idx if present[query_modality][i]], np.int64)
    results = {}
    for m in searched:
        pool = np.flatnonzero(np.asarray(present[m], bool) & np.asarray(present[query_modality], bool))
        if len(queries) == 0 or len(pool) < 2:
            results[m] = {"n_queries": int(len(queries)), "n_candidates": int(len(pool)), "skipped": "too few"}
            continue
        pos = {int(r): j for j, r in enumerate(pool)}
        exclude = np.asarray([pos.get(int(q), -1) for q in queries], np.int64)
        res, table = evaluate_discovery(emb[query_modality][queries], emb[m][pool], dos_on_grid[queries],
                                        dos_on_grid[pool], grid, out_dir / m, ns, exclude, random_seed=0)
        ref = reference_best_of_n(dos_on_grid[queries], dos_on_grid[pool], grid, res["n"], exclude)
        results[m] = {**res, "random_expected_mean_nmae": ref["random_mean_nmae"],
                      "floor_mean_nmae": ref["floor_mean_nmae"], "n_queries": int(len(queries)),
                      "n_candidates": int(len(pool)), "n_queries_with_self_in_pool": int((exclude >= 0).sum())}
    return results


def format_curves(results: dict) -> str:
    from mmjax.eval.report import format_table

    rows = []
    for m, r in results.items():
        if "skipped" in r:
            rows.append({"searched": m, "n": "-", "latent": None})
            continue
        for j, n in enumerate(r["n"]):
            rows.append({"searched": m, "queries": r["n_targets"], "pool": r["n_candidates"], "n": n,
                         "latent (trained)": r["mean_nmae"][j], "random (exact)": r["random_expected_mean_nmae"][j],
                         "floor": r["floor_mean_nmae"], "latent median": r["median_nmae"][j]})
    return format_table(rows, digits=3)


def plot_curves(results: dict, path: pathlib.Path) -> None:
    from mmjax.eval.report import new_figure, save_figure

    fig, ax = new_figure()
    for m, r in results.items():
        if "skipped" in r:
            continue
        line, = ax.plot(r["n"], r["mean_nmae"], "o-", label=f"DOS -> {m} (trained)")
        ax.plot(r["n"], r["random_expected_mean_nmae"], "--", color=line.get_color(), label=f"{m}: random ranking")
        ax.axhline(r["floor_mean_nmae"], ls=":", color=line.get_color(), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("n nearest candidates")
    ax.set_ylabel("best-of-n normalised DOS MAE, [-5, 5] eV")
    ax.set_title("held-out DOS queries (dotted: best candidate in pool)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None) -> int:
    from mmjax.eval.discovery import dos_grid, resample_dos
    from mmjax.eval.fit import command_line, hardware_description
    from mmjax.eval.report import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model, 40 steps")
    ap.add_argument("--embeddings", default="", help="multimat/embeddings.npz of a retrieval_demo run (skips training)")
    ap.add_argument("--steps", type=int, default=None, help="training updates (default 300; quick 40)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not rd.DATA.is_dir():
        print(f"{rd.DATA} not found", file=sys.stderr)
        return 1
    q = args.quick
    out = pathlib.Path(args.out or rd.DEFAULT_OUT / ("demo_discovery_quick" if q else "demo_discovery"))
    command = command_line(argv)
    hardware = hardware_description()
    print(f"command: {command}\nhardware: {json.dumps(hardware)}")
    t0 = time.time()
    data = rd.load_multimat_example(densities=False)  # only the DOS and the presence masks are needed
    if args.embeddings:
        run = rd.load_embeddings(args.embeddings)
        if list(run["ids"]) != list(data["ids"]):
            raise ValueError(f"{args.embeddings}: ids differ from the MultiMat example's 408 ids")
        source = f"embeddings from {args.embeddings}"
    else:
        run = rd.train_multimat(args.steps or (40 if q else 300), args.batch_size or (32 if q else 128), args.lr,
                                args.test_fraction, args.seed, small=q)
        source = "trained here (retrieval_demo.train_multimat)"
    grid = dos_grid((-5.0, 5.0), 1001)
    dos_on_grid = resample_dos(*data["dos_raw"], grid)
    present = dict(run["present"])
    present["dos"] = present["dos"] & data["present"]["dos"]  # DOS the featuriser accepted
    results = discovery_curves(run["emb"], present, dos_on_grid, grid, run["test_idx"], out)
    table = format_curves(results)
    print(f"\nDOS -> other modality discovery on held-out queries ({source}); no crystal structures exist for "
          f"these materials, so the searched modalities are text (MatBERT) and charge density\n{table}")
    plot_curves(results, out / "discovery_curves.png")
    write_json(out / "discovery_demo.json", {
        "command": command, "hardware": hardware, "source": source, "window_eV": [-5.0, 5.0],
        "query": "held-out DOS", "results": results, "dos_skipped": data["skipped"],
        "train_history": run.get("history"), "wall_s": round(time.time() - t0, 1)})
    print(f"total wall {time.time() - t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
