"""The papers' analyses as commands: ``python -m mmjax.analyze <command> --config=... --workdir=W``.

Commands (each writes JSON metrics + PNG plots under ``W`` and prints a short text table):

* ``xxact-convergence`` (XxaCT-NN Table 2 / Fig. 6): the full recipe of the config (`run_train`)
  once per pretraining variant — ``none`` (supervised only), ``clip``, ``mxm``, ``both`` — in
  ``W/<variant>/``, same seed and same supervised steps; the validation curve of each run
  (``metrics.jsonl``, evaluated ``--eval_points`` times) gives the steps to reach a threshold
  (``--threshold``, default the no-pretraining run's best value), the speed-up over ``none`` and
  the best value so far at 5 / 15 / 25 % of training -> ``W/convergence.{json,png}``.
* ``per-class-accuracy`` (XxaCT-NN Table 4): a trained model (``--init_from``, default ``W``)
  predicts the test split; accuracy within each true class of ``--target`` (default
  crystal_system) -> ``W/predictions.csv``, ``W/per_class_accuracy.{json,png}``.
* ``learning-curve`` (XxaCT-NN Fig. 3): the supervised stage on nested random subsets of the
  training split of sizes ``--sizes`` (default ``--fractions`` of it), each in ``W/n<size>/``,
  evaluated on the same test split; power-law fit err = a·n^b per target (MAE for regression,
  error rate for classification) -> ``W/learning_curve.{json,png}``.
* ``linear-probe`` (MatBind): embeddings (`System.embed`) of a trained model's encoders on the
  train / validation / test splits, logistic probes for space group (231-way: labels 1..230,
  0 = unknown) and crystal system (7-way), ridge probes for every regression target the dataset
  has -> ``W/linear_probe.{json,png}``, ``W/linear_probe/probe_<modality>_<label>.json``,
  ``W/linear_probe/embeddings.npz``.
* ``finetune-tasks`` (MultiMat): for each ``--targets`` (default every regression target of the
  dataset) fine-tune the encoder + a new linear head from ``--init_from`` (`run_finetune`, in
  ``W/<target>/``) and report test MAE beside the predict-the-training-mean baseline
  -> ``W/finetune_tasks.{json,png}``.
* ``elastic-tensor`` (MultiMat's 15-output elastic tensor): the data layer stores scalar targets
  only, so this task is a probe on its own data: DOS of ``--data``/dos_mp408.npz on the fixed
  Fermi-shifted grid -> ridge and linear-head probes for the 15 columns ``elastic_C..`` of
  ``--data``/moduli_mp100.csv.gz (`elastic_tensor_probe`) -> ``W/elastic_tensor.{json,png}``.

Every command also takes the config overrides of `mmjax.main` (``--config.train.steps=...``).
The experiments live in `mmjax.eval.experiments` (one module each); this module is only the
command table and its flags.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from mmjax.eval.experiments.convergence import VARIANTS, xxact_convergence
from mmjax.eval.experiments.elastic import elastic_tensor_probe
from mmjax.eval.experiments.learning_curve import DEFAULT_FRACTIONS, learning_curve_analysis
from mmjax.eval.experiments.per_class import per_class_accuracy_analysis
from mmjax.eval.experiments.probes import finetune_tasks, linear_probe_analysis
from mmjax.train.mesh import initialize_distributed

# command -> (needs --config, run(config, workdir, FLAGS))
COMMANDS = {
    "xxact-convergence": (True, lambda c, w, f: xxact_convergence(
        c, w, variants=f.variants, threshold=f.threshold, metric=f.metric, eval_points=f.eval_points)),
    "per-class-accuracy": (True, lambda c, w, f: per_class_accuracy_analysis(
        c, w, target=f.target, init_from=f.init_from)),
    "learning-curve": (True, lambda c, w, f: learning_curve_analysis(
        c, w, sizes=[int(s) for s in f.sizes] or None, fractions=[float(x) for x in f.fractions],
        init_from=f.init_from)),
    "linear-probe": (True, lambda c, w, f: linear_probe_analysis(
        c, w, init_from=f.init_from, regression_targets=f.targets or None)),
    "finetune-tasks": (True, lambda c, w, f: finetune_tasks(c, w, init_from=f.init_from, targets=f.targets or None)),
    "elastic-tensor": (False, lambda c, w, f: elastic_tensor_probe(f.data, w)),
}


def _flags():
    config_flags.DEFINE_config_file("config", None, "Python config file (get_config()).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Output folder of the analysis.")
    flags.DEFINE_string("init_from", None, "Trained (or pretrained) workdir / checkpoint the analysis starts from.")
    flags.DEFINE_string("target", "crystal_system", "per-class-accuracy: classification target.")
    flags.DEFINE_list("targets", [], "finetune-tasks / linear-probe: regression targets (default: all).")
    flags.DEFINE_list("variants", list(VARIANTS), "xxact-convergence: pretraining variants.")
    flags.DEFINE_float("threshold", None, "xxact-convergence: validation threshold (default: best of 'none').")
    flags.DEFINE_string("metric", None, "xxact-convergence: validation key (default eval/<first regression target>/mae).")
    flags.DEFINE_integer("eval_points", 20, "xxact-convergence: validations per run.")
    flags.DEFINE_list("sizes", [], "learning-curve: training-set sizes (default: --fractions of the training split).")
    flags.DEFINE_list("fractions", [str(f) for f in DEFAULT_FRACTIONS], "learning-curve: fractions of the training split.")
    flags.DEFINE_string("data", None, "elastic-tensor: folder holding dos/dos_mp408.npz and dos/moduli_mp100.csv.gz.")
    flags.mark_flags_as_required(["workdir"])
    return flags.FLAGS


def main(argv):
    FLAGS = flags.FLAGS
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m mmjax.analyze <command> --config=... --workdir=...; "
                             f"command one of {tuple(COMMANDS)}, got {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    command, workdir = argv[1], FLAGS.workdir
    needs_config, run_command = COMMANDS[command]
    if command == "elastic-tensor" and not FLAGS.data:
        raise app.UsageError("elastic-tensor needs --data=<folder with dos/dos_mp408.npz, dos/moduli_mp100.csv.gz>")
    if needs_config:
        if FLAGS.config is None:
            raise app.UsageError(f"{command} needs --config=configs/<system>.py[:small]")
        initialize_distributed()
    run_command(FLAGS.config, workdir, FLAGS)


def run():
    _flags()
    app.run(main)


if __name__ == "__main__":
    run()
