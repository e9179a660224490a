"""E3 cross-modal retrieval with TRAINED encoders, scored on HELD-OUT materials (issue #5).

    python benchmarks/retrieval_demo.py --quick                     # smoke test (< 3 min)
    nice -n 19 python benchmarks/retrieval_demo.py                  # full CPU run (see README)
    python benchmarks/retrieval_demo.py --part multimat             # only (b)
    python benchmarks/retrieval_demo.py --n-perovskites 8000 --steps 3000

(a) Perovskites, MatBind-style hub-and-spoke. ``--n-perovskites`` materials drawn (seeded) from
    the 18,928 Castelli cells of ../shared/data/perovskites/structures_all.json.gz are featurised
    once into ``--cache`` (CGCNN graph 8 Å x 12, MatBind pXRD 0-127° at 1°, composition, the
    template description embedded with the offline hashing text stand-in). A random
    ``--test-fraction`` of them is held out (never seen in training). `mmjax.systems.matbind.MatBind`
    (InfoNCE, tau 0.07, mean over spokes) binds the crystal-graph hub to the XRD, composition and
    text spokes with CPU-sized encoders (MatBind GCN, 1-D XRD ResNet, CrabNet, projection heads).
    Retrieval is then scored for EVERY ordered pair on the held-out materials, including the
    spoke<->spoke pairs (xrd/composition/text) that were never trained together.
(b) The MultiMat example data (../shared/data/dos: 312 DOS, 100 MatBERT text embeddings, 100
    charge densities; text and charge density are disjoint sets). There are no crystal
    structures, so the library's featuriser (which needs a structure or composition per record)
    does not apply: the arrays go through the library's own featurisers (`dos_features` onto
    [-10, 10] eV, `charge_density_features` with mean normalisation) into Batches built here,
    and `mmjax.systems.multimat.MultiMat` (AllPairs CLIP, tau 0.2, DOS transformer, text MLP,
    3-D ResNeXt) trains with the library engine, every loss term masked by modality presence.
    Pairs are scored on the held-out materials having both modalities (n may be tiny or 0).

Chance level for n candidates (`mmjax.eval.retrieval.chance_metrics`): recall@k = k/n,
MRR = H_n/n, mean = median rank = (n+1)/2; printed beside every measurement.

Outputs under ``--out`` (default benchmarks/results/demo_retrieval[_quick]/):
``<part>/retrieval.json`` (held-out metrics + chance + training history + counts + settings),
``<part>/retrieval_recall@1.png`` (MatBind Fig. 2 style; * = pair never trained together),
``<part>/retrieval_recall@10.png`` and ``<part>/embeddings.npz`` (ids, split, per-modality held-out
and training embeddings, presence), which `discovery_demo.py` / `latent_demo.py` reuse.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "dos"
PEROVSKITES = SHARED / "perovskites" / "structures_all.json.gz"
PEROVSKITE_LABELS = SHARED / "perovskites" / "labelled.csv.gz"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DEFAULT_CACHE = ROOT / "runs" / "bench_cache" / "demo_perovskites"

PEROVSKITE_MODALITIES = ("crystal", "xrd", "composition", "text")
MULTIMAT_MODALITIES = ("dos", "text", "charge_density")

# ----------------------------------------------------------------------------------------------
# engine helpers shared by the three demos


def demo_config(steps: int, lr: float, seed: int = 0, weight_decay: float = 1e-4):
    """Engine config (`mmjax.train.config.base_config`) for a contrastive run of ``steps`` updates:
    AdamW, 5 % linear warm-up to ``lr`` then cosine to 1 % of it, grad clip 1.0, float32."""
    from mmjax.train.config import base_config

    c = base_config()
    c.seed = int(seed)
    c.train.steps = int(steps)
    c.optim.update(dict(schedule="cosine", peak_lr=float(lr), init_lr=0.0, end_lr=float(lr) * 0.01,
                        warmup_fraction=0.05, weight_decay=float(weight_decay), clip_norm=1.0))
    return c


def held_out_split(n: int, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), disjoint, covering range(n): `mmjax.data.splits.random_split`
    with fractions (1 - test_fraction, 0, test_fraction)."""
    from mmjax.data.splits import random_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, _, test = random_split(n, (1.0 - test_fraction, 0.0, test_fraction), seed=seed)
    return np.sort(train), np.sort(test)


class ArrayBatches:
    """Host Batches (`mmjax.data.schema` layout, leaves ``[n_dev, B/n_dev, ...]``) of dense modalities.

    arrays: modality -> [N, ...] (``dos`` -> {"energies", "densities", "mask"} each [N, L]);
    present: modality -> bool [N]; indices: rows this iterator walks (e.g. the training split).
    shuffle=True: endless, reshuffled every epoch (seeded); False: one pass in ``indices`` order,
    the last batch padded (``slot_valid`` False). ``last_indices`` int [n_dev, B/n_dev]: the row of
    each slot of the last batch (-1 = padding), as `mmjax.data.pipeline.BatchIterator` has.
    """

    def __init__(self, arrays: Mapping[str, Any], present: Mapping[str, np.ndarray], indices: np.ndarray,
                 batch_size: int, n_devices: int = 1, *, shuffle: bool = True, seed: int = 0):
        if batch_size % n_devices:
            raise ValueError(f"batch_size {batch_size} is not a multiple of the {n_devices} devices")
        if len(indices) == 0:
            raise ValueError("ArrayBatches: no rows to batch")
        self.arrays, self.present = dict(arrays), {m: np.asarray(p, bool) for m, p in present.items()}
        self.indices, self.b, self.n_dev = np.asarray(indices, np.int64), int(batch_size), int(n_devices)
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)
        self._queue: list[int] = []
        self._done = False
        self.last_indices = np.full((self.n_dev, self.b // self.n_dev), -1, np.int64)
        if not shuffle:
            self._queue = list(self.indices)

    def __iter__(self):
        return self

    def _take(self) -> np.ndarray:
        if self.shuffle:
            while len(self._queue) < self.b:
                self._queue.extend(self.rng.permutation(self.indices).tolist())
        elif not self._queue:
            raise StopIteration
        rows, self._queue = self._queue[: self.b], self._queue[self.b:]
        return np.asarray(rows + [-1] * (self.b - len(rows)), np.int64)

    def __next__(self) -> dict:
        rows = self._take()
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        shape = (self.n_dev, self.b // self.n_dev)
        out: dict[str, Any] = {"slot_valid": valid.reshape(shape), "present": {}}
        for m, x in self.arrays.items():
            out["present"][m] = (self.present[m][safe] & valid).reshape(shape)
            if isinstance(x, Mapping):
                out[m] = {k: np.asarray(v)[safe].reshape(shape + np.asarray(v).shape[1:]) for k, v in x.items()}
            else:
                out[m] = np.asarray(x)[safe].reshape(shape + np.asarray(x).shape[1:])
        self.last_indices = rows.reshape(shape)
        return out


def train_contrastive(system, config, batches: Iterator[dict], *, mesh=None, log: Callable[[str], None] | None = None,
                      log_every: int = 100, validate: Callable[[Any], float] | None = None,
                      eval_every: int = 0, patience: int = 0) -> tuple[Any, list[dict]]:
    """``config.train.steps`` updates of ``system.loss`` (pretraining stage) with the library engine
    (`build_engine`, `init_state`, `make_train_step`: AdamW of ``config.optim``, donated state).

    batches: endless host Batches. Returns (parameters on the host, history: one dict per
    ``log_every`` steps with ``step`` and the mean ``loss`` (and system metrics) since the last row).
    validate: ``host params -> score`` (higher is better, e.g. a validation recall), called every
    ``eval_every`` steps and at the end; the parameters returned are those of the best score
    (history rows get ``val``), and training stops after ``patience`` evaluations without a new
    best (0 = never). None = the last parameters.
    Raises FloatingPointError naming the step when the loss or a gradient turned NaN/Inf.
    """
    import jax

    from mmjax.train import mesh as mesh_lib
    from mmjax.train.loop import build_engine
    from mmjax.train.state import init_state
    from mmjax.train.step import make_train_step

    mesh = mesh_lib.make_mesh(jax.devices()[:1]) if mesh is None else mesh
    example = next(batches)
    eng = build_engine(system, config, example, mesh)
    state = init_state(system, eng["tx"], eng["rng"], eng["example"], eng["shardings"])
    step = make_train_step(system, eng["tx"], eng["schedule"], eng["shardings"], mesh)
    steps, history, pending, window = int(config.train.steps), [], [example], []
    best, best_score, since_best = None, -np.inf, 0
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        batch = pending.pop() if pending else next(batches)
        state, metrics = step(state, mesh_lib.host_to_global(batch, mesh))
        window.append(metrics)
        evaluate = validate is not None and ((eval_every > 0 and i % eval_every == 0) or i == steps)
        if i % log_every == 0 or i == steps or evaluate:
            fetched = jax.device_get(window)
            row = {"step": i, **{k: float(np.mean([w[k] for w in fetched])) for k in fetched[0]
                                 if not k.startswith("present/") and k not in ("bad_step", "lr")}}
            if evaluate:
                bad = int(jax.device_get(state.bad_step))
                if bad >= 0:
                    raise FloatingPointError(f"loss or gradient became NaN/Inf at step {bad}")
                host = jax.device_get(state.params)
                row["val"] = float(validate(host))
                if row["val"] > best_score:
                    best, best_score, since_best, row["val_best"] = host, row["val"], 0, True
                else:
                    since_best += 1
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            history.append(row)
            window = []
            if log is not None:
                val = f"  val {row['val']:.4f}{' *' if row.get('val_best') else ''}" if "val" in row else ""
                log(f"  step {i:6d}  loss {row['loss']:.4f}{val}  ({row['wall_s']:.0f} s)")
            if evaluate and patience and since_best >= patience:
                if log is not None:
                    log(f"  stopped at step {i}: {patience} evaluations without a better validation score")
                break
    bad = int(jax.device_get(state.bad_step))
    if bad >= 0:
        raise FloatingPointError(f"loss or gradient became NaN/Inf at step {bad}")
    return (best if best is not None else jax.device_get(state.params)), history


def embed_rows(system, params, batches, n_rows: int, *, mesh=None) -> dict[str, np.ndarray]:
    """``system.embed`` over a one-pass iterator with ``last_indices``; float32 {m: [n_rows, d]}
    with row r = the material of dataset row r (rows the iterator never visits stay NaN)."""
    import jax

    from mmjax.train import mesh as mesh_lib
    from mmjax.train.step import make_apply_fn

    mesh = mesh_lib.make_mesh(jax.devices()[:1]) if mesh is None else mesh
    params = jax.device_put(params, mesh_lib.replicated(mesh))
    apply = make_apply_fn(system.embed, jax.tree.map(lambda _: mesh_lib.replicated(mesh), params), mesh)
    out: dict[str, np.ndarray] = {}
    for batch in batches:
        emb = jax.device_get(apply(params, mesh_lib.host_to_global(batch, mesh)))
        idx = np.asarray(batches.last_indices).reshape(-1)
        keep = idx >= 0
        for m, z in emb.items():
            z = np.asarray(z, np.float32).reshape(idx.size, -1)
            if m not in out:
                out[m] = np.full((n_rows, z.shape[1]), np.nan, np.float32)
            out[m][idx[keep]] = z[keep]
    return out


def print_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int], trained: set[frozenset]) -> str:
    """Text table: per ordered pair, measured metrics and the chance level for its n."""
    from mmjax.eval.report import format_table
    from mmjax.eval.retrieval import chance_metrics

    rows = []
    for pair, r in results.items():
        q, k = pair.split("->")
        c = chance_metrics(r["n"], ks)
        rows.append({"pair": pair, "trained": "yes" if frozenset((q, k)) in trained else "no (emergent)",
                     "n": r["n"], **{f"R@{kk}": r[f"recall@{kk}"] for kk in ks},
                     **{f"R@{kk} chance": c[f"recall@{kk}"] for kk in (1, 10) if kk in ks},
                     "MRR": r["mrr"], "MRR chance": c["mrr"], "mean rank": r["mean_rank"],
                     "median rank": r["median_rank"], "rank chance": c["mean_rank"]})
    return format_table(rows, digits=3)


def score_held_out(emb: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray], out_dir: pathlib.Path,
                   model_name: str, trained_pairs: Sequence[tuple[str, str]], ks=(1, 5, 10, 25)) -> tuple[dict, str]:
    """`evaluate_retrieval` (JSON + recall@1 heatmap) plus a recall@10 heatmap and the chance table."""
    from mmjax.eval.retrieval import chance_metrics, evaluate_retrieval, retrieval_heatmap

    results, _ = evaluate_retrieval(emb, present, out_dir, ks, model_name, trained_pairs)
    retrieval_heatmap({model_name: results}, out_dir / "retrieval_recall@10.png", "recall@10",
                      {model_name: list(trained_pairs)})
    chance = {p: chance_metrics(r["n"], ks) for p, r in results.items()}
    table = print_table(results, ks, {frozenset(p) for p in trained_pairs})
    return {"pairs": results, "chance": chance}, table


# ----------------------------------------------------------------------------------------------
# (a) perovskites: crystal hub, XRD / composition / text spokes


def perovskite_items(n: int | None, seed: int = 0) -> list[tuple[str, str]]:
    """``(id, POSCAR)`` of ``n`` perovskites drawn without replacement (seeded), in id order;
    None = all 18,928."""
    with gzip.open(PEROVSKITES, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    ids = sorted(doc, key=int)
    if n is not None and n < len(ids):
        pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
        ids = [ids[i] for i in pick]
    return [(i, doc[i]["poscar"]) for i in ids]


def perovskite_spec():
    """FeatureSpec of the perovskite demo: MatBind's graph and pXRD settings, composition,
    symmetry labels, template text (robocrys is ~1 s per structure)."""
    from mmjax.data.spec import FeatureSpec

    return FeatureSpec(graph="cgcnn", cutoff=8.0, max_neighbors=12, xrd=True, xrd_two_theta_range=(0.0, 128.0),
                       xrd_step=1.0, xrd_sigma=0.5, composition=True, symmetry=True, dos=False,
                       charge_density=False, text=True, text_robocrys=False, targets=())


def featurise_perovskites(items: list, cache: pathlib.Path, workers: int = 2):
    """Featurise ``items`` into ``cache`` once (then re-used) and add hashing text embeddings."""
    from mmjax.data import store
    from mmjax.data.featurize import featurize_dataset, material_from_text
    from mmjax.data.text_embed import embed_dataset

    if (cache / store.MANIFEST).exists():
        ds = store.Dataset.open(cache)
        if sorted(ds.ids) != sorted(i for i, _ in items):
            raise ValueError(f"cache {cache} holds other materials than requested; pass another --cache")
        return ds
    tmp = cache.with_name(cache.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    featurize_dataset(items, perovskite_spec(), tmp, num_workers=workers, parse=material_from_text, progress=False,
                      sources=[str(PEROVSKITES)], command=" ".join(sys.argv))
    embed_dataset(tmp, "hashing")
    tmp.rename(cache)
    return store.Dataset.open(cache)


def perovskite_system(latent_dim: int = 64, width: int = 64, small: bool = False):
    """MatBind hub-and-spoke over crystal (hub), xrd, composition, text with CPU-sized encoders."""
    from mmjax.nn import ProjectionHead, make_encoder
    from mmjax.systems.matbind import MatBind

    w = 16 if small else width
    encoders = {
        "crystal": make_encoder("matbind_crystal", hidden=w, num_layers=2 if small else 3),
        "xrd": make_encoder("matbind_xrd", stem_channels=w // 4, group_channels=(w // 4, w // 2, w),
                            group_blocks=(1, 1, 1), kernel_size=5, group_stride=2, groups=4),
        "composition": make_encoder("crabnet", d_model=w // 2, num_layers=2, num_heads=2, mlp_dim=w,
                                    element_dim=16, resolution=100),
        "text": None,  # frozen (hashing stand-in) embedding; the projection head is trained
    }
    projections = {m: ProjectionHead(latent_dim, (w,) if m == "text" else (), "gelu" if m == "text" else "leaky_relu")
                   for m in encoders}
    return MatBind(encoders, projections, central_modality="crystal", spoke_reduction="mean", temperature=0.07)


def train_perovskites(n: int, steps: int, batch_size: int, lr: float, test_fraction: float, seed: int,
                      cache: pathlib.Path, workers: int = 2, small: bool = False, log=print, val_size: int = 0,
                      eval_every: int = 500, patience: int = 4) -> dict:
    """Featurise, split, train MatBind on the training part, embed everything.

    val_size > 0: that many training materials (seeded) are a validation split instead (never
    trained on); every ``eval_every`` steps the model's xrd->crystal recall@1 among them is
    measured, and the parameters with the best one are kept (``patience`` evaluations without a
    better one stop training). The held-out test materials are never looked at before the end.
    Returns {"ids" [n], "train_idx", "val_idx", "test_idx", "emb" {m: [n, d]}, "present" {m: bool [n]},
    "crystal_system" int [n], "history", "counts", "timings"}.
    """
    from mmjax.data.pipeline import make_batches

    t0 = time.perf_counter()
    items = perovskite_items(n, seed)
    ds = featurise_perovskites(items, cache, workers)
    t_feat = time.perf_counter() - t0
    ids = np.asarray(ds.ids)
    train_idx, test_idx = held_out_split(len(ds), test_fraction, seed)
    val_idx = np.zeros(0, np.int64)
    if val_size:
        if not 0 < val_size < len(train_idx):
            raise ValueError(f"--val-size {val_size} must be between 1 and the {len(train_idx)} training materials")
        order = np.random.default_rng(seed + 1).permutation(len(train_idx))
        val_idx, train_idx = np.sort(train_idx[order[:val_size]]), np.sort(train_idx[order[val_size:]])
    log(f"perovskites: {len(ds)} featurised ({t_feat:.0f} s, cache {cache}); train {len(train_idx)}, "
        f"validation {len(val_idx)}, held out {len(test_idx)}")
    system = perovskite_system(small=small)
    config = demo_config(steps, lr, seed)
    train_it = make_batches(ds.subset(train_idx), batch_size, seed=seed, shuffle=True, num_epochs=None,
                            modalities=PEROVSKITE_MODALITIES, targets=[])
    from mmjax.eval.retrieval import rank_metrics, true_match_ranks

    val_ds = ds.subset(val_idx) if val_size else None

    def val_recall(params) -> float:  # xrd -> crystal recall@1 among the validation materials
        it = make_batches(val_ds, batch_size, train_it.assembler.budget, shuffle=False, num_epochs=1,
                          modalities=PEROVSKITE_MODALITIES, targets=[])
        emb = embed_rows(system, params, it, len(val_ds))
        return rank_metrics(true_match_ranks(emb["xrd"], emb["crystal"]), ks=(1,))["recall@1"]
    t1 = time.perf_counter()
    params, history = train_contrastive(system, config, train_it, log=log, log_every=max(1, steps // 10),
                                        validate=val_recall if val_size else None, eval_every=eval_every,
                                        patience=patience)
    t_train = time.perf_counter() - t1
    all_it = make_batches(ds, batch_size, train_it.assembler.budget, shuffle=False, num_epochs=1,
                          modalities=PEROVSKITE_MODALITIES, targets=["crystal_system"])
    emb = embed_rows(system, params, all_it, len(ds))
    present = {m: np.ones(len(ds), bool) for m in PEROVSKITE_MODALITIES}
    present["text"] = ds.column("text_embedding")[0].astype(bool)
    cs_present, cs = ds.column("label/crystal_system")
    return {"ids": ids, "train_idx": train_idx, "val_idx": val_idx, "test_idx": test_idx, "emb": emb,
            "present": present, "crystal_system": np.where(cs_present, cs, -1).astype(np.int64), "history": history,
            "counts": {"materials": len(ds), "train": len(train_idx), "validation": len(val_idx),
                       "held_out": len(test_idx)},
            "timings": {"featurise_s": round(t_feat, 1), "train_s": round(t_train, 1)}}


# ----------------------------------------------------------------------------------------------
# (b) MultiMat example data: DOS / MatBERT text / charge density, no structures


def load_multimat_example(dos_points: int = 201, density_size: int = 16, limit: int | None = None, *,
                          densities: bool = True) -> dict:
    """The 408 MultiMat example ids with their modalities, through the library featurisers
    (``densities=False``: charge-density presence only, grids left at zero — faster).

    Returns {"ids" [N], "arrays": {"dos": {"energies", "densities" (log1p of states/eV),
    "mask"} [N, dos_points] on [-10, 10] eV, "text": [N, 768] MatBERT, "charge_density":
    [N, s, s, s] mean-normalised}, "present": {m: bool [N]}, "skipped": {id: reason} (a DOS the
    featuriser rejects counts as missing), "dos_raw": (energies [N, 601],
    densities [N, 601]) as stored (E - E_F, eV; states/eV)}.
    """
    from mmjax.data.features.density import charge_density_features
    from mmjax.data.features.dos import dos_energy_grid, dos_features
    from mmjax.data.material import RecordError

    dos = np.load(DATA / "dos_mp408.npz")
    ids = np.asarray(dos["material_ids"]).astype(str)[:limit]
    n = len(ids)
    row = {m: i for i, m in enumerate(ids)}
    grid = dos_energy_grid(dos_points, -10.0, 10.0).astype(np.float32)
    exists = dos["exists"][:n].astype(bool)
    dens = np.zeros((n, dos_points), np.float32)
    mask = np.zeros((n, dos_points), bool)
    skipped = {}
    for i in np.flatnonzero(exists):
        try:
            f = dos_features(dos["energies"][i], dos["densities"][i], None, grid, record_id=str(ids[i]))
        except RecordError as err:  # e.g. a non-monotonic energy grid: the DOS counts as missing
            skipped[str(ids[i])] = err.reason
            exists[i] = False
            continue
        dens[i], mask[i] = np.log1p(np.maximum(f["densities"], 0.0)), f["mask"]
    arrays: dict[str, Any] = {"dos": {"energies": np.broadcast_to(grid, (n, dos_points)).copy(), "densities": dens,
                                      "mask": mask},
                              "text": np.zeros((n, 768), np.float32),
                              "charge_density": np.zeros((n,) + (density_size,) * 3, np.float32)}
    present = {"dos": exists, "text": np.zeros(n, bool), "charge_density": np.zeros(n, bool)}
    txt = np.load(DATA / "text_embeds_matbert_mp100.npz")
    for mid, e in zip(txt["material_ids"].astype(str), txt["embeddings"]):
        if mid in row:
            arrays["text"][row[mid]], present["text"][row[mid]] = e, True
    cd = np.load(DATA / "charge_density_mp.npz")
    for mid, g in zip(cd["material_ids"].astype(str), cd["grids"]):
        if mid in row:
            if densities:
                arrays["charge_density"][row[mid]] = charge_density_features(np.maximum(g, 0.0), density_size,
                                                                             record_id=mid)
            present["charge_density"][row[mid]] = True
    return {"ids": ids, "arrays": arrays, "present": present, "skipped": skipped,
            "dos_raw": (np.asarray(dos["energies"][:n], np.float64), np.asarray(dos["densities"][:n], np.float64))}


def multimat_system(latent_dim: int = 64, small: bool = False):
    """MultiMat with AllPairs CLIP over DOS / text / charge density, CPU-sized encoders."""
    from mmjax.nn import make_encoder
    from mmjax.systems.multimat import MultiMat

    d = 16 if small else latent_dim
    encoders = {
        "dos": make_encoder("multimat_dos", d_model=d, embed_dim=d, num_layers=1 if small else 2, num_heads=2,
                            qkv_features=d, mlp_dim=2 * d),
        "text": make_encoder("multimat_text", out_dim=d, hidden=2 * d, depth=2),
        "charge_density": make_encoder("multimat_charge_density", small=True, embed_dim=d),  # 2 ResNeXt stages
    }
    return MultiMat(encoders, objective="all_pairs", temperature=0.2, head_inputs=("dos",))


def train_dense(system, data: dict, train_idx: np.ndarray, steps: int, batch_size: int, lr: float, seed: int,
                log=print) -> tuple[dict, list[dict]]:
    """Train ``system`` on ``data["arrays"]`` rows ``train_idx``; embed every row.

    Returns ({m: [N, d]} embeddings of all rows, training history)."""
    config = demo_config(steps, lr, seed)
    it = ArrayBatches(data["arrays"], data["present"], train_idx, batch_size, shuffle=True, seed=seed)
    params, history = train_contrastive(system, config, it, log=log, log_every=max(1, steps // 10))
    n = len(data["ids"])
    once = ArrayBatches(data["arrays"], data["present"], np.arange(n), batch_size, shuffle=False)
    return embed_rows(system, params, once, n), history


def train_multimat(steps: int, batch_size: int, lr: float, test_fraction: float, seed: int, small: bool = False,
                   log=print) -> dict:
    """Load, split (seeded, over all 408 ids), train on the training ids, embed every id."""
    t0 = time.perf_counter()
    data = load_multimat_example(dos_points=101 if small else 201, density_size=8 if small else 16)
    train_idx, test_idx = held_out_split(len(data["ids"]), test_fraction, seed)
    log(f"multimat example: {len(data['ids'])} ids; present " +
        ", ".join(f"{m}={int(p.sum())} ({int(p[train_idx].sum())} train)" for m, p in data["present"].items()))
    emb, history = train_dense(multimat_system(small=small), data, train_idx, steps, batch_size, lr, seed, log)
    return {**data, "train_idx": train_idx, "test_idx": test_idx, "emb": emb, "history": history,
            "counts": {"materials": len(data["ids"]), "train": len(train_idx), "held_out": len(test_idx),
                       "dos_skipped": data["skipped"]},
            "timings": {"train_s": round(time.perf_counter() - t0, 1)}}


# ----------------------------------------------------------------------------------------------
# outputs


def save_embeddings(path: pathlib.Path, run: dict) -> None:
    """``embeddings.npz``: ids, split ("train"/"validation"/"held_out"), emb/<m> [N, d], present/<m> [N]."""
    split = np.full(len(run["ids"]), "train", dtype="<U10")
    split[run.get("val_idx", np.zeros(0, np.int64))] = "validation"
    split[run["test_idx"]] = "held_out"
    arrays = {"ids": np.asarray(run["ids"]).astype(str), "split": split}
    arrays.update({f"emb/{m}": np.asarray(v, np.float32) for m, v in run["emb"].items()})
    arrays.update({f"present/{m}": np.asarray(v, bool) for m, v in run["present"].items()})
    if "crystal_system" in run:
        arrays["crystal_system"] = run["crystal_system"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_embeddings(path: str | pathlib.Path) -> dict:
    """Inverse of `save_embeddings`: {"ids", "split", "emb": {m}, "present": {m}, ...}."""
    with np.load(path) as z:
        out = {"ids": z["ids"], "split": z["split"], "emb": {}, "present": {}}
        for k in z.files:
            if k.startswith("emb/"):
                out["emb"][k[4:]] = z[k]
            elif k.startswith("present/"):
                out["present"][k[8:]] = z[k]
            elif k not in ("ids", "split"):
                out[k] = z[k]
    out["train_idx"] = np.flatnonzero(out["split"] == "train")
    out["test_idx"] = np.flatnonzero(out["split"] == "held_out")
    return out


def evaluate_part(name: str, run: dict, out: pathlib.Path, trained_pairs, settings: dict, log=print) -> dict:
    """Score the held-out rows of ``run``, write JSON / PNG / embeddings, print the table."""
    test = run["test_idx"]
    overlap = set(np.asarray(run["ids"])[run["train_idx"]]) & set(np.asarray(run["ids"])[test])
    if overlap:  # cannot happen with held_out_split; checked so the report never lies
        raise AssertionError(f"held-out ids overlap the training ids: {sorted(overlap)[:5]}")
    emb = {m: v[test] for m, v in run["emb"].items()}
    present = {m: np.asarray(p, bool)[test] for m, p in run["present"].items()}
    part_dir = out / name
    res, table = score_held_out(emb, present, part_dir, f"{name} (trained, held-out)", trained_pairs)
    doc = {"part": name, "settings": settings, "counts": run["counts"],
           "held_out_present": {m: int(p.sum()) for m, p in present.items()},
           "trained_pairs": [list(p) for p in trained_pairs], **res,
           "history": run["history"], "timings": run["timings"]}
    from mmjax.eval.report import write_json

    write_json(part_dir / "retrieval.json", doc)
    save_embeddings(part_dir / "embeddings.npz", run)
    log(f"\n[{name}] held-out retrieval ({run['counts']['held_out']} held-out materials; "
        f"trained pairs: {', '.join('-'.join(p) for p in trained_pairs)})\n{table}")
    return doc


def trained_pairs_of(present: Mapping[str, np.ndarray], train_idx: np.ndarray) -> list[tuple[str, str]]:
    """Unordered modality pairs that co-occur on at least one training material: the pairs an
    all-pairs objective actually aligned (a pair with no common training material never was)."""
    names = list(present)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if np.any(np.asarray(present[a], bool)[train_idx] & np.asarray(present[b], bool)[train_idx])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: 400 perovskites, tiny models, few steps")
    ap.add_argument("--part", choices=("perovskites", "multimat", "both"), default="both")
    ap.add_argument("--n-perovskites", type=int, default=None, help="materials drawn (default 4000; quick 400)")
    ap.add_argument("--steps", type=int, default=None, help="perovskite updates (default 2000; quick 60)")
    ap.add_argument("--multimat-steps", type=int, default=None, help="MultiMat updates (default 300; quick 40)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (quick 32)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--val-size", type=int, default=0,
                    help="perovskites: training materials kept aside as a validation split; the parameters with "
                         "the best validation xrd->crystal recall@1 are kept (0 = none, the last parameters)")
    ap.add_argument("--eval-every", type=int, default=500, help="steps between validation scores (--val-size)")
    ap.add_argument("--patience", type=int, default=4, help="validation scores without a new best before stopping")
    ap.add_argument("--multimat-test-fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="featurisation worker processes")
    ap.add_argument("--cache", default="", help=f"featurised perovskites (default {DEFAULT_CACHE}/n<N>-s<seed>)")
    ap.add_argument("--out", default="", help="output folder (default benchmarks/results/demo_retrieval[_quick])")
    args = ap.parse_args(argv)
    q = args.quick
    n = args.n_perovskites or (400 if q else 4000)
    steps = args.steps or (60 if q else 2000)
    mm_steps = args.multimat_steps or (40 if q else 300)
    bs = args.batch_size or (32 if q else 128)
    out = pathlib.Path(args.out or DEFAULT_OUT / ("demo_retrieval_quick" if q else "demo_retrieval"))
    from mmjax.eval.fit import command_line, hardware_description

    command = command_line(argv)
    hardware = hardware_description()
    print(f"command: {command}\nhardware: {json.dumps(hardware)}")
    t0 = time.time()
    if args.part in ("perovskites", "both"):
        if not PEROVSKITES.exists():
            print(f"{PEROVSKITES} not found", file=sys.stderr)
            return 1
        cache = pathlib.Path(args.cache or DEFAULT_CACHE / f"n{n}-s{args.seed}")
        run = train_perovskites(n, steps, bs, args.lr, args.test_fraction, args.seed, cache, args.workers, small=q,
                                val_size=args.val_size, eval_every=args.eval_every, patience=args.patience)
        evaluate_part("perovskites", run, out, [("crystal", m) for m in PEROVSKITE_MODALITIES[1:]],
                      {"n": n, "steps": steps, "batch_size": bs, "lr": args.lr, "test_fraction": args.test_fraction,
                       "val_size": args.val_size, "eval_every": args.eval_every, "patience": args.patience,
                       "seed": args.seed, "small": q, "command": command, "hardware": hardware})
    if args.part in ("multimat", "both"):
        run = train_multimat(mm_steps, bs, args.lr, args.multimat_test_fraction, args.seed, small=q)
        pairs = trained_pairs_of(run["present"], run["train_idx"])
        evaluate_part("multimat", run, out, pairs,
                      {"steps": mm_steps, "batch_size": bs, "lr": args.lr,
                       "test_fraction": args.multimat_test_fraction, "seed": args.seed, "small": q,
                       "command": command, "hardware": hardware})
    print(f"\ntotal wall {time.time() - t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
