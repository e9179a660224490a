"""Persistent XLA compilation cache (on by default): a second run of the same config loads its
compiled programs from disk instead of compiling them again.

``config.train.compilation_cache_dir``: ``"auto"`` (default) = ``$XDG_CACHE_HOME/mmjax/xla`` or
``~/.cache/mmjax/xla``; ``""`` disables; any other value is the folder. JAX keys every entry on
the program, the compile options, the backend and the jax/jaxlib versions, so a changed model,
shape or version compiles anew (the cache is never reused for other inputs). Programs that compile
in under ``MIN_COMPILE_S`` seconds are not stored.
"""

from __future__ import annotations

import os

import jax

MIN_COMPILE_S = 0.5
_enabled: str | None = None


def cache_dir(setting: str) -> str:
    """The folder ``setting`` names ("" when disabled)."""
    if not setting:
        return ""
    if setting != "auto":
        return os.path.abspath(os.path.expanduser(setting))
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mmjax", "xla")


def enable(setting: str = "auto") -> str:
    """Point JAX's persistent compilation cache at ``cache_dir(setting)``; returns the folder ("" = off).
    Idempotent; an unwritable folder disables the cache with one warning line instead of failing."""
    global _enabled
    path = cache_dir(setting)
    if path == _enabled:
        return path
    if not path:
        _reset_if_initialised()
        jax.config.update("jax_compilation_cache_dir", None)
        _enabled = ""
        return ""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        print(f"warning: compilation cache disabled: cannot create {path} ({err.strerror}); "
              "set --config.train.compilation_cache_dir", flush=True)
        _enabled = ""
        return ""
    _reset_if_initialised()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = path
    return path


def _reset_if_initialised() -> None:
    """JAX opens its cache once, at the first compilation; a later change of folder (another run in
    the same process, e.g. tests or notebooks) needs the cache object reset to take effect."""
    try:
        from jax._src import compilation_cache as cc  # no public API for this in jax 0.10
    except ImportError:  # pragma: no cover - a newer jax without the module: folder set at start only
        return
    if cc.is_initialized():
        cc.reset_cache()
