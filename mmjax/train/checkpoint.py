"""Orbax checkpoints of the TrainState plus JSON metadata (config, data-iterator state, step, best).

Layout: ``<workdir>/checkpoints/<step>/{state, meta}``. Orbax writes each step to a temporary
directory and renames it on commit, so a run killed mid-save leaves no half-written step (the
temporary directory is removed on the next start). Retention keeps the latest ``keep`` steps
plus the best one by ``best_metric`` (steps saved with metrics, i.e. after an eval). Arrays are
stored with tensorstore and metadata as JSON; nothing is pickled.

Restoring needs an abstract target (`jax.ShapeDtypeStruct` with shardings) so optax NamedTuples
and the sharded layout come back. If the newest step cannot be read (corrupted files), it is
moved to ``<workdir>/checkpoints_corrupt/<step>`` with a warning naming it and the previous
step is tried — but only when its own files fail to read. A checkpoint whose parameter tree
differs from the model being restored (another config, other overrides, a changed shape) is a
configuration error: `CheckpointMismatch` names the differing keys and nothing is moved.
Read-only callers (predict / embed / evaluate) pass ``read_only=True``: an unreadable step is
skipped with a warning and left where it is.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as ocm

PyTree = Any
log = logging.getLogger(__name__)


class NoUsableCheckpoint(RuntimeError):
    """Checkpoints exist but none of them could be restored."""


class CheckpointMismatch(ValueError):
    """The checkpoint's parameters do not match the model's (paths or shapes); names them."""


def _flat_shapes(tree) -> dict[str, tuple]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = tuple(getattr(leaf, "shape", ()))
    return out


def params_difference(saved: PyTree, wanted: PyTree, limit: int = 6) -> list[str]:
    """Human-readable differences between two parameter trees (missing / extra / reshaped keys)."""
    a, b = _flat_shapes(saved), _flat_shapes(wanted)
    diffs = [f"{k}: checkpoint {a[k]} vs model {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    diffs += [f"{k}: only in the model" for k in sorted(set(b) - set(a))]
    diffs += [f"{k}: only in the checkpoint" for k in sorted(set(a) - set(b))]
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with items ``state`` (StandardSave) and ``meta`` (JsonSave).

    Args:
      directory: checkpoint root (created).
      keep: number of most recent steps kept.
      best_metric: metric name used to keep the best step ("" disables).
      best_mode: "min" or "max".
      async_save: write in a background thread (the device-to-host copy happens before `save`
        returns, so the state may be donated right after).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, best_metric: str = "",
                 best_mode: str = "min", async_save: bool = True):
        if best_mode not in ("min", "max"):
            raise ValueError(f"config.checkpoint.best_mode={best_mode!r}; expected 'min' or 'max'")
        if keep < 1:
            raise ValueError(f"config.checkpoint.keep={keep}; must keep at least one checkpoint")
        self.directory = os.path.abspath(os.fspath(directory))
        self.best_metric = best_metric
        self.best_mode = best_mode
        policies = [ocm.LatestN(n=keep)]
        score = None
        if best_metric:
            worst = float("inf") if best_mode == "min" else float("-inf")

            def score(metrics):  # steps saved without an eval rank last (and stay kept by LatestN)
                return float(metrics.get(best_metric, worst)) if metrics else worst

            # BestN keeps the last of the sorted list: sort descending for "min".
            policies.append(ocm.BestN(get_metric_fn=score, reverse=(best_mode == "min"), n=1,
                                      keep_checkpoints_without_metrics=False))
        _cpu_serial_array_writes()
        self._options = ocp.CheckpointManagerOptions(
            best_fn=score, best_mode=best_mode,  # makes orbax persist per-step metrics
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
        self._open()

    def _open(self):
        self._mngr = ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "meta"))

    # -- queries
    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """Kept step with the best ``best_metric`` (None without a metric or evaluated steps)."""
        if not self.best_metric:
            return None
        scored = []
        for step in self.all_steps():
            m = self._mngr.metrics(step)
            if m and self.best_metric in m:
                scored.append((float(m[self.best_metric]), step))
        if not scored:
            return None
        return (min(scored) if self.best_mode == "min" else max(scored))[1]

    # -- save / restore
    def save(self, step: int, state: PyTree, meta: dict, metrics: dict | None = None) -> None:
        """Save `state` and JSON-able `meta` at `step`; `metrics` (floats) rank the step for "best"."""
        if self.best_metric:
            metrics = {k: float(v) for k, v in (metrics or {}).items()}
        else:
            metrics = None
        self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)),
                        metrics=metrics, force=True)

    def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
        """State (laid out as `target`, a pytree of `jax.ShapeDtypeStruct`) and meta at `step`."""
        out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                               meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def restore_meta(self, step: int) -> dict:
        out = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def saved_tree(self, step: int) -> PyTree:
        """The state tree metadata (shapes) stored at ``step`` (raises on unreadable files)."""
        with _QuietOrbax(), ocp.StandardCheckpointer() as ckptr:
            return ckptr.metadata(os.path.join(self.directory, str(step), "state")).item_metadata.tree

    def restore_latest_params(self, params_target: PyTree) -> tuple[int, PyTree] | None:
        """Read-only: newest ``(step, params)`` laid out as ``params_target`` (ShapeDtypeStructs with
        shardings). Only the parameters must match the model (the optimiser state is not read, so
        predict / embed / evaluate work whatever optimiser or stage trained the model). Unreadable
        steps are skipped in place; a parameter mismatch raises `CheckpointMismatch`."""
        shardings = jax.tree.map(lambda t: t.sharding, params_target)
        def check(step, saved):
            if "params" not in saved:  # readable, but not a train state: a mismatch, not damage
                raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} holds no 'params' entry "
                                         f"(it has {sorted(saved)}); nothing was moved.")
            self._check_params(step, saved["params"], params_target)

        return self._newest(
            True, check,
            lambda step: (step, jax.device_put(_read_params(os.path.join(self.directory, str(step))), shardings)))

    def restore_latest(self, target: PyTree, read_only: bool = False) -> tuple[int, PyTree, dict] | None:
        """Newest restorable ``(step, state, meta)``, or None when there is no checkpoint.

        A step whose files cannot be read is moved aside (or, ``read_only``, skipped in place)
        with a warning, newest first, until one restores. A readable step whose parameters do
        not match ``target.params`` raises `CheckpointMismatch` (nothing is moved).
        """
        def check(step, saved):
            wanted = getattr(target, "params", None)
            if wanted is not None and "params" not in saved:
                raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} holds no 'params' entry "
                                         f"(it has {sorted(saved)}); nothing was moved.")
            if wanted is not None:
                n_saved, n_wanted = len(jax.tree.leaves(saved)), len(jax.tree.leaves(target))
                self._check_params(step, saved["params"], wanted, [] if n_saved == n_wanted else [
                    f"optimiser / train state: {n_saved} arrays in the checkpoint vs {n_wanted} for this config "
                    "(config.optim changed?)"])

        def load(step):
            state, meta = self.restore(step, target)
            jax.block_until_ready(state)
            return step, state, meta

        return self._newest(read_only, check, load)

    def _newest(self, read_only: bool, check, load):
        """``load(step)`` of the newest step whose files read and pass ``check(step, saved_tree)``."""
        steps = self.all_steps()
        if not steps:
            return None
        for step in reversed(steps):
            try:
                with _async_noise_dropped():
                    saved = self.saved_tree(step)
            except Exception as err:  # orbax / tensorstore raise many types for damaged files
                self._unreadable(step, "its metadata", err, read_only)
                continue
            check(step, saved)
            try:
                with _async_noise_dropped():
                    return load(step)
            except Exception as err:  # orbax / tensorstore raise many types for damaged files
                self._unreadable(step, "its array data", err, read_only)
        raise NoUsableCheckpoint(f"no checkpoint in {self.directory} could be restored (tried steps {steps})")

    def _check_params(self, step: int, saved: PyTree, wanted: PyTree, extra: list[str] | None = None) -> None:
        diffs = params_difference(saved, wanted) or list(extra or [])
        if diffs:
            raise CheckpointMismatch(
                f"checkpoint step {step} in {self.directory} holds another model's parameters: "
                + "; ".join(diffs) + ". Run with the training run's config (and overrides) or another "
                "--workdir; nothing was moved.")

    def _unreadable(self, step: int, what: str, err: Exception, read_only: bool) -> None:
        """One warning naming the step, the part that failed (metadata / array data) and the first
        line of the error; the step is moved aside (or, ``read_only``, left in place)."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory.rstrip("/") + "_corrupt", str(step))
        then = ("left in place (read-only mode), trying the previous checkpoint" if read_only
                else f"moved to {dst}, falling back to the previous checkpoint")
        warnings.warn(f"checkpoint step {step} at {src} is unreadable: {what} failed to read "
                      f"({_first_line(err)}); {then}", RuntimeWarning, stacklevel=3)
        if not read_only:
            self._quarantine(step, src, dst)

    def _quarantine(self, step: int, src: str, dst: str) -> None:
        dst_root = os.path.dirname(dst)
        if jax.process_index() == 0:
            os.makedirs(dst_root, exist_ok=True)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.move(src, dst)
        _sync(f"mmjax_quarantine_{step}")
        self._mngr.close()
        self._open()

    def wait(self) -> None:
        """Block until pending asynchronous saves are committed."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(err: Exception) -> str:
    """``Type: first line`` of an orbax / tensorstore error, without TensorStore's spec dump."""
    text = str(err).split("See full TensorStore details")[0].strip()
    if isinstance(err, AttributeError) and "NoneType" in text:  # orbax: no metadata file parsed
        text = "metadata file missing or empty"
    first = text.splitlines()[0][:160].rstrip(" .") if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _is_async_noise(unraisable) -> bool:
    """An unraisable exception left behind by an aborted tensorstore read: orbax's read
    coroutines collected with their error, or tensorstore callbacks into its closed event loop."""
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    code = getattr(obj, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


class _async_noise_dropped:
    """While reading a checkpoint, and for the garbage of a failed read, drop the thousands of
    lines of unraisable tracebacks (`_is_async_noise`) an aborted tensorstore read prints to stderr;
    other unraisable exceptions still reach the previous hook. The read's own error still raises."""

    def __enter__(self):
        _asyncio_read_errors_dropped()
        self._prev = sys.unraisablehook
        prev = self._prev

        def hook(unraisable):
            if not _is_async_noise(unraisable):
                prev(unraisable)

        sys.unraisablehook = hook

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            gc.collect()  # the failed read's coroutines, while the filter is on
        sys.unraisablehook = self._prev
        if exc_type is not None:
            _drop_late_loop_closed()


def _drop_late_loop_closed() -> None:
    """After a failed read, tensorstore threads still call back into orbax's closed event loop for
    a while; from then on this process drops exactly those ("Event loop is closed") unraisables."""
    prev = sys.unraisablehook
    if getattr(prev, "_mmjax_loop_closed_filter", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            prev(unraisable)

    hook._mmjax_loop_closed_filter = True
    sys.unraisablehook = hook


def _asyncio_read_errors_dropped() -> None:
    """From the first checkpoint read on, asyncio's "... exception was never retrieved" for orbax's
    aborted read tasks and futures is dropped (it is logged when the garbage of a failed read is
    collected, which may be after the read's own error was reported); installed once."""
    log = logging.getLogger("asyncio")
    if _orbax_task_errors not in log.filters:
        log.addFilter(_orbax_task_errors)


def _orbax_task_errors(record: logging.LogRecord) -> bool:
    """False (drop) for asyncio's "... exception was never retrieved" about an orbax task or a
    tensorstore future (an aborted read); every other record passes."""
    text = record.getMessage()
    if "exception was never retrieved" not in text:
        return True
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return False
        tb = tb.tb_next
    exc = record.exc_info[1] if record.exc_info else None
    text = (text + " " + repr(exc)).lower()
    return "orbax" not in text and "tensorstore" not in text


_cpu_handler_installed = False


def _cpu_serial_array_writes() -> None:
    """On CPU, write each replicated array from one replica instead of slicing it over replicas.

    Orbax's replica-parallel writes compile a slice program per device and array shape (seconds
    with 8 simulated CPU devices) and gain nothing on host memory. Accelerators keep the default.
    """
    global _cpu_handler_installed
    if _cpu_handler_installed or jax.default_backend() != "cpu":
        return
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # the override is intended; skip orbax's warning
    try:
        ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                                override=True)
    finally:
        absl_logging.set_verbosity(verbosity)
    _cpu_handler_installed = True


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class _QuietOrbax:
    """Orbax's absl warnings (e.g. "Metadata file does not exist" on every metadata read of a
    checkpoint it wrote itself) silenced for one block; errors still raise."""

    def __enter__(self):
        self._absl, self._level = absl_logging, absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)

    def __exit__(self, *exc):
        self._absl.set_verbosity(self._level)


def _read_params(step_dir: str) -> PyTree:
    """The ``params`` of one step folder, on this process's first device (any writing topology)."""
    state_dir = os.path.join(step_dir, "state")
    with _QuietOrbax(), ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(state_dir).item_metadata.tree
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state = ckptr.restore(state_dir, jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree))
    if "params" not in state:
        raise ValueError(f"checkpoint {step_dir} has no 'params' entry (keys: {sorted(state)})")
    return state["params"]


def load_params(path: str | os.PathLike) -> PyTree:
    """Parameters from a workdir, its ``checkpoints/`` folder or one step folder (newest step).

    Returned as plain nested dicts of arrays on the first local device (whatever mesh wrote them),
    for initialising fine-tuning runs and for inspection.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    if not os.path.isdir(os.path.join(path, "state")):
        steps = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
        if not steps:
            raise FileNotFoundError(f"no checkpoint found under {path}")
        path = os.path.join(path, str(steps[-1]))
    return _read_params(path)
