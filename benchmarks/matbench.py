"""Matbench harness: a system on matbench_perovskites (official folds), ours beside the leaderboard.

    python benchmarks/matbench.py --folds 0                      # CGCNN from scratch on fold 0
    python benchmarks/matbench.py --folds 0 1 2 3 4 --epochs 200 # every fold
    python benchmarks/matbench.py --quick                        # smoke test (~1-2 min)
    python benchmarks/matbench.py --system crabnet --config configs/crabnet.py:small
    python benchmarks/matbench.py --protocol xmopa --folds 0      # X-MoPA: pretrain, frozen encoders + heads
    python benchmarks/matbench.py --protocol multimat --folds 0   # MultiMat: pretrain, fine-tune crystal + linear
    python benchmarks/matbench.py --protocol xmopa --quick        # smoke test of a protocol (~2-4 min)
    python benchmarks/matbench.py --protocol multimat --control   # same-budget control: no pretraining

Offline data: Matbench ships labels but no structures (../shared/data/matbench). The perovskite
structures of ../shared/data/perovskites/structures_all.json.gz tied to a Matbench row by
``matbench_links.csv.gz`` (14,946 of the task's 18,928 rows; ``--structures labelled``: only the
8,100 energy-verified links of labelled.csv.gz) keep their row, so each row keeps its **official** fold
(`mmjax.data.matbench_folds` over the rows in file order). For each fold the model trains on the
fold's training rows that have a structure (a nested 10 % validation split drawn from the training
rows only, `mmjax.eval.matbench.fold_splits`, used for early stopping) and predicts the fold's test
rows that have a structure; the table says how many rows were available. Target: Matbench
``e_form`` (eV per 5-atom cell), the row's Matbench value. Scores on this subset are not the
leaderboard's full-task scores (about 79 % of the rows with links, 43 % with --structures labelled;
fewer training rows than the leaderboard models had).

Featurisation runs once into ``--cache`` (default runs/bench_cache/matbench_perovskites/<modalities>):
CGCNN graphs (8 Å, 12 neighbours), plus XRD / composition only when the system's config asks for
them (``config.data.modalities``); every fold reuses it.

Default system: CGCNN from scratch (``configs/cgcnn.py``: 92-d element table, 64-d atoms, 3 convs,
128-d pooled, LayerNorm), AdamW with a 5 % warm-up to ``--lr`` and cosine decay to 1 % of it,
weight decay ``--weight-decay``, batch ``--batch-size``, up to ``--epochs`` epochs, early stopping
(patience ``--patience`` epochs), targets normalised with the training rows' mean / std.
``--system`` / ``--config`` pick another system (its config file; ``path:arg`` passes arg).

Protocols (``--protocol``; `mmjax.eval.matbench.PROTOCOLS`):

* ``scratch`` (default): the system above from random initialisation on each fold.
* ``xmopa``: X-MoPA (``configs/xmopa.py:small`` + the CPU sizes of ``PRESETS["xmopa"]``: crystal
  graph (CGCNN 64/3/128) + XRD (CNN, 425 points) + text) is pretrained **without labels**, on each
  fold, on the structures of that fold's training rows only (``--pretrain-scope fold``, the
  default, as the X-MoPA paper pretrains on training structures; ``--pretrain-scope all``: once on
  all 18,928 perovskite structures of ../shared/data/perovskites/structures_all.json.gz, the test
  folds' structures included, their labels never read) with ``--mode=pretrain``
  (`mmjax.train.modes`), then on each fold the encoders are frozen and the heads trained
  (`mmjax.eval.fit.fit_predict` with ``init_from`` and ``trainable=("head",)``). Text is the
  offline stand-in of ``configs/xmopa.py:small``: template descriptions embedded by the hashing
  text encoder (no MatSciBERT weights offline).
* ``multimat``: MultiMat (``configs/multimat.py:small`` + ``PRESETS["multimat"]``) with the
  modalities the perovskites have offline, crystal (PotNet graph) + text (same stand-in; no DOS,
  no charge density for these structures), pretrained the same way (anchored CLIP), then the
  crystal encoder + a linear head fine-tuned on each fold (everything trainable).

``--pretrain-source labelled`` pretrains on the 8,100 structures with an mbid only (still without
their labels) when the CPU budget does not allow featurising all 18,928.
The pretraining run lives in ``--pretrain-dir`` (default runs/bench_pretrain/<protocol>[-labelled|-quick],
with ``-fold<k>`` per fold); a finished one is reused only when it was made from the same request
(``bench_request.json``: steps, batch, lr, the source file's sha256, the system config), and a
workdir of another request is refused. The supervised stage's store is featurised once for every
structure; a fold's pretraining source lists only its training rows' structures and is featurised
into its own cache (keyed by the source's content). The supervised stage reads a copy of the pretraining store with the
``e_form`` column added on the rows that have an mbid (same features, no second featurisation).

Outputs: per-fold and mean MAE beside the reported numbers (`benchmarks/reported.py`), and in
``--out`` (default benchmarks/results/matbench_perovskites_<system or protocol>/): ``results.json.gz``
(Matbench layout, `mmjax.eval.matbench.MatbenchResults`), ``matbench_summary.json`` and
``run.json`` (settings, counts, hardware, wall time, per-fold validation curves).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gzip
import json
import math
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mmjax.config_file import load_config  # noqa: E402 (the checkout's mmjax)
from mmjax.eval.matbench import DEFAULT_DOWNSTREAM  # noqa: E402
from mmjax.train.loop import config_differences  # noqa: E402
SHARED = ROOT.parent / "shared" / "data"
LABELS = SHARED / "matbench" / "matbench_perovskites.json.bz2"
STRUCTURES = SHARED / "perovskites" / "labelled.csv.gz"
ALL_STRUCTURES = SHARED / "perovskites" / "structures_all.json.gz"
LINKS = SHARED / "perovskites" / "matbench_links.csv.gz"
TASK = "matbench_perovskites"
TARGET = "e_form"
QUICK_ROWS = 800
QUICK_ENCODER = dict(atom_fea_len=16, n_conv=2, h_fea_len=32)
# CPU sizes of the pretraining protocols (on top of configs/<protocol>.py:small); quick = smoke test
PRESETS = {
    "xmopa": dict(system=dict(latent_dim=64, predictor_hidden=(64,), head_hidden=(64,),
                              encoder_overrides={"crystal": dict(atom_fea_len=64, n_conv=3, h_fea_len=128)}),
                  pretrain_steps=600, pretrain_batch=64, pretrain_lr=1e-3),
    "multimat": dict(system=dict(latent_dim=64, encoder_overrides={
                         "crystal": dict(hidden=64, num_layers=3, local_bins=64, infinite_bins=32)}),
                     pretrain_steps=400, pretrain_batch=64, pretrain_lr=1e-3),
}
QUICK_PRETRAIN = dict(pretrain_steps=60, pretrain_batch=32, structures=1500)


def mbid_links(source: str) -> dict[str, str]:
    """``{perov_5 material_id: mbid}``: the 14,946 rows of ``matbench_links.csv.gz`` (``source="links"``)
    or the 8,100 energy-verified mbids of ``labelled.csv.gz`` (``"labelled"``; a subset of the links)."""
    import pandas as pd

    files = {"links": LINKS, "labelled": STRUCTURES}
    if source not in files:
        raise ValueError(f"structures must be 'links' or 'labelled', got {source!r}")
    frame = pd.read_csv(files[source], usecols=["material_id", "mbid"], dtype=str, keep_default_na=False)
    return {m: b for m, b in zip(frame["material_id"], frame["mbid"]) if b}


def structure_items(labels: dict, limit: int | None = None, source: str = "links") -> list[tuple]:
    """``(mbid, structure text, {"e_form": Matbench value})`` for every perovskite structure tied to a
    Matbench row (`mbid_links`), in Matbench row order; the POSCAR / CIF text is parsed inside the
    featurisation workers. The label is always the Matbench row's value."""
    mbid_of = mbid_links(source)
    row_of = {m: i for i, m in enumerate(labels["ids"])}
    unknown = sorted(set(mbid_of.values()) - set(row_of))
    if unknown:
        raise ValueError(f"{len(unknown)} linked mbids are not rows of {LABELS}, e.g. {unknown[0]!r}")
    with gzip.open(ALL_STRUCTURES, "rt") as fh:
        text_of = {k: v["poscar"] for k, v in json.load(fh).items()}
    missing = sorted(set(mbid_of) - set(text_of), key=str)
    if missing:
        raise ValueError(f"{len(missing)} linked material_ids have no structure in {ALL_STRUCTURES}, e.g. {missing[0]!r}")
    order = sorted(mbid_of, key=lambda m: row_of[mbid_of[m]])
    if limit:
        order = order[:limit]
    return [(mbid_of[m], text_of[m], {TARGET: float(labels["targets"][row_of[mbid_of[m]]])}) for m in order]


def fold_structure_ids(mbid_of: dict[str, str], training_mbids) -> list[str]:
    """The structure ids (``material_id`` keys of ``mbid_of`` = `mbid_links`) tied to the rows
    ``training_mbids`` of one fold, sorted: a fold's label-free pretraining set. Structures tied to
    no row, or to a row outside ``training_mbids`` (the test fold), are left out."""
    keep = set(training_mbids)
    return sorted(m for m, b in mbid_of.items() if b in keep)


def default_spec(config):
    """Feature settings of the ``scratch`` protocol: the config's own (`feature_spec`: its
    modalities, graph, XRD grid, element table limit, registered modalities), without symmetry
    labels, storing the Matbench target only."""
    from mmjax.data.spec import feature_spec

    return dataclasses.replace(feature_spec(config), symmetry=False, targets=(TARGET,))


def featurise(items: list, spec, cache: pathlib.Path, workers: int, text_model: str = "", text_pooling: str = "cls"):
    """Featurise ``items`` with ``spec`` into ``cache`` once (a temporary folder renamed at the end);
    with ``spec.text`` the raw texts are embedded with ``text_model`` (e.g. "hashing")."""
    import shutil

    from mmjax.data import store
    from mmjax.data.featurize import featurize_dataset, material_from_text

    if (cache / store.MANIFEST).exists():
        ds = store.Dataset.open(cache)
        stored = ds.manifest.provenance.get("spec")
        if stored is not None and stored != json.loads(json.dumps(spec.to_dict())):
            raise SystemExit(f"error: {cache} holds features of another FeatureSpec; pass another --cache "
                             "(it is left as it is)")
        return ds
    tmp = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = featurize_dataset(items, spec, tmp, num_workers=workers, parse=material_from_text, progress=False,
                                 sources=[str(ALL_STRUCTURES), str(LINKS), str(LABELS)], command=" ".join(sys.argv))
    if manifest.skipped:
        print(f"  featurisation skipped {len(manifest.skipped)} structures, e.g. {manifest.skipped[0]}")
    if spec.text:
        from mmjax.data.text_embed import embed_dataset

        if not text_model:
            raise ValueError("the text modality needs config.data.text_model (e.g. 'hashing' offline)")
        embed_dataset(tmp, text_model, pooling=text_pooling)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(cache)
    return store.Dataset.open(cache)


def labelled_copy(pre_cfg, cache: pathlib.Path, labels: dict, source: str = "links"):
    """Dataset of the supervised stage: a copy of the pretraining store (identical features and text
    embeddings) with the Matbench ``e_form`` added as ``"target/e_form"`` on the rows that have an
    mbid (NaN elsewhere), made once into ``cache``. The pretraining run never sees this copy.

    Returns (view of the rows with an mbid, their mbids str [n]).
    """
    import shutil

    import numpy as np

    from mmjax.data import store
    from mmjax.data.cache import dataset_dir

    mbid_of = mbid_links(source)
    row_of = {m: i for i, m in enumerate(labels["ids"])}

    def mbids_of(ids):  # store ids are mbids (labelled source) or CDVAE material ids (all structures)
        return np.asarray([i if i in row_of else mbid_of.get(str(i), "") for i in ids])

    if not (cache / store.MANIFEST).exists():
        src = pathlib.Path(dataset_dir(pre_cfg, None))
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        full = store.Dataset.open(tmp)
        mb = mbids_of(full.ids)
        y = np.asarray([labels["targets"][row_of[b]] if b else np.nan for b in mb], np.float32)
        full.add_column(f"target/{TARGET}", y, present=np.isfinite(y))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(cache)
    full = store.Dataset.open(cache)
    mb = mbids_of(full.ids)
    keep = np.flatnonzero(mb != "")
    return full.subset(keep), mb[keep]


# pretraining settings: they change a fold's result only where something is pretrained
PRETRAIN_SETTINGS = ("pretrain_scope", "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_source")
SAME_SETTINGS = ("epochs", "steps", "batch_size", "lr", "weight_decay", "patience", "val_fraction", "seed", "system",
                 "quick", "set", "config", "structures", "control", "train_fraction", "downstream") + PRETRAIN_SETTINGS
# values of settings added later, for results written before they existed
LATER_SETTINGS = {"set": [], "config": "", "structures": "labelled", "train_fraction": 1.0, "pretrain_scope": "all",
                  "downstream": "frozen", "pretrain_steps": 0, "pretrain_batch": 0, "pretrain_lr": 0.0,
                  "pretrain_source": "all"}


def reused_folds(folder: pathlib.Path, args, protocol: str) -> dict[int, tuple]:
    """``{fold: (predictions {mbid: value}, fold record of run.json, parameters)}`` of an earlier run
    whose settings (`SAME_SETTINGS`, protocol) equal this one's; raises naming the first difference."""
    run = json.loads((folder / "run.json").read_text())
    old = dict(run["settings"], protocol=run.get("protocol", "scratch"))
    new = fold_settings(args, protocol)
    old = effective_settings({**LATER_SETTINGS, "downstream": DEFAULT_DOWNSTREAM.get(old["protocol"]),
                              **old})  # runs from before a setting existed
    old.setdefault("control", False)
    diff = [k for k in new if old.get(k) != new[k]]  # the keys that make this run's folds interchangeable
    if diff:
        raise ValueError(f"--reuse-folds {folder}: settings differ ({', '.join(f'{k}: {old.get(k)!r} vs {new.get(k)!r}' for k in diff)})")
    with gzip.open(folder / "results.json.gz", "rt") as fh:
        results = json.load(fh)["tasks"][TASK]["results"]
    return {int(k.split("_")[1]): (v["data"], run["folds"][k.split("_")[1]], v["parameters"]) for k, v in results.items()}


def fold_settings(args, protocol: str) -> dict:
    """The settings that make two runs' folds interchangeable (`SAME_SETTINGS` + protocol; the
    pretraining settings only where something is pretrained, the downstream form only for a
    protocol)."""
    keys = SAME_SETTINGS + ("protocol",)
    if protocol == "scratch":
        keys = tuple(k for k in keys if k not in PRETRAIN_SETTINGS and k != "downstream")
    elif args.control:  # nothing is pretrained, but the supervised store is the pretraining source's
        keys = tuple(k for k in keys if k not in PRETRAIN_SETTINGS or k == "pretrain_source")
    return effective_settings({k: v for k, v in dict(vars(args), protocol=protocol).items() if k in keys})


def effective_settings(settings: dict) -> dict:
    """``settings`` with 0 for pretraining steps / batch / lr replaced by the protocol preset's value
    (what the run used), so a fold that ran the preset matches one that named it."""
    out = dict(settings)
    preset = PRESETS.get(out.get("protocol"), {})
    quick = QUICK_PRETRAIN if out.get("quick") else {}
    for key in ("pretrain_steps", "pretrain_batch", "pretrain_lr"):
        if key in out and not out[key] and preset:
            out[key] = quick.get(key, preset[key])
    return out


def finished_folds(out: pathlib.Path, settings: dict) -> dict[int, tuple]:
    """Folds this run already finished into ``out/folds/fold_<k>.json`` (a killed run resumes fold by
    fold): ``{fold: (predictions {mbid: value}, fold record, parameters)}``. A fold file written with
    other settings is an error naming the first difference (nothing is overwritten)."""
    done = {}
    for f in sorted((out / "folds").glob("fold_*.json")):
        rec = json.loads(f.read_text())
        later = dict(LATER_SETTINGS, downstream=DEFAULT_DOWNSTREAM.get(rec["settings"].get("protocol")))
        had = effective_settings({k: v for k, v in later.items() if k != "structures"} | rec["settings"])
        diff = [k for k in settings if had.get(k) != settings[k]]
        if diff:
            k = diff[0]
            raise ValueError(f"{f} was written with other settings ({k}: {had.get(k)!r} vs {settings[k]!r}); "
                             f"pass another --out to keep both")
        done[int(rec["fold"])] = (rec["predictions"], rec["run"], rec["params"])
    return done


def training_subset(rows, fraction: float, seed: int):
    """The first ``round(fraction * len(rows))`` rows (at least 1) of a ``seed``-ed permutation of
    ``rows``, in their original order: smaller fractions are subsets of larger ones."""
    import numpy as np

    rows = np.asarray(rows)
    keep = max(1, int(round(fraction * len(rows))))
    chosen = np.random.default_rng(seed).permutation(len(rows))[:keep]
    return rows[np.sort(chosen)]


def git_commit() -> str:
    """The commit of the code that ran (``git rev-parse HEAD`` of this checkout), or "" outside git."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def spec_tag(spec) -> str:
    """Short stable name of a FeatureSpec (cache folder suffix)."""
    import hashlib

    return hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]


PRETRAIN_REQUEST = "bench_request.json"


# system keys that shape only the downstream heads (pretraining builds no head): not part of what a
# pretraining run is made from
HEAD_ONLY_KEYS = ("head_source", "head_hidden", "targets", "stage")


def pretraining_request(protocol: str, cfg, source: pathlib.Path, *, steps: int, batch: int, lr: float) -> dict:
    """What a pretraining workdir was made from: protocol, steps, batch, peak lr, the sha256 of the
    source file's bytes (the structures) and the pretraining system config (JSON-normalised; the
    head-only keys `HEAD_ONLY_KEYS` left out)."""
    import hashlib

    digest = hashlib.sha256(pathlib.Path(source).read_bytes()).hexdigest()
    system = {k: v for k, v in cfg.system.to_dict().items() if k not in HEAD_ONLY_KEYS}
    request = {"protocol": protocol, "steps": int(steps), "batch": int(batch), "peak_lr": float(lr),
               "source_sha256": digest, "system": system}
    return json.loads(json.dumps(request, default=str))


class PretrainingMismatch(ValueError):
    """A pretraining workdir holds a run of another request (`check_pretraining_request`)."""


def check_pretraining_request(workdir: pathlib.Path, request: dict) -> None:
    """Raise naming the first difference when ``workdir`` holds a pretraining run (finished or
    partly done) made from another request, or one that recorded none: it is left as it is."""
    path = workdir / PRETRAIN_REQUEST
    started = (workdir / "summary.json").exists() or (workdir / "checkpoints").exists()
    if not started:
        return
    old = json.loads(path.read_text()) if path.exists() else None
    if old is not None and isinstance(old.get("system"), dict):
        # the system config compares as a resume does (keys added since take their old value)
        system_old = {k: v for k, v in old["system"].items() if k not in HEAD_ONLY_KEYS}
        if not config_differences({"system": system_old}, {"system": request.get("system", {})}, ignore=()):
            old = {**old, "system": request.get("system", {})}
    if old == request:
        return
    if old is None:
        raise PretrainingMismatch(f"{workdir} holds a pretraining run that recorded no {PRETRAIN_REQUEST} (written before "
                         "requests were recorded): pass another --pretrain-dir, or remove it to pretrain again")
    key = next(k for k in sorted(set(old) | set(request)) if old.get(k) != request.get(k))
    raise PretrainingMismatch(f"{workdir} holds a pretraining run of other settings ({key}: {str(old.get(key))[:80]} vs "
                     f"{str(request.get(key))[:80]}); pass another --pretrain-dir")


def pretrain(protocol: str, config, args, n_devices: int, *, keep: list[str] | None = None, name: str = "",
             train: bool = True) -> tuple[pathlib.Path | None, dict, object]:
    """Label-free pretraining of ``config`` with ``--mode=pretrain``: on every perovskite structure,
    or on the structures ``keep`` (ids of the source; ``name`` tags the source file and workdir,
    e.g. "fold0").

    Returns (workdir, info, pretraining config); a workdir whose run finished is reused. With
    ``args.control`` or ``train=False`` nothing is trained: the structures are featurised (the
    supervised stage reads that store) and the workdir is None (random initialisation).
    """
    from mmjax.eval.matbench import pretraining_config
    from mmjax.train.modes import MODES

    preset = PRESETS[protocol]
    steps = args.pretrain_steps or (QUICK_PRETRAIN["pretrain_steps"] if args.quick else preset["pretrain_steps"])
    batch = args.pretrain_batch or (QUICK_PRETRAIN["pretrain_batch"] if args.quick else preset["pretrain_batch"])
    lr = args.pretrain_lr or preset["pretrain_lr"]
    source = ALL_STRUCTURES
    n_structures = 18928
    if args.pretrain_source == "labelled" and not args.quick:  # the 8,100 structures with an mbid, same layout
        source = ROOT / "runs" / "bench_cache" / "perovskites_mbid_structures.json.gz"
        if not source.exists():
            import pandas as pd

            frame = pd.read_csv(STRUCTURES, usecols=["mbid", "cif"], dtype=str, keep_default_na=False)
            frame = frame[frame["mbid"] != ""]
            source.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(source, "wt") as fh:
                # CIF text under "poscar" (the key the source detection knows); the reader detects CIF
                json.dump({m: {"poscar": c} for m, c in zip(frame["mbid"], frame["cif"])}, fh)
        n_structures = 8100
    if args.quick:  # the first structures only, as a smaller JSON map of the same layout
        source = ROOT / "runs" / "bench_cache" / "perovskites_all_quick.json.gz"
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(ALL_STRUCTURES, "rt") as fh:
                doc = json.load(fh)
            first = dict(list(doc.items())[:QUICK_PRETRAIN["structures"]])
            with gzip.open(source, "wt") as fh:
                json.dump(first, fh)
        n_structures = QUICK_PRETRAIN["structures"]
    suffix = "-quick" if args.quick else ("-labelled" if args.pretrain_source == "labelled" else "")
    if keep is not None:  # a subset of the source (same layout), e.g. one fold's training structures
        subset = ROOT / "runs" / "bench_cache" / f"perovskites_pretrain{suffix}-{name}.json.gz"
        with gzip.open(source, "rt") as fh:
            doc = json.load(fh)
        chosen = {k: doc[k] for k in keep if k in doc}
        same = False
        if subset.exists():
            with gzip.open(subset, "rt") as fh:
                same = json.load(fh) == chosen
        if not same:
            subset.parent.mkdir(parents=True, exist_ok=True)
            tmp = subset.with_name(subset.name + ".tmp")
            with gzip.open(tmp, "wt") as fh:
                json.dump(chosen, fh)
            tmp.rename(subset)
        source, n_structures = subset, len(chosen)
        suffix += f"-{name}"
    workdir = pathlib.Path((args.pretrain_dir + (f"-{name}" if name else "")) if args.pretrain_dir
                           else ROOT / "runs" / "bench_pretrain" / f"{protocol}{suffix}")
    cfg = pretraining_config(config, source=str(source), steps=steps, batch_size=batch, n_devices=n_devices,
                             data_dir=str(ROOT / "runs" / "bench_cache" / "perovskites_all"), lr=lr,
                             workers=args.workers)
    if args.control:
        print(f"\n== featurising the {n_structures} structures of {source.name} (the supervised stage's store; "
              "--control: nothing is pretrained)")
    elif not train:
        print(f"\n== featurising the {n_structures} structures of {source.name} (the supervised stage's store; "
              "pretraining runs per fold on each fold's training structures)")
    else:
        print(f"\n== pretraining ({protocol}): {steps} steps x {batch} structures, peak lr {lr}, on {n_structures} "
              f"perovskite structures from {source.name} WITHOUT labels (no target is read: data.targets = ()); "
              f"modalities {tuple(cfg.data.modalities)}; workdir {workdir}")
    t0 = time.time()
    if args.control or not train:
        from mmjax.data.cache import prepare_dataset

        if args.control:
            print("   --control: pretraining SKIPPED; the supervised stage starts from random initialisation "
                  "(same architecture, features, trainable groups and schedule)")
        prepare_dataset(cfg, None)
        how = ("same-budget control: no pretraining, random initialisation" if args.control
               else "featurised only (pretraining runs per fold)")
        return None, {"control": bool(args.control), "skipped": True, "structures": n_structures,
                      "source": str(source), "how": how}, cfg
    summary_file = workdir / "summary.json"
    request = pretraining_request(protocol, cfg, source, steps=steps, batch=batch, lr=lr)
    check_pretraining_request(workdir, request)  # a workdir of other settings is refused, never reused
    done = summary_file.exists() and json.loads(summary_file.read_text()).get("steps") == steps
    if not done:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / PRETRAIN_REQUEST).write_text(json.dumps(request, indent=1))
    summary = json.loads(summary_file.read_text()) if done else MODES["pretrain"](cfg, str(workdir))
    if done:
        print(f"   reusing the finished pretraining run in {workdir}")
    info = {"steps": steps, "batch": batch, "peak_lr": lr, "structures": n_structures, "source": str(source),
            "labels_used": False, "workdir": str(workdir), "wall_s": round(time.time() - t0, 1), "reused": done,
            "final_train": summary.get("final_train"), "final_eval": summary.get("final_eval"),
            "train_loop_wall_s": summary.get("wall_s"),
            "how": "mmjax.train.modes.MODES['pretrain'] (= --mode=pretrain) on "
                   "mmjax.eval.matbench.pretraining_config(configs/<protocol>.py:small + PRESETS[protocol])"}
    return workdir, info, cfg


def main(argv=None) -> int:
    try:
        return _main(argv)
    except PretrainingMismatch as err:  # one line naming the workdir and the setting; nothing is touched
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="scratch", choices=("scratch", "xmopa", "multimat"),
                    help="scratch: --system from random init; xmopa / multimat: pretrain then transfer")
    ap.add_argument("--system", default="cgcnn", help="system name; its config defaults to configs/<system>.py")
    ap.add_argument("--config", default="", help="config file (path or path:arg); default configs/<system>.py")
    ap.add_argument("--folds", type=int, nargs="+", default=[0], help="official folds to run (0-4)")
    ap.add_argument("--epochs", type=int, default=150, help="maximum epochs per fold (ignored with --steps)")
    ap.add_argument("--steps", type=int, default=0, help="maximum optimiser steps per fold")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--patience", type=int, default=30, help="epochs without a new best validation MAE")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="learning curves: train on this fraction of each fold's training rows (a seeded subset, "
                         "nested across fractions; the validation split and the test fold unchanged)")
    ap.add_argument("--workers", type=int, default=2, help="featurisation worker processes")
    ap.add_argument("--quick", action="store_true", help=f"smoke test: first {QUICK_ROWS} structures, tiny model, fold 0, 200 steps")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="pretraining steps (0 = the protocol preset)")
    ap.add_argument("--pretrain-batch", type=int, default=0, help="pretraining batch (0 = the protocol preset)")
    ap.add_argument("--pretrain-lr", type=float, default=0.0, help="pretraining peak lr (0 = the protocol preset)")
    ap.add_argument("--pretrain-dir", default="", help="pretraining workdir (reused when finished)")
    ap.add_argument("--pretrain-source", default="all", choices=("all", "labelled"),
                    help="pretraining structures: all 18,928, or the 8,100 with an mbid (CPU budget); no labels either way")
    ap.add_argument("--pretrain-scope", default="fold", choices=("fold", "all"),
                    help="fold: pretrain on each fold's training structures only (the X-MoPA paper's protocol); "
                         "all: once on every structure, the test folds' included (labels never read)")
    ap.add_argument("--downstream", default=None, choices=("frozen", "finetune"),
                    help="supervised stage of a protocol: frozen encoders + heads, or everything fine-tuned "
                         "(default: xmopa frozen, as the paper; multimat finetune)")
    ap.add_argument("--control", action="store_true",
                    help="same-budget control of a protocol: identical architecture, features, trainable groups and "
                         "supervised schedule, from random initialisation (no pretraining)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override before the protocol, e.g. system.vicreg_weight=1.0 (Python literal)")
    ap.add_argument("--reuse-folds", default="",
                    help="results folder of an earlier run with the same settings: its folds are taken, not re-run")
    ap.add_argument("--structures", default="links", choices=("links", "labelled"),
                    help="rows with a structure: the 14,946 of matbench_links.csv.gz, or the 8,100 energy-verified ones")
    ap.add_argument("--cache", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if any(f not in range(5) for f in args.folds):
        ap.error(f"--folds must be in 0..4, got {args.folds}")
    if len(set(args.folds)) != len(args.folds):  # each fit is matched to its fold by order
        ap.error(f"--folds names fold(s) {sorted({f for f in args.folds if args.folds.count(f) > 1})} more than once")
    for path in (LABELS, STRUCTURES, ALL_STRUCTURES, LINKS):
        if not path.exists():
            print(f"{path} not found; nothing to run")
            return 1
    if args.control and args.protocol == "scratch":
        ap.error("--control is the from-scratch twin of a pretraining protocol; give --protocol xmopa or multimat")
    if not 0 < args.train_fraction <= 1:
        ap.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.quick:
        args.folds, args.steps = [0], args.steps or 200

    import numpy as np

    from mmjax.eval.fit import command_line, fit_predict, hardware_description
    import ml_collections

    from mmjax.eval.matbench import PROTOCOLS, downstream_config, dummy_fold_maes, load_matbench_labels, run_matbench
    from mmjax.eval.report import format_table, write_json
    from reported import reported

    t_start = time.time()
    hardware = hardware_description()
    command = command_line(argv)
    protocol = args.protocol
    if protocol != "scratch":
        args.system = protocol
        args.downstream = args.downstream or DEFAULT_DOWNSTREAM[protocol]
    elif args.downstream is not None:
        ap.error("--downstream needs a pretraining --protocol (xmopa or multimat)")
    config = load_config(args.config or (f"configs/{protocol}.py:small" if protocol != "scratch"
                                         else f"configs/{args.system}.py"))
    if config.system.name != args.system:
        ap.error(f"--config builds system {config.system.name!r}, not --system {args.system!r}")
    if args.quick and args.system == "cgcnn":
        config.system.encoder.update(QUICK_ENCODER)
    if protocol != "scratch":
        for k, v in PRESETS[protocol]["system"].items():
            config.system[k] = ml_collections.ConfigDict(v, type_safe=False) if isinstance(v, dict) else v
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        if leaf not in node:
            ap.error(f"--set {item!r}: the config has no key {key!r}")
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    print(f"command: {command}\nhardware: {json.dumps(hardware)}\nprotocol: {protocol} ({PROTOCOLS[protocol]})")

    pre_info, init_from, trainable, per_fold = None, None, None, False
    if protocol != "scratch":
        import jax

        from mmjax.data.spec import feature_spec

        per_fold = args.pretrain_scope == "fold" and not args.control
        init_from, pre_info, pre_cfg = pretrain(protocol, config, args, jax.device_count(), train=not per_fold)
        # the supervised stage sees the same features as pretraining, plus the target
        spec = dataclasses.replace(feature_spec(pre_cfg), targets=(TARGET,))
    pretrain_base = config  # the per-fold pretraining stages start from this config, as the 'all' one does
    config, trainable = downstream_config(config, protocol, TARGET, args.downstream)
    modalities = tuple(config.data.modalities)
    if protocol == "scratch":
        spec = default_spec(config)
    config.optim.update(dict(name="adamw", schedule="cosine", peak_lr=args.lr, init_lr=args.lr * 0.01,
                             end_lr=args.lr * 0.01, warmup_fraction=0.05, weight_decay=args.weight_decay,
                             clip_norm=1.0, lookahead_k=0))
    print(f"system: {args.system}, supervised-stage modalities {modalities}, trainable groups "
          f"{'all' if trainable is None else list(trainable)}")

    labels = load_matbench_labels(LABELS)
    tag = "-".join(modalities) + (f"-{spec_tag(spec)}" if protocol == "scratch" else "") + f"-{args.structures}" \
        + ("-quick" if args.quick else "")
    if protocol != "scratch":
        tag = (f"{protocol}-{spec_tag(spec)}-{args.structures}" + ("-src-labelled" if args.pretrain_source == "labelled"
                                                                   else "") + ("-quick" if args.quick else ""))
    cache = pathlib.Path(args.cache or ROOT / "runs" / "bench_cache" / TASK / tag)
    t0 = time.time()
    if protocol == "scratch":
        items = structure_items(labels, QUICK_ROWS if args.quick else None, args.structures)
        ds = featurise(items, spec, cache, args.workers)
        mbids = np.asarray(ds.ids)
        n_items = len(items)
    else:  # the pretraining store (same features, text embeddings included) + the target column
        ds, mbids = labelled_copy(pre_cfg, cache, labels, args.structures)
        n_items = len(mbids)
    t_feat = time.time() - t0
    row_of = {m: i for i, m in enumerate(labels["ids"])}
    ds_rows = np.asarray([row_of[i] for i in mbids], np.int64)
    position = np.full(len(labels["ids"]), -1, np.int64)
    position[ds_rows] = np.arange(len(ds))
    available = position >= 0
    linked = mbid_links(args.structures)  # (the store's ids are mbids, or material ids of the links file)
    skipped = [dict(r) for r in ds.manifest.skipped  # left out of training and of the score, like unlinked rows
               if str(r["id"]) in row_of or str(r["id"]) in linked]
    if skipped:
        print(f"warning: {len(skipped)} linked structures could not be featurised and are left out of training and "
              f"scoring (run.json featurisation_skipped), e.g. {skipped[0]['id']}: {skipped[0]['reason']}")
    print(f"{TASK}: {len(labels['ids'])} rows, {n_items} structures tied to a row ({args.structures}), {available.sum()} featurised "
          f"({t_feat:.1f} s, cache {cache})")

    fold_runs: dict[int, dict] = {}
    fold_iter = iter(sorted(args.folds))
    reuse = reused_folds(pathlib.Path(args.reuse_folds), args, protocol) if args.reuse_folds else {}
    out = pathlib.Path(args.out or ROOT / "benchmarks" / "results" /
                       f"{TASK}_{args.system if protocol == 'scratch' else protocol + '_protocol'}{'_control' if args.control else ''}"
                       f"{'_quick' if args.quick else ''}")
    settings = fold_settings(args, protocol)
    try:
        resumed = finished_folds(out, settings)
    except ValueError as exc:
        ap.error(str(exc))
    if resumed:
        print(f"resuming: folds {sorted(resumed)} finished earlier in {out}/folds")

    def fit(train_rows, val_rows, test_rows):
        fold = next(fold_iter)
        if fold in reuse:
            data, run, params = reuse[fold]
            pred = np.asarray([data[labels["ids"][r]] for r in test_rows], np.float64)
            fold_runs[fold] = {**run, "reused_from": args.reuse_folds}
            print(f"\n== fold {fold}: taken from {args.reuse_folds} (same settings): test MAE {run['mae']:.4f}")
            return pred, params
        if fold in resumed:
            data, run, params = resumed[fold]
            pred = np.asarray([data[labels["ids"][r]] for r in test_rows], np.float64)
            fold_runs[fold] = run
            print(f"\n== fold {fold}: finished earlier ({out}/folds/fold_{fold}.json): test MAE {run['mae']:.4f}")
            return pred, params
        if args.train_fraction < 1:
            train_rows = training_subset(train_rows, args.train_fraction, args.seed + 1000 * fold)
        steps_per_epoch = max(1, math.ceil(len(train_rows) / args.batch_size))
        steps = args.steps or args.epochs * steps_per_epoch
        eval_every = min(steps_per_epoch, steps) if not args.quick else 25
        patience = max(1, args.patience if not args.quick else 100)
        print(f"\n== fold {fold}: train {len(train_rows)}, val {len(val_rows)}, test {len(test_rows)} structures; "
              f"{steps} steps max ({steps_per_epoch}/epoch), batch {args.batch_size}")
        fold_init, fold_pre = init_from, None
        if protocol != "scratch" and per_fold:  # label-free pretraining on this fold's training structures
            import jax

            rows_mbids = [labels["ids"][r] for r in np.concatenate([train_rows, val_rows])]
            # source ids: perov_5 material ids (all structures) or mbids (--pretrain-source labelled)
            keep = (sorted(rows_mbids) if args.pretrain_source == "labelled" and not args.quick
                    else fold_structure_ids(mbid_links(args.structures), rows_mbids))
            fold_init, fold_pre, _ = pretrain(protocol, pretrain_base, args, jax.device_count(), keep=keep,
                                              name=f"fold{fold}")
        res = fit_predict(config, ds.subset(position[train_rows]), ds.subset(position[val_rows]),
                          ds.subset(position[test_rows]), target=TARGET, steps=steps, batch_size=args.batch_size,
                          eval_every=eval_every, patience=patience, seed=args.seed + fold,
                          log=print if args.verbose else None, init_from=fold_init, trainable=trainable)
        y = labels["targets"]
        mae = float(np.mean(np.abs(res.predictions - y[test_rows])))
        dummy = float(np.mean(np.abs(y[test_rows] - y[train_rows].mean())))
        print(f"   fold {fold}: test MAE {mae:.4f} eV/cell (train-mean baseline {dummy:.4f}); best val MAE "
              f"{res.best_val_mae:.4f} at step {res.best_step} of {res.steps_run}; {res.wall_s:.0f} s")
        fold_runs[fold] = {"fit": res.summary(), "mae": mae, "mae_train_mean_baseline": dummy, "steps_max": steps,
                           "val_curve": [(h["step"], round(h["val/mae"], 5)) for h in res.history]}
        if fold_pre is not None:
            fold_runs[fold]["pretraining"] = fold_pre
        params = {"system": args.system, "protocol": protocol, "steps_max": steps,
                  "best_step": res.best_step, "best_val_mae": res.best_val_mae}
        write_json(out / "folds" / f"fold_{fold}.json", {
            "fold": fold, "settings": settings, "run": fold_runs[fold], "params": params,
            "predictions": {labels["ids"][r]: float(v) for r, v in zip(test_rows, res.predictions)}})
        return res.predictions, params
    results, _ = run_matbench(TASK, labels["ids"], labels["targets"], fit, out, available=available,
                              val_fraction=args.val_fraction, seed=args.seed, folds=tuple(args.folds))

    # ------------------------------------------------------------------ table
    full_dummy = dummy_fold_maes(labels["targets"])
    rows = []
    for fold in sorted(fold_runs):
        c = results.fold_counts[f"fold_{fold}"]
        rows.append({"fold": fold, "test avail/total": f"{c['n_test_available']}/{c['n_test_total']}",
                     "train avail/total": f"{fold_runs[fold]['fit']['counts']['train'] + fold_runs[fold]['fit']['counts']['val']}"
                                          f"/{c['n_train_total']}",
                     "MAE ours": fold_runs[fold]["mae"], "train-mean (avail)": fold_runs[fold]["mae_train_mean_baseline"],
                     "Dummy (full fold)": full_dummy[fold], "best step": fold_runs[fold]["fit"]["best_step"],
                     "wall s": fold_runs[fold]["fit"]["wall_s"]})
    s = results.summary()
    rows.append({"fold": "mean", "MAE ours": s["mae"]["mean"],
                 "train-mean (avail)": float(np.mean([r["mae_train_mean_baseline"] for r in fold_runs.values()])),
                 "Dummy (full fold)": float(np.mean(full_dummy[sorted(fold_runs)]))})
    rows.append({"fold": "std", "MAE ours": s["mae"]["std"]})
    print("\n" + format_table(rows))
    lb = reported(table="matbench_v0.1_leaderboard", task=TASK)
    print("\nreported (Matbench v0.1 leaderboard, all 18,928 rows, mean ± std over 5 folds, eV/unit cell):")
    print(format_table([{"model": r.model, "MAE": r.value, "std": r.std} for r in lb]))
    paper = reported(table="xmopa_table1", task=TASK, model="X-MoPA") if protocol == "xmopa" else []
    for r in paper:
        print(f"X-MoPA paper (Table 1, full task, paper-size model + MatSciBERT text): {r.value} {r.unit}")
    if pre_info is not None and pre_info.get("control"):
        print("control: no pretraining (random initialisation, same architecture, features and schedule)")
    elif pre_info is not None and not pre_info.get("skipped"):
        print(f"pretraining: {pre_info['steps']} steps x {pre_info['batch']} on {pre_info['structures']} structures "
              f"without labels, {pre_info['wall_s']:.0f} s{' (reused)' if pre_info['reused'] else ''}")
    elif pre_info is not None:
        print("pretraining: per fold, on each fold's training structures without labels (run.json folds.*.pretraining)")
    print(f"ours: {protocol} protocol{' CONTROL (no pretraining)' if args.control else ''}, {args.system} on the {int(available.sum())} rows with structures, folds {sorted(fold_runs)}: "
          f"{s['mae']['mean']:.4f} ± {s['mae']['std']:.4f}; total {time.time() - t_start:.0f} s")
    write_json(out / "run.json", {
        "task": TASK, "protocol": protocol, "protocol_description": PROTOCOLS[protocol], "pretraining": pre_info,
        "trainable_groups": None if trainable is None else list(trainable), "feature_spec": spec.to_dict(),
        "system": args.system, "system_config": config.system.to_dict(), "command": command, "hardware": hardware, "modalities": modalities,
        "settings": {k: v for k, v in vars(args).items() if k not in ("cache", "out", "verbose")},
        "encoder": config.system.encoder.to_dict() if "encoder" in config.system else None,
        "optim": config.optim.to_dict(), "featurise_s": round(t_feat, 1), "n_structures": int(available.sum()),
        "n_linked": int(n_items), "featurisation_skipped": skipped,
        "folds": fold_runs, "summary": s, "fold_counts": results.fold_counts,
        "reported": [{"model": r.model, "mae": r.value, "std": r.std, "source": r.source} for r in lb + paper],
        "dummy_full_fold_mae": full_dummy.tolist(), "wall_s": round(time.time() - t_start, 1),
        "code_commit": git_commit(),
    })
    print(f"wrote {out}/results.json.gz, matbench_summary.json, run.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
