"""Command line: ``python -m mmjax.main --config=configs/<system>.py --workdir=runs/x [--mode=train]``.

Overrides: ``--config.optim.peak_lr=1e-4`` etc. The config is locked, so an unknown key or a
value of the wrong type is rejected naming the key. Multi-process runs are started from the
environment (see `mmjax.train.mesh.distributed_settings` and ``launch/``).
"""

import math
import sys
import warnings

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mmjax.data.material import RecordError
from mmjax.train.checkpoint import CheckpointMismatch, NoUsableCheckpoint
from mmjax.train.loop import ConfigMismatch, TrainingDiverged
from mmjax.train.memory import StepTooLarge
from mmjax.train.mesh import initialize_distributed
from mmjax.train.modes import MODES
from mmjax.train.optim import build_optimizer
from mmjax.train.workdir_lock import WorkdirBusy

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file (get_config()).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder: checkpoints, logs, results.")
_MODE = flags.DEFINE_enum("mode", "train", list(MODES), "What to do.")
_INPUT = flags.DEFINE_string("input", None, "Input data for predict / embed (default: the config's data).")
_OUTPUT = flags.DEFINE_string("output", None, "predict / embed / evaluate: write the CSV / .npz / .json here instead "
                              "of the workdir (featurised --input is then cached beside it; the workdir is only read).")
READ_ONLY_MODES = ("predict", "embed", "evaluate")
flags.mark_flags_as_required(["config", "workdir"])


def validate_config(config) -> None:
    """Reject out-of-range values before any work (featurising, compiling): the optimiser and its
    schedule are built once here (cheap, no parameters), and the run lengths checked."""
    steps = int(config.train.steps)
    if steps < 1:
        raise ValueError(f"config.train.steps={steps}: must be >= 1")
    if float(config.train.get("epochs", 0.0)) < 0:
        raise ValueError(f"config.train.epochs={config.train.epochs}: must be >= 0 (0 = use train.steps)")
    pre = config.get("pretrain", None)
    if pre is not None and int(pre.get("steps", 0)) < 0:
        raise ValueError(f"config.pretrain.steps={pre.steps}: must be >= 0")
    if int(config.data.get("batch_per_device", 1)) < 1:
        raise ValueError(f"config.data.batch_per_device={config.data.batch_per_device}: must be >= 1")
    check_fractions(config)
    build_optimizer(config.optim, steps)


def _numbers(node, path: str):
    """``(dotted key, value)`` of every int / float leaf under a ConfigDict (bools excluded)."""
    for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _numbers(value, f"{path}.{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{path}.{key}", float(value)


def check_fractions(config) -> None:
    """Fractions a user sets, in range before any work, naming the key: every dropout rate under
    ``config.system`` in [0, 1]; ``system.packed_tokens`` in [0, 1] or -1 (whether or not the head
    reads it); ``data.split`` non-negative and summing to 1; ``data.budget_percentile`` in (0, 100]."""
    system = config.get("system", None)
    for key, value in (_numbers(system, "config.system") if system is not None else ()):
        leaf = key.rsplit(".", 1)[1]
        if "dropout" in leaf and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{key}={value}: a dropout rate must be in [0, 1]")
        if leaf == "packed_tokens" and not (value == -1.0 or 0.0 <= value <= 1.0):
            raise ValueError(f"{key}={value}: a fraction of the element slots in [0, 1] (0 = padded batches), "
                             "or -1 for a fraction from the training set")
    split = config.data.get("split", None)
    if split is not None:
        fr = [float(v) for v in split]
        if any(not (math.isfinite(v) and v >= 0) for v in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"config.data.split={tuple(split)}: fractions must be >= 0 and sum to 1")
    pct = config.data.get("budget_percentile", None)
    if pct is not None and not (math.isfinite(float(pct)) and 0.0 < float(pct) <= 100.0):
        raise ValueError(f"config.data.budget_percentile={pct}: must be in (0, 100]")


def user_errors() -> tuple:
    """Exceptions that describe a problem with the user's input (config, data, checkpoint, run):
    printed as one line without a traceback unless ``--verbosity`` >= 1."""
    return (ValueError, KeyError, FileNotFoundError, RecordError, CheckpointMismatch, NoUsableCheckpoint,
            ConfigMismatch, TrainingDiverged, WorkdirBusy, StepTooLarge)


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` for the CLI: ``warning: <message>`` on one line (no source line);
    ``--verbosity=1`` keeps Python's format."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    verbose = flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if not verbose:
        warnings.showwarning = one_line_warning

    try:
        validate_config(_CONFIG.value)
        initialize_distributed()
        extra = {"output": _OUTPUT.value} if _OUTPUT.value else {}
        if extra and _MODE.value not in READ_ONLY_MODES:
            raise ValueError(f"--output applies to --mode=predict, embed and evaluate, not --mode={_MODE.value}")
        if _MODE.value in READ_ONLY_MODES:  # the model comes from the workdir; overrides may not change it
            extra["overrides"] = dict(config_flags.get_override_values(flags.FLAGS["config"]))
        MODES[_MODE.value](_CONFIG.value, _WORKDIR.value, input_path=_INPUT.value, **extra)
    except user_errors() as err:
        if verbose:
            raise
        msg = str(err).strip().strip('"') or type(err).__name__
        print(f"error ({type(err).__name__}): {msg}\n(run with --verbosity=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


def parse_flags(argv):
    """absl's flag parsing, with a misspelt or mistyped ``--config.<key>=`` override (or a config
    file that does not load) printed as one line naming it, exit status 2; ``--verbosity=1`` (or
    higher) keeps the traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        print(f"error: {err}\nPass --help to see the flags.", file=sys.stderr)
        sys.exit(2)
    except (KeyError, AttributeError, ValueError, TypeError, FileNotFoundError) as err:
        if any(a.startswith("--verbosity=") and a.split("=", 1)[1] not in ("0", "-1", "-2", "-3") for a in argv):
            raise
        msg = str(err)
        try:  # ml_collections nests the KeyError's repr (quotes, escaped newlines) in the message
            msg = msg.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeError:
            pass
        msg = " ".join(part.strip().strip("'\"") for part in msg.strip().strip("'\"").splitlines()) or type(err).__name__
        named = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")
                 and a.split("=", 1)[0].rsplit(".", 1)[-1] in msg]
        where = f"{named[0]}: no such key in the config" if named and isinstance(err, (KeyError, AttributeError)) \
            else f"in the config or its overrides ({type(err).__name__})"
        print(f"error: {where}: {msg}\n(run with --verbosity=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


def run():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
