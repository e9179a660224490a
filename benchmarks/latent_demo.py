"""E5 latent analysis of TRAINED crystal embeddings of held-out perovskites (XxaCT-NN Fig. 2, MatBind Fig. 3/6).

    python benchmarks/latent_demo.py --quick                 # trains a tiny model on 400 perovskites (< 3 min)
    python benchmarks/latent_demo.py --embeddings benchmarks/results/demo_retrieval/perovskites/embeddings.npz
    nice -n 19 python benchmarks/latent_demo.py              # trains the full retrieval-demo model first

Embeddings: the crystal-hub latents of `retrieval_demo.train_perovskites` (MatBind hub-and-spoke on
Castelli perovskites; the CDVAE ids of ../shared/data/perovskites), or the ``embeddings.npz`` a
retrieval-demo run wrote (``--embeddings``, same materials and split). Only the HELD-OUT
materials are analysed (the model never saw them; no label was ever used in training).

* PCA map coloured by crystal system (spglib, symprec 0.1 Å, from the featuriser), by the heat
  of formation ``heat_ref`` (eV per 5-atom cell, ../shared/data/perovskites/labelled.csv.gz; only
  the labelled held-out materials) and by the Goldschmidt tolerance factor
  (`mmjax.eval.tolerance`, Shannon radii; materials without a charge-balanced assignment left out).
* Silhouette scores (euclidean, on the full embedding) per crystal system, beside the same
  score with the labels shuffled (chance level, mean of 5 permutations).
* MatBind Fig. 3: KDE overlap of within-group cosine similarities, materials inside the
  perovskite tolerance window vs. the rest (among those with a tolerance factor), beside the
  overlap for a random group of the same size (chance: ~1).

Outputs under ``--out`` (default benchmarks/results/demo_latent[_quick]/): ``latent.json`` and the
PNGs of `mmjax.eval.latent.evaluate_latent`, plus ``latent_demo.json`` (counts, chance levels,
settings).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import retrieval_demo as rd  # noqa: E402

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def perovskite_labels(ids, column: str = "heat_ref") -> np.ndarray:
    """float64 [len(ids)]: ``column`` of labelled.csv.gz by material id (NaN when unlabelled)."""
    import pandas as pd

    frame = pd.read_csv(rd.PEROVSKITE_LABELS, usecols=["material_id", column], dtype={"material_id": str})
    table = dict(zip(frame["material_id"], frame[column].astype(float)))
    return np.asarray([table.get(str(i), np.nan) for i in ids], np.float64)


def perovskite_tolerance(ids) -> dict:
    """`mmjax.eval.tolerance.tolerance_factors` of the perovskites ``ids`` (POSCARs parsed here)."""
    from pymatgen.io.vasp import Poscar

    from mmjax.eval.tolerance import tolerance_factors

    with gzip.open(rd.PEROVSKITES, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    structures = [Poscar.from_str(doc[str(i)]["poscar"]).structure for i in ids]
    return tolerance_factors(structures, [str(i) for i in ids])


def shuffled_silhouette(x: np.ndarray, labels: np.ndarray, repeats: int = 5, seed: int = 0) -> float:
    """Mean silhouette score with the labels randomly permuted (``repeats`` seeded permutations)."""
    from mmjax.eval.latent import silhouette_score

    rng = np.random.default_rng(seed)
    return float(np.mean([silhouette_score(x, rng.permutation(labels)) for _ in range(repeats)]))


def random_group_overlap(x: np.ndarray, n_group: int, seed: int = 0) -> float:
    """KDE overlap of within-group cosine similarities for a random group of ``n_group`` rows vs. the rest."""
    from mmjax.eval.latent import group_similarity_overlap

    group = np.zeros(len(x), bool)
    group[np.random.default_rng(seed).choice(len(x), size=n_group, replace=False)] = True
    return float(group_similarity_overlap(x, group)["overlap"])


def analyse(emb: np.ndarray, crystal_system: np.ndarray, heat: np.ndarray, tol: dict, out: pathlib.Path) -> dict:
    """E5 on embeddings ``emb`` [N, d] with labels aligned by row; returns the JSON document."""
    from mmjax.eval.latent import evaluate_latent, plot_map, embed_2d

    cs = np.asarray(crystal_system, np.int64)
    ok_cs = cs >= 0
    res, table = evaluate_latent(emb[ok_cs], out, crystal_system=cs[ok_cs], class_names=CRYSTAL_SYSTEMS,
                                 properties={"heat_ref_eV_per_cell": heat[ok_cs]})
    xy = embed_2d(emb)
    valid = np.asarray(tol["valid"], bool)
    if valid.sum() >= 3:
        plot_map(xy[valid], tol["t"][valid], out / "latent_pca_tolerance_factor.png", "Goldschmidt tolerance factor",
                 False)
    doc = {"latent": res, "n": int(len(emb)), "n_with_crystal_system": int(ok_cs.sum()),
           "crystal_system_counts": {CRYSTAL_SYSTEMS[int(k)]: int(v) for k, v in zip(*np.unique(cs[ok_cs], return_counts=True))},
           "n_with_heat_ref": int(np.isfinite(heat).sum()), "n_with_tolerance_factor": int(valid.sum()),
           "tolerance_errors": len(tol["errors"])}
    if len(np.unique(cs[ok_cs])) >= 2:
        doc["silhouette_shuffled_labels"] = shuffled_silhouette(emb[ok_cs], cs[ok_cs])
    group = np.asarray(tol["is_perovskite"], bool)[valid]
    if 3 <= group.sum() <= len(group) - 3:
        from mmjax.eval.latent import group_similarity_overlap

        ov = group_similarity_overlap(emb[valid], group)
        doc["tolerance_window_overlap"] = {k: v for k, v in ov.items() if not k.startswith("sims_")}
        doc["tolerance_window_overlap_random_group"] = random_group_overlap(emb[valid], int(group.sum()))
    if np.isfinite(heat).sum() >= 3:
        # how much of the heat of formation a linear read-out of the 2-D map carries (R^2), for the table
        ok = np.isfinite(heat)
        a = np.c_[xy[ok], np.ones(ok.sum())]
        coef, *_ = np.linalg.lstsq(a, heat[ok], rcond=None)
        resid = heat[ok] - a @ coef
        doc["heat_ref_r2_from_pca2"] = float(1.0 - resid.var() / heat[ok].var())
    doc["table"] = table
    return doc


def format_summary(doc: dict) -> str:
    from mmjax.eval.report import format_table

    sil = doc["latent"].get("silhouette", {})
    rows = [{"quantity": f"silhouette[{k}] (crystal system)", "trained": v} for k, v in sil.items()]
    if "silhouette_shuffled_labels" in doc:
        rows.append({"quantity": "silhouette, shuffled labels (chance)", "trained": doc["silhouette_shuffled_labels"]})
    if "tolerance_window_overlap" in doc:
        o = doc["tolerance_window_overlap"]
        rows.append({"quantity": f"KDE overlap, tolerance window ({o['n_group']}) vs rest ({o['n_rest']})",
                     "trained": o["overlap"]})
        rows.append({"quantity": "KDE overlap, random group of that size (chance)",
                     "trained": doc["tolerance_window_overlap_random_group"]})
    if "heat_ref_r2_from_pca2" in doc:
        rows.append({"quantity": f"R^2 of heat_ref from PCA-2 (n={doc['n_with_heat_ref']})",
                     "trained": doc["heat_ref_r2_from_pca2"]})
    rows.append({"quantity": "PCA explained variance (2 comps)",
                 "trained": float(np.sum(doc["latent"].get("explained_variance_ratio", [np.nan])))})
    return format_table(rows, ["quantity", "trained"], digits=3)


def main(argv=None) -> int:
    from mmjax.eval.fit import command_line, hardware_description
    from mmjax.eval.report import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 perovskites, tiny model, 60 steps")
    ap.add_argument("--embeddings", default="", help="perovskites/embeddings.npz of a retrieval_demo run")
    ap.add_argument("--n-perovskites", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not rd.PEROVSKITES.exists():
        print(f"{rd.PEROVSKITES} not found", file=sys.stderr)
        return 1
    q = args.quick
    out = pathlib.Path(args.out or rd.DEFAULT_OUT / ("demo_latent_quick" if q else "demo_latent"))
    command = command_line(argv)
    hardware = hardware_description()
    print(f"command: {command}\nhardware: {json.dumps(hardware)}")
    t0 = time.time()
    if args.embeddings:
        run = rd.load_embeddings(args.embeddings)
        source = f"embeddings from {args.embeddings}"
    else:
        n = args.n_perovskites or (400 if q else 4000)
        cache = pathlib.Path(args.cache or rd.DEFAULT_CACHE / f"n{n}-s{args.seed}")
        run = rd.train_perovskites(n, args.steps or (60 if q else 2000), args.batch_size or (32 if q else 128), args.lr,
                                   args.test_fraction, args.seed, cache, args.workers, small=q)
        source = "trained here (retrieval_demo.train_perovskites)"
    test = run["test_idx"]
    ids = np.asarray(run["ids"])[test]
    emb = np.asarray(run["emb"]["crystal"])[test]
    doc = analyse(emb, np.asarray(run["crystal_system"])[test], perovskite_labels(ids), perovskite_tolerance(ids), out)
    print(f"\nlatent analysis of trained crystal embeddings, {len(ids)} held-out perovskites ({source})\n"
          f"{format_summary(doc)}")
    write_json(out / "latent_demo.json", {"command": command, "hardware": hardware, "source": source,
                                          "n_train": int(len(run["train_idx"])), **doc,
                                          "wall_s": round(time.time() - t0, 1)})
    print(f"total wall {time.time() - t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
