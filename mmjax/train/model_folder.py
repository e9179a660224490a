"""A trained workdir is a self-contained model folder: read-only modes take the model from it.

Every checkpoint stores the config that trained it (``meta["config"]``). ``predict`` / ``embed`` /
``evaluate`` call `training_config` so they need no copy of the training run's ``--config.…``
overrides: the stored values replace the given config's

* model keys (`MODEL_KEYS`: the system, the modalities and targets, the featurisation settings,
  the text model) — a command-line override that gives one of them another value than the
  trained model has is refused, naming the key (it would build another model);
* data keys (the rest of ``config.data``: source, split, cache folder, batch size, …) — unless
  the user overrides them on the command line (e.g. ``--config.data.predict_split=all``).

Everything else (``train``, ``optim``, ``checkpoint``, ``mesh``, ``seed``) stays as given: a
read-only mode reads only the parameters. A workdir without a readable config (checkpoints from
before configs were stored, or none at all) leaves the config unchanged.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping

import ml_collections

from mmjax.train.loop import _flatten, config_json

# Dotted prefixes of the keys that define the trained model (its parameters and its inputs).
MODEL_KEYS = ("system", "data.modalities", "data.targets", "data.target_dims", "data.features", "data.text_model", "data.text_pooling",
              "data.normalize_targets")
DATA_PREFIX = "data."


class ModelOverride(ValueError):
    """A command-line override would change the model stored in the workdir."""


def _is_model_key(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MODEL_KEYS)


def _tuples(v):
    """JSON lists back to the tuples configs use; dicts converted recursively."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def _plain(v):
    """An override value as the stored JSON has it (tuples -> lists, ConfigDicts -> dicts)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (dict, ml_collections.ConfigDict)):
        return {k: _plain(x) for k, x in v.items()}
    return v


def stored_config(workdir: str) -> dict | None:
    """The config (plain JSON dict) of the newest checkpoint in ``workdir`` whose metadata reads
    (``checkpoints/<step>/meta/metadata``, the JSON Orbax writes), or None (no checkpoint, or none
    with a stored config). Only reads files."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        return None
    steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
    for step in steps:
        try:
            with open(os.path.join(directory, str(step), "meta", "metadata"), encoding="utf-8") as fh:
                cfg = json.load(fh).get("config")
        except (OSError, ValueError, AttributeError):  # an unreadable step: the parameter restore reports it
            continue
        if cfg:
            return cfg
    return None


def training_config(config: ml_collections.ConfigDict, workdir: str,
                    overrides: Mapping[str, Any] | None = None, log=print) -> ml_collections.ConfigDict:
    """``config`` with the model and data keys of the run stored in ``workdir`` (module docstring).

    overrides: the command line's ``--config.<key>=value`` pairs (dotted key -> value); a model key
        among them whose value differs from the stored one raises `ModelOverride` naming it.
    Returns a new ConfigDict (``config`` is not changed); prints one line when keys were taken.
    """
    stored = stored_config(workdir)
    if stored is None:
        return config
    overrides = dict(overrides or {})
    old = _flatten(stored)
    refused = [f"--config.{k}={_plain(v)!r} (the model in {workdir} was trained with {old[k]!r})"
               for k, v in sorted(overrides.items())
               if _is_model_key(k) and k in old and _plain(v) != old[k]]
    if refused:
        raise ModelOverride("these overrides change the trained model: " + "; ".join(refused)
                            + ". Drop them (predict / embed / evaluate read the model from the workdir), "
                            "or train a new model in another --workdir")
    given = _flatten(config_json(config))
    c = copy.deepcopy(config)
    with c.unlocked():
        # Subtrees are replaced whole, so a model trained with another system's config rebuilds exactly.
        for top in ("system", "data"):
            if top not in stored:
                continue
            keep = {k: v for k, v in overrides.items() if k.startswith(top + ".") and not _is_model_key(k)}
            section = ml_collections.ConfigDict(_tuples(stored[top]), type_safe=False)
            if top == "data":  # data keys the given config has and the stored one lacks are kept
                for k, v in c.data.items():
                    if k not in section:
                        section[k] = v
            for key, value in keep.items():
                *parents, leaf = key.split(".")[1:]
                node = section
                for p in parents:
                    node = node[p]
                node[leaf] = value
            c[top] = section
        now = _flatten(config_json(c))
        taken = sorted(k for k in set(now) | set(given)
                       if (k.startswith("system.") or k.startswith(DATA_PREFIX)) and now.get(k) != given.get(k))
    if taken and log is not None:
        shown = ", ".join(f"{k}={now.get(k, '<absent>')!r}" for k in taken[:4])
        log(f"using the training config stored in {workdir} for {len(taken)} key(s) that differ from --config "
            f"({shown}{', ...' if len(taken) > 4 else ''})")
    return c
