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
