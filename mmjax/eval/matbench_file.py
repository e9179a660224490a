"""Convert our Matbench results file into one that ``matbench`` 0.6 loads.

    python -m mmjax.eval.matbench_file benchmarks/results/<run>/results.json.gz results_matbench.json

`mmjax.eval.matbench.MatbenchResults` writes Matbench's layout with its own hash and extra fold
counts; ``MatbenchBenchmark.from_file`` (matbench 0.6) additionally checks

* the class names (``matbench.bench.MatbenchBenchmark``, ``matbench.task.MatbenchTask``) and
  version ``"0.6"``;
* a hash: SHA-256 of ``json.dumps`` of the dictionary without ``"hash"``, every nested dict's
  keys sorted (``matbench.util.hash_dictionary``), reproduced by :func:`matbench_hash`;
* every fold recorded with a prediction for **every** test row of the official split.

So only complete runs convert: a run over part of a task (e.g. the perovskites that have a
structure offline, ~79 % of each fold) is refused with the counts, never padded with made-up
predictions. The file is plain JSON (``from_file`` reads text, not gzip).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
from typing import Any

MATBENCH_VERSION = "0.6"


def _sorted(d: dict) -> dict:
    """``matbench.util.immutify_dictionary`` on JSON data: nested dicts with sorted keys."""
    return {k: (_sorted(v) if isinstance(v, dict) else v) for k, v in sorted(d.items())}


def matbench_hash(d: dict) -> str:
    """matbench 0.6's ``hash_dictionary`` of a JSON-able dict (``"hash"`` excluded by the caller)."""
    return hashlib.sha256(json.dumps(_sorted(json.loads(json.dumps(d)))).encode("utf-8")).hexdigest()


def read_results(path: str | os.PathLike) -> dict:
    """Our ``results.json[.gz]`` as a dict."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)


def to_matbench(ours: dict) -> dict:
    """The matbench-0.6 dictionary for a complete run of ours (raises ValueError naming what is
    missing: folds, or test rows without a prediction)."""
    meta = dict(ours.get("user_metadata") or {})
    counts = meta.get("fold_counts", {})
    tasks = {}
    for name, task in ours["tasks"].items():
        results = task["results"]
        missing = [f"fold_{k}" for k in range(5) if f"fold_{k}" not in results]
        if missing:
            raise ValueError(f"{name}: folds {missing} were not run; matbench 0.6 loads only all five folds")
        short = [f"{k} has {c['n_test_available']} of {c['n_test_total']} test rows"
                 for k, c in sorted(counts.items()) if c["n_test_available"] != c["n_test_total"]]
        if short:
            raise ValueError(f"{name}: {'; '.join(short)}. matbench 0.6 validates a prediction for every test "
                             "row, so a run over part of the task cannot be converted (nothing is filled in).")
        tasks[name] = {
            "@module": "matbench.task", "@class": "MatbenchTask", "benchmark_name": task["benchmark_name"],
            "dataset_name": task["dataset_name"],
            "results": {k: {key: v[key] for key in ("data", "parameters", "scores") if key in v}
                        | ({"uncertainty": v["uncertainty"]} if v.get("uncertainty") is not None else {})
                        for k, v in sorted(results.items())},
        }
    d = {"@module": "matbench.bench", "@class": "MatbenchBenchmark", "version": MATBENCH_VERSION,
         "tasks": tasks, "user_metadata": {**meta, "converted_from": ours.get("@module", "")},
         "benchmark_name": ours["benchmark_name"], "datestamp": ours["datestamp"]}
    d["hash"] = matbench_hash(d)
    return d


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Read ours at ``src``, write the matbench-0.6 file at ``dst`` (refuses to overwrite)."""
    d = to_matbench(read_results(src))
    dst = os.fspath(dst)
    if os.path.exists(dst):
        raise FileExistsError(f"{dst} exists; give another output path")
    with open(dst, "x") as fh:
        json.dump(d, fh)
    return dst


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="our results.json[.gz]")
    ap.add_argument("output", help="matbench-0.6 JSON to write (must not exist)")
    args = ap.parse_args(argv)
    try:
        print(f"wrote {convert(args.results, args.output)} (matbench {MATBENCH_VERSION} MatbenchBenchmark.from_file)")
    except (ValueError, FileExistsError) as exc:
        ap.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
