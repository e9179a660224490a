"""Run the ORIGINAL CGCNN and CrabNet training code, unmodified, in a separate torch venv, and time it.

The denominator of "our training command samples/s / original training samples/s" (issue #15, item 4).
This file imports only the standard library and numpy at module level, so either venv can run it:
``prepare-cgcnn`` needs pymatgen (the mmjax venv has it); ``run-cgcnn`` / ``run-crabnet`` start the
torch venv's python on the original code; ``crabnet-driver`` is what ``run-crabnet`` runs in there.

    # 1. torch venv, outside the repo (CPU wheel, no CUDA packages; pymatgen for CGCNN's CIFData,
    #    seaborn/matplotlib/tqdm for CrabNet's utils):
    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchenv/bin/pip install numpy pandas scikit-learn pymatgen seaborn
    #    (measured with torch 2.13.0+cpu, numpy 2.4, pandas 3.1, scikit-learn 1.9, pymatgen 2026.10)
    # 2. the original code, in the ignored folder .original/ (never committed):
    git clone https://github.com/txie-93/cgcnn .original/cgcnn
    git clone https://github.com/anthony-wang/CrabNet .original/CrabNet
    git -C .original/CrabNet checkout dd5b430a6e511e7d18fb5f9871e1be571fe32d90   # the code behind Table 2
    # 3. measure (2 threads, nice if the machine is shared):
    .venv/bin/python benchmarks/original_code.py prepare-cgcnn --n 4096
    .venv/bin/python benchmarks/original_code.py run-cgcnn --n 4096 --epochs 3
    .venv/bin/python benchmarks/original_code.py run-crabnet --epochs 3

CGCNN (``run-cgcnn``): ``python main.py ROOT_DIR`` of txie-93/cgcnn with its own defaults — batch 256,
atom_fea_len 64, n_conv 3, h_fea_len 128, n_h 1, SGD lr 0.01 momentum 0.9, MSE, and
``CIFData(root_dir)``'s defaults radius 8 Å, max_num_nbr 12, Gaussian step 0.2 Å (= our CGCNN row, so
nothing but the root_dir is passed as a data option) — plus ``--epochs E --workers 0 --print-freq 1``
(command-line options of main.py; ``--print-freq 1`` makes it print every training batch so that
every batch's time can be read back). Threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = ``--threads``
(main.py does not call ``torch.set_num_threads``; torch takes its intra-op thread count from
``OMP_NUM_THREADS``). The split is main.py's default: train 80 %, val 10 %, test 10 % of the
rows, after CIFData's own shuffle (seed 123).

What is timed (CGCNN): each training epoch's time is the SUM of main.py's own per-batch ``Time``
values (``batch_time.val``, printed with 3 decimals) over that epoch's training batches; one
batch's time runs from the end of the previous batch to the end of ``optimizer.step()``: fetching
the batch (``CIFData.__getitem__`` + ``collate_pool``), forward, loss, MAE bookkeeping, backward,
SGD step. Validation, checkpoint saving and the final test pass are not in it. structures/s of an
epoch = training structures (``int((1 - 0.1 - 0.1) * n)``, as ``get_train_val_test_loader``
computes it) / that sum. NOTE: ``CIFData.__getitem__`` is wrapped in ``functools.lru_cache``, so
CIF parsing and the neighbour search run once per structure, in the first epoch (and for the 500
normaliser samples before it), and later epochs read the cached graphs (``--workers 0``: one
process, so the cache is kept). The first epoch (graph building included) is reported apart as
``first_epoch``; the median is over the later epochs (``--epochs`` >= 2).

CrabNet (``run-crabnet``): CrabNet's ``Model`` (``crabnet/model.py`` at dd5b430, the code behind
the paper's Table 2) with ``CrabNet(compute_device=...)`` at its defaults (d_model 512, N 3,
heads 4, residual head 1024-512-256-128), set up as ``train_crabnet.get_model`` does it: batch
``2 ** round(log2(N_train) - 4)`` clipped to [128, 4096], ``load_data(train.csv, train=True)``,
``load_data(val.csv)``, ``fit(epochs=40)`` (Lamb + Lookahead + SWA, CyclicLR, RobustL1).
``get_model`` itself cannot be called unmodified on Linux: it builds its paths with Windows
separators (``rf'{data_dir}\\{mat_prop}\\train.csv'``), so ``crabnet-driver`` repeats its lines with
``/`` paths — that is the only shim, and it is labelled ``shim`` in the JSON. The original
``Embedder`` reads ``data/element_properties/mat2vec.csv`` relative to the working directory, so
the driver runs in a scratch folder holding that table (decompressed from
``../shared/data/element_properties/mat2vec.csv.gz``) and ``data/materials_data/<task>/{train,val}.csv``
(decompressed from ``../shared/data/crabnet_benchmarks/<task>/``).

What is timed (CrabNet): each call of ``Model.train`` (one epoch: the DataLoader over the EDM
dataset, fraction jitter, forward, RobustL1, backward, Lamb/Lookahead/SWA step, CyclicLR step);
the driver wraps the bound method with a clock and stops ``fit`` (by an exception) after
``--epochs`` calls, so the per-epoch ``predict`` passes ``fit`` makes on train and val are not
timed. samples/s = ``len(train_loader.dataset)`` (after CrabNet drops pure elements and averages
duplicate formulae) / epoch time; the median is over the epochs after the first.

Both write a JSON (per-epoch and median samples/s, torch version, threads, rows, the source of each
original file with its sha256, the command) and print a one-line summary.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STRUCTURES = SHARED / "perovskites" / "structures_all.json.gz"
LINKS = SHARED / "perovskites" / "matbench_links.csv.gz"
ATOM_INIT = SHARED / "element_properties" / "cgcnn_atom_init.json.gz"
MAT2VEC = SHARED / "element_properties" / "mat2vec.csv.gz"
CRABNET_DATA = SHARED / "crabnet_benchmarks"
ORIGINAL = ROOT / ".original"
TORCH_PYTHON = "/tmp/torchenv/bin/python"
SCRATCH_CGCNN = ROOT / "runs" / "original_cgcnn"
SCRATCH_CRABNET = ROOT / "runs" / "original_crabnet"

# Where the files of .original/ come from. A `git clone` + `checkout` of these commits is the
# reference procedure; the copies this repository's sessions used were written from a stored index
# of the public repositories, file by file, at the commits named here (`exact`: False where that
# index had no copy at the wanted commit, with the nearest one it had). Each run records the
# sha256 of the files it ran, so a run on a fresh clone can be compared.
SOURCES = {
    "cgcnn": {
        "repo": "https://github.com/txie-93/cgcnn",
        "files": {
            "main.py": "21808264b3d9db1ca8b54a26c9d581b88593df38",
            "cgcnn/data.py": "a7a6b818d51f78980865ff3851f33b37e321dce8",
            "cgcnn/model.py": "a1e1604625f4e7236ad2e231aff6b602244a9aef",
        },
        "note": "master-branch versions (dense [N, M] neighbours, list-of-index pooling); commits are "
                "those the index names for each file",
    },
    "crabnet": {
        "repo": "https://github.com/anthony-wang/CrabNet",
        "commit": "dd5b430a6e511e7d18fb5f9871e1be571fe32d90",
        "files": {
            "crabnet/model.py": ("dd5b430a6e511e7d18fb5f9871e1be571fe32d90", True),
            "utils/utils.py": ("dd5b430a6e511e7d18fb5f9871e1be571fe32d90", True),
            "crabnet/kingcrab.py": ("b07100dddf2a15fdde67fca4f2ef84aa44b1c367", False),
            "utils/optim.py": ("709893a9bfcf8a7e999703ab400f7b87fd4e2bc3 (crabnet/utils/optim.py)", False),
            "utils/composition.py": ("307698d5aa5601bfb0b73c1fd96040d91fff626c", False),
            "utils/get_compute_device.py": ("c1465bab385c6f8e46d2abacc0c8a2434ea52795", False),
        },
    },
}

CGCNN_LINE = re.compile(
    r"^Epoch: \[(\d+)\]\[(\d+)/(\d+)\]\tTime ([0-9.]+) \(([0-9.]+)\)\tData ([0-9.]+) \(([0-9.]+)\)")


# ---------------------------------------------------------------------------------------------
# helpers (stdlib + numpy)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_record(name: str, code_dir: pathlib.Path) -> dict:
    """SOURCES[name] plus the sha256 of each listed file as found in ``code_dir``."""
    src = SOURCES[name]
    files = {}
    for rel, origin in src["files"].items():
        commit, exact = origin if isinstance(origin, tuple) else (origin, True)
        p = code_dir / rel
        files[rel] = {"commit": commit, "exact": exact,
                      "sha256": sha256(p) if p.is_file() else None}
    return {k: v for k, v in src.items() if k != "files"} | {"dir": str(code_dir), "files": files}


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torch_info(torch_python: str, env: dict) -> dict:
    out = subprocess.run([torch_python, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                          "'threads': torch.get_num_threads(), 'cuda': torch.version.cuda}))"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cgcnn_train_size(n: int, val_ratio: float = 0.1, test_ratio: float = 0.1) -> int:
    """Training rows of main.py's default split (``get_train_val_test_loader``, train_ratio None)."""
    train_ratio = 1 - val_ratio - test_ratio
    return int(train_ratio * n)


def parse_cgcnn_log(text: str, n_train: int) -> list[dict]:
    """Per-epoch training time from main.py's per-batch lines (run with ``--print-freq 1``).

    Returns ``[{"epoch", "batches", "time_s", "data_s", "structures_per_s"}]``: time_s is the sum of
    the batches' ``Time`` values, data_s of their ``Data`` values. Raises ValueError when an epoch's
    batch lines are not all there (print frequency other than 1, or a cut log)."""
    epochs: dict[int, dict] = {}
    for line in text.splitlines():
        m = CGCNN_LINE.match(line)
        if not m:
            continue
        e, i, n_batches = int(m.group(1)), int(m.group(2)), int(m.group(3))
        rec = epochs.setdefault(e, {"n_batches": n_batches, "seen": set(), "time_s": 0.0, "data_s": 0.0})
        if i in rec["seen"]:
            raise ValueError(f"batch {i} of epoch {e} printed twice")
        rec["seen"].add(i)
        rec["time_s"] += float(m.group(4))
        rec["data_s"] += float(m.group(6))
    out = []
    for e in sorted(epochs):
        rec = epochs[e]
        if rec["seen"] != set(range(rec["n_batches"])):
            raise ValueError(f"epoch {e}: {len(rec['seen'])} of {rec['n_batches']} batch lines "
                             "(run main.py with --print-freq 1)")
        out.append({"epoch": e, "batches": rec["n_batches"], "time_s": round(rec["time_s"], 3),
                    "data_s": round(rec["data_s"], 3),
                    "structures_per_s": n_train / rec["time_s"] if rec["time_s"] > 0 else float("nan")})
    return out


def summarise(per_epoch: list[dict], key: str) -> dict:
    """first epoch apart, median (and spread) over the later ones."""
    later = [r[key] for r in per_epoch[1:]]
    return {"first_epoch": per_epoch[0][key] if per_epoch else None,
            "median_after_first": statistics.median(later) if later else None,
            "min_after_first": min(later) if later else None,
            "max_after_first": max(later) if later else None}


def run_logged(cmd: list[str], cwd: pathlib.Path, env: dict, log: pathlib.Path, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, time.perf_counter() - t0


def write_result(path: pathlib.Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# prepare-cgcnn


def linked_rows(n: int | None, ids_file: str | None = None) -> list[tuple[str, float]]:
    """(material_id, e_form) of matbench_links.csv.gz: the first ``n`` in file order (sorted by integer
    material_id), or the ids listed in ``ids_file`` (one per line, in that order)."""
    with gzip.open(LINKS, "rt", newline="") as fh:
        rows = [(r["material_id"], float(r["e_form"])) for r in csv.DictReader(fh)]
    if ids_file:
        wanted = [s.strip() for s in pathlib.Path(ids_file).read_text().split() if s.strip()]
        by_id = dict(rows)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise SystemExit(f"{len(missing)} ids of {ids_file} are not linked rows, e.g. {missing[:3]}")
        rows = [(i, by_id[i]) for i in wanted]
    return rows if n is None else rows[:n]


def prepare_cgcnn(n: int | None, out: pathlib.Path, ids_file: str | None = None) -> dict:
    """CGCNN root_dir: ``<id>.cif`` per structure, ``id_prop.csv`` (id, e_form), ``atom_init.json``."""
    from pymatgen.core import Structure  # the mmjax venv (or the torch venv) has it

    rows = linked_rows(n, ids_file)
    with gzip.open(STRUCTURES, "rt") as fh:
        structures = json.load(fh)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.cif"):
        old.unlink()
    for mid, _ in rows:
        s = Structure.from_str(structures[mid]["poscar"], fmt="poscar")
        (out / f"{mid}.cif").write_text(s.to(fmt="cif"))
    with open(out / "id_prop.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        for mid, e_form in rows:
            w.writerow([mid, repr(e_form)])
    with gzip.open(ATOM_INIT, "rb") as src, open(out / "atom_init.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    info = {"root_dir": str(out), "rows": len(rows), "first_ids": [r[0] for r in rows[:5]],
            "source": {"structures": str(STRUCTURES), "links": str(LINKS), "atom_init": str(ATOM_INIT)},
            "selection": f"ids of {ids_file}" if ids_file else "first n rows of matbench_links.csv.gz (file order)"}
    (out / "prepared.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ---------------------------------------------------------------------------------------------
# run-cgcnn


def run_cgcnn(args) -> dict:
    root_dir = pathlib.Path(args.root) if args.root else SCRATCH_CGCNN / str(args.n)
    code = pathlib.Path(args.cgcnn_dir)
    if not (root_dir / "id_prop.csv").is_file():
        raise SystemExit(f"{root_dir} has no id_prop.csv: run prepare-cgcnn --n {args.n} first")
    if not (code / "main.py").is_file():
        raise SystemExit(f"{code}/main.py missing: clone txie-93/cgcnn there (see the module docstring)")
    with open(root_dir / "id_prop.csv") as fh:
        n_rows = sum(1 for _ in csv.reader(fh))
    n_train = cgcnn_train_size(n_rows)
    work = root_dir / "train"
    work.mkdir(exist_ok=True)
    env = thread_env(args.threads)
    cmd = [args.torch_python, str((code / "main.py").resolve()), str(root_dir.resolve()),
           "--epochs", str(args.epochs), "--batch-size", "256", "--workers", "0", "--print-freq", "1"]
    log = work / "main.log"
    rc, wall = run_logged(cmd, work, env, log, args.timeout)
    text = log.read_text(errors="replace")
    if rc != 0:
        raise SystemExit(f"main.py exited {rc}; last lines of {log}:\n" + "\n".join(text.splitlines()[-20:]))
    per_epoch = parse_cgcnn_log(text, n_train)
    result = {
        "what": "original CGCNN main.py training throughput (structures/s per training epoch)",
        "per_epoch": per_epoch,
        "structures_per_s": summarise(per_epoch, "structures_per_s"),
        "timed": "sum of main.py's per-batch Time over each epoch's training batches (data fetch incl. "
                 "CIFData.__getitem__ + collate, forward, backward, SGD); validation/checkpoints excluded; "
                 "__getitem__ is lru_cached, so graphs are built in the first epoch only",
        "rows": n_rows, "train_structures": n_train, "batch_size": 256, "epochs": args.epochs,
        "model": {"atom_fea_len": 64, "n_conv": 3, "h_fea_len": 128, "n_h": 1, "radius": 8,
                  "max_num_nbr": 12, "step": 0.2, "optim": "SGD lr 0.01 momentum 0.9"},
        "threads_env": args.threads, "torch": torch_info(args.torch_python, env),
        "wall_s_main_py": round(wall, 1), "root_dir": str(root_dir), "log": str(log),
        "source": source_record("cgcnn", code), "command": cmd,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_result(pathlib.Path(args.out) if args.out else work / "result.json", result)
    s = result["structures_per_s"]
    print(f"original CGCNN main.py: {s['median_after_first']:.0f} structures/s (median of epochs 2..{args.epochs}; "
          f"first epoch incl. graph building {s['first_epoch']:.0f}) | {n_train} train structures, batch 256, "
          f"{args.threads} threads, torch {result['torch']['torch']}")
    return result


# ---------------------------------------------------------------------------------------------
# run-crabnet (host side) and crabnet-driver (inside the torch venv)


def prepare_crabnet_scratch(task: str, scratch: pathlib.Path, rows: int | None = None) -> pathlib.Path:
    """``data/materials_data/<task>/{train,val}.csv`` (all rows, or the first ``rows`` data rows of each:
    smoke checks only) and ``data/element_properties/mat2vec.csv`` under ``scratch``."""
    data = scratch / "data" / "materials_data" / task
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        with gzip.open(CRABNET_DATA / task / f"{split}.csv.gz", "rt", newline="") as src:
            lines = src.readlines()
        keep = lines if rows is None else lines[:rows + 1]  # + header
        (data / f"{split}.csv").write_text("".join(keep))
    props = scratch / "data" / "element_properties"
    props.mkdir(parents=True, exist_ok=True)
    with gzip.open(MAT2VEC, "rb") as src, open(props / "mat2vec.csv", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return scratch


def run_crabnet(args) -> dict:
    code = pathlib.Path(args.crabnet_dir).resolve()
    if not (code / "crabnet" / "model.py").is_file():
        raise SystemExit(f"{code}/crabnet/model.py missing: clone anthony-wang/CrabNet there at dd5b430 "
                         "(see the module docstring)")
    scratch = prepare_crabnet_scratch(args.task, SCRATCH_CRABNET / args.task, args.rows)
    env = thread_env(args.threads)
    raw = scratch / "driver.json"
    cmd = [args.torch_python, str(pathlib.Path(__file__).resolve()), "crabnet-driver", "--crabnet-dir", str(code),
           "--task", args.task, "--epochs", str(args.epochs), "--out", str(raw)]
    log = scratch / "crabnet.log"
    rc, wall = run_logged(cmd, scratch, env, log, args.timeout)
    if rc != 0:
        text = log.read_text(errors="replace")
        raise SystemExit(f"crabnet-driver exited {rc}; last lines of {log}:\n" + "\n".join(text.splitlines()[-25:]))
    drv = json.loads(raw.read_text())
    per_epoch = [{"epoch": i, "time_s": round(t, 3), "samples_per_s": drv["train_samples"] / t}
                 for i, t in enumerate(drv["epoch_s"])]
    result = {
        "what": "original CrabNet Model.train throughput (samples/s per training epoch)",
        "per_epoch": per_epoch,
        "samples_per_s": summarise(per_epoch, "samples_per_s"),
        "timed": "each Model.train call (one epoch over train_loader: EDM DataLoader, jitter, forward, RobustL1, "
                 "backward, Lamb+Lookahead+SWA step, CyclicLR step); fit's predict passes excluded",
        "task": args.task, "rows_limit": args.rows, "train_samples": drv["train_samples"], "batch_size": drv["batch_size"],
        "model": drv["model"], "epochs": args.epochs, "threads_env": args.threads,
        "torch": {"torch": drv["torch"], "threads": drv["torch_threads"]},
        "shim": drv["shim"], "wall_s_driver": round(wall, 1), "log": str(log),
        "source": source_record("crabnet", code), "command": cmd,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_result(pathlib.Path(args.out) if args.out else scratch / "result.json", result)
    s = result["samples_per_s"]
    med = s["median_after_first"]
    print(f"original CrabNet Model.train ({args.task}): "
          + (f"{med:.0f} samples/s (median of epochs 2..{args.epochs}; " if med else "(")
          + f"first epoch {s['first_epoch']:.0f}) | {drv['train_samples']} train samples, batch {drv['batch_size']}, "
          f"{drv['torch_threads']} threads, torch {drv['torch']}")
    return result


class _EnoughEpochs(Exception):
    pass


def crabnet_driver(args) -> None:
    """Runs inside the torch venv, in the scratch folder (cwd): train_crabnet.get_model's lines with
    '/' paths, Model.train timed per call. Everything else is the original code, unchanged."""
    import types

    code = pathlib.Path(args.crabnet_dir).resolve()
    here = pathlib.Path(__file__).resolve().parent  # benchmarks/: its crabnet.py would shadow the `crabnet` package
    sys.path[:] = [str(code)] + [q for q in sys.path if q and pathlib.Path(q).resolve() != here]
    import pandas as pd
    import torch
    from crabnet.kingcrab import CrabNet
    from crabnet.model import Model
    from utils.get_compute_device import get_compute_device
    import utils.utils

    for mod in (sys.modules["crabnet.model"], sys.modules["crabnet.kingcrab"], utils.utils):
        if not pathlib.Path(mod.__file__).resolve().is_relative_to(code):
            raise SystemExit(f"{mod.__name__} imported from {mod.__file__}, not from {code}")

    # --- train_crabnet.py (dd5b430): module level + get_model(data_dir, mat_prop), paths with '/' ---
    compute_device = get_compute_device(prefer_last=True)
    RNG_SEED = 42
    torch.manual_seed(RNG_SEED)
    np.random.seed(RNG_SEED)
    data_dir, mat_prop = "data/materials_data", args.task
    model = Model(CrabNet(compute_device=compute_device).to(compute_device),
                  model_name=f'{mat_prop}', verbose=True)
    train_data = f'{data_dir}/{mat_prop}/train.csv'
    val_data = f'{data_dir}/{mat_prop}/val.csv'
    data_size = pd.read_csv(train_data).shape[0]
    batch_size = 2**round(np.log2(data_size)-4)
    if batch_size < 2**7:
        batch_size = 2**7
    if batch_size > 2**12:
        batch_size = 2**12
    model.load_data(train_data, batch_size=batch_size, train=True)
    print(f'training with batchsize {model.batch_size} '
          f'(2**{np.log2(model.batch_size):0.3f})')
    model.load_data(val_data, batch_size=batch_size)
    # --- end of get_model's data setup; it then calls model.fit(epochs=40, losscurve=False) ---

    epoch_s: list[float] = []
    original_train = model.train

    def timed_train(self):
        t0 = time.perf_counter()
        original_train()
        epoch_s.append(time.perf_counter() - t0)
        print(f"[original_code] Model.train call {len(epoch_s)}: {epoch_s[-1]:.2f} s", flush=True)
        if len(epoch_s) >= args.epochs:
            raise _EnoughEpochs

    model.train = types.MethodType(timed_train, model)
    try:
        model.fit(epochs=40, losscurve=False)
    except _EnoughEpochs:
        pass
    m = model.model
    out = {"epoch_s": epoch_s, "train_samples": len(model.train_loader.dataset), "batch_size": model.batch_size,
           "model": {"out_dims": m.out_dims, "d_model": m.d_model, "N": m.N, "heads": m.heads,
                     "parameters": sum(p.numel() for p in m.parameters() if p.requires_grad)},
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "shim": "train_crabnet.get_model's data setup repeated with '/' path separators (the original "
                   "builds Windows paths rf'{data_dir}\\{mat_prop}\\train.csv'); Model.train wrapped with a "
                   "clock; fit(epochs=40) stopped after --epochs Model.train calls"}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("prepare-cgcnn", help="write the CGCNN root_dir (CIFs, id_prop.csv, atom_init.json)")
    a.add_argument("--n", type=int, default=4096, help="rows: the first n of matbench_links.csv.gz")
    a.add_argument("--ids", default=None, help="file of material_ids (one per line) to use instead")
    a.add_argument("--out", default=None, help="root_dir (default runs/original_cgcnn/<n>)")

    b = sub.add_parser("run-cgcnn", help="run the original main.py on a prepared root_dir and time it")
    b.add_argument("--n", type=int, default=4096)
    b.add_argument("--root", default=None, help="root_dir (default runs/original_cgcnn/<n>)")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--torch-python", default=TORCH_PYTHON)
    b.add_argument("--cgcnn-dir", default=str(ORIGINAL / "cgcnn"))
    b.add_argument("--timeout", type=float, default=3600)
    b.add_argument("--out", default=None, help="result JSON (default <root_dir>/train/result.json)")

    c = sub.add_parser("run-crabnet", help="run the original CrabNet Model.train for a few epochs and time it")
    c.add_argument("--task", default="mp_bulk_modulus")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--torch-python", default=TORCH_PYTHON)
    c.add_argument("--crabnet-dir", default=str(ORIGINAL / "CrabNet"))
    c.add_argument("--timeout", type=float, default=3600)
    c.add_argument("--rows", type=int, default=None,
                   help="first ROWS rows of train.csv and val.csv only (a smoke check, not the measurement)")
    c.add_argument("--out", default=None, help="result JSON (default runs/original_crabnet/<task>/result.json)")

    d = sub.add_parser("crabnet-driver", help="(internal; torch venv) the timed CrabNet run")
    d.add_argument("--crabnet-dir", required=True)
    d.add_argument("--task", required=True)
    d.add_argument("--epochs", type=int, required=True)
    d.add_argument("--out", required=True)

    args = p.parse_args(argv)
    if args.cmd == "prepare-cgcnn":
        out = pathlib.Path(args.out) if args.out else SCRATCH_CGCNN / str(args.n)
        info = prepare_cgcnn(args.n, out, args.ids)
        print(f"prepared {info['rows']} structures in {info['root_dir']}")
    elif args.cmd == "run-cgcnn":
        run_cgcnn(args)
    elif args.cmd == "run-crabnet":
        run_crabnet(args)
    else:
        crabnet_driver(args)


if __name__ == "__main__":
    main()
