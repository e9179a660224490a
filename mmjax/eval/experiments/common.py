"""Helpers shared by the analyses of `mmjax.eval.experiments` (config copies, model loading, outputs, charts)."""

from __future__ import annotations

import copy
import os

import jax
import ml_collections
import numpy as np

from mmjax.data.cache import prepare_dataset
from mmjax.data.schema import CRYSTAL_SYSTEMS
from mmjax.data.spec import config_targets
from mmjax.eval.report import new_figure, save_figure
from mmjax.systems import build_system
from mmjax.train import mesh as mesh_lib
from mmjax.train.checkpoint import load_params
from mmjax.train.data import build_iterator
from mmjax.train.outputs import collect_outputs


SPACE_GROUP_CLASSES = 231  # MatBind linear probe: labels 1..230 and 0 = unknown


CLASS_LABELS = ("crystal_system", "space_group")


def copy_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return copy.deepcopy(config)


def with_values(config: ml_collections.ConfigDict, **values) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys (``"train.steps"``, written with ``__``) set."""
    c = copy_config(config)
    with c.unlocked():
        for dotted, value in values.items():
            *path, last = dotted.split("__")
            node = c
            for p in path:
                node = node[p]
            node[last] = value
    return c


def shared_data_config(config: ml_collections.ConfigDict, workdir: str,
                       model_dir: str | None = None) -> ml_collections.ConfigDict:
    """`config` with ``data.data_dir`` set so that every run of an analysis reads one featurised
    cache: the config's own ``data_dir`` if set, else ``<model_dir>/data`` when that exists (the
    trained model's cache), else ``<workdir>/data``."""
    if config.data.get("data_dir", ""):
        return copy_config(config)
    home = os.path.join(os.path.abspath(model_dir), "data") if model_dir else ""
    if not (home and os.path.isdir(home)):
        home = os.path.join(os.path.abspath(workdir), "data")
    return with_values(config, data__data_dir=home)


def config_target_names(config) -> tuple[str, ...]:

    return tuple(config_targets(config))


def open_dataset(config, workdir):

    return prepare_dataset(config, workdir)


def show(text: str) -> None:
    if jax.process_index() == 0:
        print(text, flush=True)


def load_model_params(model_dir: str):
    """Parameters of the newest checkpoint under `model_dir` (a workdir, its ``checkpoints/`` or a
    step folder), replicated over this process's mesh. Returns (params, shardings, mesh)."""
    mesh = mesh_lib.make_mesh()
    rep = mesh_lib.replicated(mesh)
    params = jax.device_put(load_params(model_dir), rep)
    return params, jax.tree.map(lambda _: rep, params), mesh


def split_outputs(config, model_dir: str, method: str, split: str, *, with_targets: bool = False) -> dict:
    """``System.<method>`` (``"predict"`` / ``"embed"``) of the model in `model_dir` over one pass of
    `split` of the configured data: ``{output: [n, ...], "ids": [n]}`` (`collect_outputs`)."""
    system = build_system(config)
    params, shardings, mesh = load_model_params(model_dir)
    it = build_iterator(config, split, workdir=model_dir)
    return collect_outputs(getattr(system, method), params, shardings, mesh, it, with_targets=with_targets)


def stage_steps(config) -> int:
    return int(config.train.steps)


def make_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def bar_chart(values: dict[tuple[str, str], float], ylabel: str, path: str, baseline: dict | None = None) -> None:
    """Grouped bars: groups = first key part, bars = second."""
    groups = list(dict.fromkeys(g for g, _ in values))
    bars = list(dict.fromkeys(b for _, b in values))
    fig, ax = new_figure()
    width = 0.8 / max(1, len(bars))
    for j, b in enumerate(bars):
        xs = [i + j * width for i, g in enumerate(groups) if (g, b) in values]
        ax.bar(xs, [values[(g, b)] for g in groups if (g, b) in values], width, label=b)
    if baseline:
        for i, g in enumerate(groups):
            if g in baseline:
                ax.hlines(baseline[g], i - 0.5 * width, i + (len(bars) - 0.5) * width, colors="k", linestyles="--")
    ax.set_xticks([i + 0.5 * width * (len(bars) - 1) for i in range(len(groups))], groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def dataset_labels(dataset, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Labels of the materials `ids` from the stored dataset: ``space_group`` int [n] (1..230, 0 =
    unknown), ``crystal_system`` int [n] (index into CRYSTAL_SYSTEMS, -1 = unknown) and every
    regression target ``<name>`` float [n] ([n, d] for a vector target; NaN = missing)."""
    pos = {str(i): k for k, i in enumerate(np.asarray(dataset.ids))}
    missing = [i for i in ids if str(i) not in pos]
    if missing:
        raise KeyError(f"ids not in the dataset at {dataset.root}: {missing[:5]}")
    rows = np.array([pos[str(i)] for i in ids], dtype=np.int64)
    out = {}
    for name, unknown in (("space_group", 0), ("crystal_system", -1)):
        key = f"label/{name}"
        if key in dataset.manifest.schema:
            present, values = dataset.column(key)
            out[name] = np.where(present, values, unknown).astype(np.int64)[rows]
    for name in dataset.manifest.target_names:
        present, values = dataset.column(f"target/{name}")
        present = present.reshape(present.shape + (1,) * (values.ndim - 1))  # a vector target: per row
        out[name] = np.where(present, values.astype(np.float64), np.nan)[rows]
    return out


def class_names(target: str) -> list[str] | None:
    """Display names of the class labels of `target` as predictions carry them (real labels:
    crystal system index -> name; space group 1..230 -> its number)."""
    return list(CRYSTAL_SYSTEMS) if target == "crystal_system" else None
