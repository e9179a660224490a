"""Command line: ``python -m mmjax.main --config=configs/<system>.py --workdir=runs/x [--mode=train]``.

Overrides: ``--config.optim.peak_lr=1e-4`` etc. The config is locked, so an unknown key or a
value of the wrong type is rejected naming the key. Multi-process runs are started from the
environment (see `mmjax.train.mesh.distributed_settings` and ``launch/``).
"""

from absl import app, flags
from ml_collections import config_flags

from mmjax.train.modes import MODES

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file (get_config()).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder: checkpoints, logs, results.")
_MODE = flags.DEFINE_enum("mode", "train", list(MODES), "What to do.")
_INPUT = flags.DEFINE_string("input", None, "Input data for predict / embed (default: the config's data).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from mmjax.train.mesh import initialize_distributed

    initialize_distributed()
    MODES[_MODE.value](_CONFIG.value, _WORKDIR.value, input_path=_INPUT.value)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
