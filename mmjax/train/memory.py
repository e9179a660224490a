"""Know a train step's memory before the (minutes-long) XLA compile, and stop early when it cannot fit.

`step_memory` traces the train step to a jaxpr (seconds, no compile) and reads every array the
program creates — forward, backward and optimiser update, inside scans and nested jits too:

* ``peak_bytes``: the inputs plus the most bytes alive at once when the program runs in order,
  each array freed after its last use (`_peak`). XLA fuses elementwise chains (fewer arrays) but
  also keeps buffers for its own schedule; measured 2026-12-02 on CPU with
  ``benchmarks/memory_estimate.py``, XLA's compiled peak
  (``memory_analysis()``: temp + arguments + outputs) was 0.94x ... 1.76x of this estimate
  (``configs/xxact.py:small`` 19.1 MB vs 20.3 MB estimated; ``configs/cgcnn.py`` 275 MB vs 170 MB;
  the paper-size ``configs/xxact.py`` pretraining step asked for 141.7 GB in its out-of-memory
  error vs 81.2 GB estimated, so on a 2-core 24 GiB machine it now stops after ~30 s, not 9 min).
* ``lower_bytes``: two copies of the training state plus the single largest array — no schedule
  needs less. ``upper_bytes``: the state plus every array of the step at once. For information.

`check_step_memory` raises `StepTooLarge` (one message: the memory needed, the largest array and
where it is made, the ways out) when ``peak_bytes`` exceeds the available memory: on CPU the
host's ``MemAvailable``, on an accelerator its ``bytes_limit``. The estimate runs below XLA's
figure on these configs, so a refusal means the step would not fit; a step that passes can still
be too large by up to that factor. ``config.train.memory_check`` (default True) turns it off.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

GIB = 2.0 ** 30


class StepTooLarge(MemoryError):
    """The train step cannot fit in the device's memory (raised before compiling it)."""


@dataclasses.dataclass
class StepMemory:
    state_bytes: int      # parameters + optimiser state (one copy)
    largest_bytes: int    # the largest array the step creates
    largest_what: str     # its shape, dtype and the primitive that makes it
    total_bytes: int      # every array the step creates, summed (scan bodies times their length)
    peak_bytes: int = 0   # liveness estimate: inputs + arrays alive at once in program order (`_peak`)

    @property
    def lower_bytes(self) -> int:
        return 2 * self.state_bytes + self.largest_bytes

    @property
    def upper_bytes(self) -> int:
        return 2 * self.state_bytes + self.total_bytes


def _aval_bytes(aval) -> int:
    shape = getattr(aval, "shape", None)
    dtype = getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:  # e.g. PRNG key dtypes
        return 0
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _sub_jaxprs(eqn):
    """(jaxpr, multiplicity) of the sub-programs of one equation (scan bodies run `length` times)."""
    times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
    for v in eqn.params.values():
        for j in (v if isinstance(v, (list, tuple)) else [v]):
            inner = getattr(j, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                yield inner, times
            elif hasattr(j, "eqns"):
                yield j, times


def _walk(jaxpr, acc: dict, times: int = 1) -> None:
    for eqn in jaxpr.eqns:
        subs = list(_sub_jaxprs(eqn))
        for inner, t in subs:
            _walk(inner, acc, times * t)
        if subs:  # a call's outputs are the inner program's (already counted)
            continue
        for var in eqn.outvars:
            b = _aval_bytes(var.aval)
            acc["total"] += b * times
            if b > acc["largest"]:
                acc["largest"] = b
                acc["what"] = f"{var.aval.str_short()} from {eqn.primitive.name}"


def _is_var(v) -> bool:
    return type(v).__name__ != "Literal" and hasattr(v, "aval")


def _peak(jaxpr) -> int:
    """Most bytes alive at once while ``jaxpr`` runs in program order, beyond its own inputs: each
    array is made by its equation and freed after its last use (sub-programs add their own peak
    while they run). No fusion is assumed, so elementwise chains XLA fuses count in full."""
    last: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if _is_var(v):
                last[v] = i
    keep = {v for v in jaxpr.outvars if _is_var(v)} | set(jaxpr.invars) | set(getattr(jaxpr, "constvars", []))
    live = peak = 0
    for i, eqn in enumerate(jaxpr.eqns):
        inner = max((_peak(j) for j, _ in _sub_jaxprs(eqn)), default=0)
        out = sum(_aval_bytes(v.aval) for v in eqn.outvars)
        peak = max(peak, live + max(inner, out))
        live += out
        for v in eqn.outvars:  # results nobody reads are freed at once
            if v not in last and v not in keep:
                live -= _aval_bytes(v.aval)
        for v in {v for v in eqn.invars if _is_var(v)}:
            if last.get(v) == i and v not in keep:
                live -= _aval_bytes(v.aval)
    return peak


def step_memory(step_fn: Callable, state: Any, batch: Any) -> StepMemory:
    """Memory of ``step_fn(state, batch)`` from its jaxpr (abstract or concrete arguments; no compile)."""
    closed = jax.make_jaxpr(step_fn)(state, batch)
    acc = {"total": 0, "largest": 0, "what": "nothing"}
    _walk(closed.jaxpr, acc)
    state_bytes = sum(_aval_bytes(x) for x in jax.tree.leaves(state))
    inputs = sum(_aval_bytes(v.aval) for v in closed.jaxpr.invars)
    return StepMemory(state_bytes, acc["largest"], acc["what"], acc["total"], inputs + _peak(closed.jaxpr))


def available_bytes(device=None) -> tuple[int | None, str]:
    """(bytes the step may use, where that figure comes from); None when unknown."""
    device = device or jax.local_devices()[0]
    if device.platform != "cpu":
        stats = getattr(device, "memory_stats", lambda: None)() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]), f"{device.device_kind} bytes_limit"
        return None, "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host MemAvailable"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host free pages"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def check_step_memory(mem: StepMemory, available: int | None, source: str = "", state_copies: int = 1,
                      batch_key: str = "config.data.batch_per_device", batch: int | None = None) -> None:
    """Raise `StepTooLarge` when the step cannot fit. The step's arrays are global (all devices);
    ``state_copies``: replicas of the state in this memory (CPU devices share the host's)."""
    if available is None:
        return
    need = mem.peak_bytes + 2 * mem.state_bytes * (state_copies - 1)
    if need <= available:
        return
    smaller = f" (now {batch})" if batch else ""
    raise StepTooLarge(
        f"the train step needs about {need / GIB:.1f} GiB (traced estimate, state {mem.state_bytes / GIB:.2f} GiB x "
        f"{state_copies}; its largest array {mem.largest_bytes / GIB:.1f} GiB: {mem.largest_what}) "
        f"and {available / GIB:.1f} GiB is available ({source}); stopped before compiling. Ways out: the CPU-sized "
        f"config (':small'), a smaller --{batch_key}{smaller}, or an accelerator with more memory "
        "(--config.train.memory_check=False skips this check)")
