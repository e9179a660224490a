"""Persistent XLA compilation cache (on by default): a second run of the same config loads its
compiled programs from disk instead of compiling them again.

``config.train.compilation_cache_dir``: ``"auto"`` (default) = ``$XDG_CACHE_HOME/mmjax/xla`` or
``~/.cache/mmjax/xla``; ``""`` disables; any other value is the folder. JAX keys every entry on
the program, the compile options, the backend and the jax/jaxlib versions, so a changed model,
shape or version compiles anew. JAX's key does not name the host CPU, yet XLA:CPU code is
compiled for the host's instruction set: an entry written on another CPU (a home folder shared
across cluster nodes, a disk image moved to another machine) can abort the process when it runs
(measured: entries from an AMD EPYC host aborted a run on an Intel Xeon host). So the entries
live in ``<folder>/host-<fingerprint>``, one sub-folder per CPU model + feature flags + jax /
jaxlib version (`host_fingerprint`), and are only ever loaded on the host kind that wrote them.
Programs that compile in under ``MIN_COMPILE_S`` seconds are not stored.
"""

from __future__ import annotations

import hashlib
import os
import platform

import jax
import jaxlib

MIN_COMPILE_S = 0.5
_enabled: str | None = None


def cpu_description() -> str:
    """The host CPU as XLA:CPU compiles for it: model name and feature flags (``/proc/cpuinfo``;
    ``platform.processor()`` where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return platform.processor()
    keep = {}
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "flags", "features", "cpu part", "vendor_id") and key not in keep:
            keep[key] = " ".join(sorted(value.split())) if key in ("flags", "features") else value.strip()
    return "\n".join(f"{k}: {v}" for k, v in sorted(keep.items())) or platform.processor()


def host_fingerprint() -> str:
    """12 hex characters naming the compile target: machine, CPU (`cpu_description`), jax and
    jaxlib versions."""
    text = "\n".join([platform.machine(), cpu_description(), jax.__version__, jaxlib.__version__])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_dir(setting: str) -> str:
    """The folder ``setting`` names, with this host's sub-folder (``host-<fingerprint>``); "" when
    disabled."""
    if not setting:
        return ""
    if setting != "auto":
        base = os.path.abspath(os.path.expanduser(setting))
    else:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(root, "mmjax", "xla")
    return os.path.join(base, f"host-{host_fingerprint()}")


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
