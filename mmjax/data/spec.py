"""What a config asks of the data, resolved without the training engine (used by `mmjax.systems`
and `mmjax.train.data`; `mmjax.data` never imports `mmjax.train`)."""

from __future__ import annotations


def config_targets(config) -> tuple[str, ...]:
    """Target names a run batches: ``config.data.targets``, else the keys of ``config.system.targets``."""
    data = config.get("data", None) if hasattr(config, "get") else None
    names = tuple((data.get("targets", ()) if data is not None else ()) or ())
    if not names and "targets" in config.system and config.system.targets is not None:
        t = config.system.targets
        names = tuple(t.keys() if hasattr(t, "keys") else t)
    return names


def config_target_dims(config) -> dict[str, int]:
    """``{target: components}`` of the vector regression targets a config declares:
    ``config.data.target_dims`` (e.g. ``{"elastic_tensor": 21}``) and any ``(d,)`` entry of
    ``config.system.targets``. Scalar targets are not listed. Raises on a width < 1 or on two
    declarations that disagree (naming the key)."""
    data = config.get("data", None) if hasattr(config, "get") else None
    dims = {}
    declared = data.get("target_dims", None) if data is not None else None
    for name, d in (dict(declared.items()) if declared is not None else {}).items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"config.data.target_dims.{name}={d!r}: a vector target's component count is an int >= 1")
        dims[str(name)] = int(d)
    system = config.get("system", None) if hasattr(config, "get") else None
    targets = system.get("targets", None) if system is not None else None
    for name, n in (dict(targets.items()) if targets is not None and hasattr(targets, "items") else {}).items():
        if name in dims and not isinstance(n, (tuple, list)):
            raise ValueError(f"target {name!r}: config.system.targets.{name}={n!r} is a class count (or 1, a scalar) "
                             f"but config.data.target_dims declares {dims[name]} components; write "
                             f"config.system.targets.{name}=({dims[name]},)")
        if isinstance(n, (tuple, list)):
            d = int(n[0]) if len(n) == 1 else -1
            if d < 1:
                raise ValueError(f"config.system.targets.{name}={n!r}: a vector target is (components,)")
            if dims.get(name, d) != d:
                raise ValueError(f"target {name!r}: config.system.targets gives {d} components, "
                                 f"config.data.target_dims {dims[name]}")
            dims[str(name)] = d
    return dims


def check_target_shapes(schema: dict, config, targets) -> None:
    """Each regression target's per-record shape in a dataset ``schema`` (manifest) agrees with
    the config: ``[]`` for a scalar target, ``[d]`` where `config_target_dims` declares ``d``.
    Raises ValueError naming the target and the config key to set."""
    dims = config_target_dims(config)
    for name in targets:
        entry = schema.get(f"target/{name}")
        if entry is None:
            if name in dims and f"label/{name}" in schema:
                raise ValueError(f"config.data.target_dims.{name}: {name!r} is a classification label, not a vector")
            continue
        shape = tuple(entry["shape"])
        want = (dims[name],) if name in dims else ()
        if shape == want:
            continue
        if not want:
            raise ValueError(f"target {name!r} has {shape[0]} components per record in the dataset; declare it "
                             f"with config.data.target_dims.{name}={shape[0]}")
        got = "a scalar" if not shape else f"{shape[0]} components"
        raise ValueError(f"config.data.target_dims.{name}={dims[name]}, but the dataset's target/{name} is {got} "
                         "per record")
