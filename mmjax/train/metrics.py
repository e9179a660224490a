"""Host-side metric sinks: JSONL log, TensorBoard events (tensorboardX), tqdm progress bar.

Only process 0 writes; on other processes every method is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm


def _clean(value) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


class MetricWriter:
    """Appends ``{"step": s, "time": t, "<split>/<name>": value, ...}`` lines to
    ``<workdir>/metrics.jsonl`` and scalars to TensorBoard event files in ``<workdir>/tb``.

    Non-finite values are written as JSON null (and skipped in TensorBoard).
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._fh = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._fh = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: Mapping[str, float], **extra) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "time": time.time()}
        row.update({k: _clean(v) for k, v in scalars.items()})
        row.update(extra)
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        for k, v in scalars.items():
            if math.isfinite(float(v)):
                self._tb.add_scalar(k, float(v), int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._tb:
            self._tb.close()
            self._tb = None


class Progress:
    """tqdm bar over steps with loss and samples/s in the postfix (tqdm prints the ETA).

    The bar (and so its clock) starts after the first update, i.e. after the first step, whose
    time is the compilation: an ETA extrapolated from it would be hours off.
    """

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self._pending = (total, initial) if enabled and jax.process_index() == 0 else None

    def update(self, n: int, **postfix) -> None:
        if self.bar is None and self._pending is not None:
            total, initial = self._pending
            self._pending = None
            self.bar = tqdm(total=total, initial=initial + n, unit="step", dynamic_ncols=True, mininterval=1.0)
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                     refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Throughput:
    """Samples/s over the steps since the previous `rate` call, excluding the first (compiling) step.

    Call `mark_first_step_done` after the first step's results are on the host; `rate(steps)`
    at each log step after blocking on the step's output.
    """

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self._t = None
        self.total_steps = 0
        self.total_time = 0.0

    def mark_first_step_done(self) -> None:
        self._t = time.perf_counter()

    def rate(self, steps: int) -> float:
        if self._t is None:
            return float("nan")
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        if steps <= 0 or dt <= 0:
            return float("nan")
        self.total_steps += steps
        self.total_time += dt
        return steps * self.samples_per_step / dt

    def pause(self) -> None:
        """Stop the clock (eval, checkpoint); `resume` restarts it."""
        if self._t is not None:
            self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._t is not None and getattr(self, "_paused_at", None) is not None:
            self._t += time.perf_counter() - self._paused_at
            self._paused_at = None

    def mean_rate(self) -> float:
        return self.total_steps * self.samples_per_step / self.total_time if self.total_time > 0 else float("nan")
