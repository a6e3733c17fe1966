"""Trains one run of a config, keeps the best-on-validation weights and writes results.json.

  python launch/train.py --config=configs/multi_fashion.py --config.method=mgda_ub \
      --workdir=runs/multi_fashion_mgda_ub

Flags:
  --config            a config file with get_config(arg), optionally `:variant`; any field is
                      overridable: --config.method=single_step, --config.seed=1,
                      --config.balancer.normalization=loss+, --config.balancer.weights="(0.3,0.7)";
  --workdir           where config.json, best.weights.h5, tensorboard/, backup/ and results.json go;
                      a killed run restarts from its last finished epoch, a finished one (results.json
                      present) is not retrained unless --overwrite;
  --strategy          default | mirrored | multi_worker (see mtl_tf.training.distribute);
  --devices           for mirrored: comma-separated device names (default: all GPUs, else every
                      logical CPU device);
  --num_cpu_devices   split the CPU into N logical devices first (e.g. --strategy=mirrored
                      --num_cpu_devices=2 trains two replicas on a CPU-only host);
  --data_dir          where the benchmark's data set is (sets config.data.data_dir);
  --verbose           Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.

Before training, with an error naming what is wrong (exit code 2): a config field that does not
exist (`--config.foo=1`), a learning rate <= 0, epochs or batch size < 1, a method or model
option the balancer or the nets refuse (`--config.balancer.c=-1`, `--config.model.num_experts=0`;
checked before the data is loaded), a --workdir that is a file, a batch size the mirrored replicas
cannot split. config.json is written only once the data and the model are built, so a run refused
before that leaves nothing that blocks the corrected command in the same workdir. A second
train.py on a --workdir in use stops at once naming the process that holds it (exit code 1).
Start and resume print a banner (method, workdir, epochs, TensorBoard command; on a resume the
restored epoch and best value); Ctrl-C prints what is saved and exits with 130, SIGTERM (a batch
scheduler's stop) the same with 143: the same command resumes from the last finished epoch.

The trainer itself is `mtl_tf.training.trainer.train_and_evaluate`.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mtl_tf.training import config as config_lib  # noqa: E402
from mtl_tf.training import distribute, interrupts, preflight, trainer  # noqa: E402
from mtl_tf.training.workdir import RESULTS, WorkdirLocked, check_workdir, load_results  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.", required=True)
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES), "Distribution strategy.")
_DEVICES = flags.DEFINE_string("devices", None, "Devices of the mirrored strategy, comma-separated.")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", None, "Split the CPU into this many logical devices (mirrored on a CPU-only host)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data set location (config.data.data_dir).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Retrain even if results.json exists.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch.")


def _fail(error, code: int = 2):
    print(f"error: {error}", file=sys.stderr)
    sys.exit(code)


def parse_flags(argv):
    """absl's flag parsing, after checking that every --config.<field> exists (named if not)."""
    try:
        config_lib.check_override_flags(argv)
    except ValueError as error:
        _fail(error)
    return app.parse_flags_with_usage(argv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/multi_fashion.py")
    if _DATA_DIR.value:
        config_lib.add_data_dir(config, _DATA_DIR.value)
    try:  # every field the trainer reads, the method's and model's options, and the workdir, before any data
        settings = trainer.TrainSettings.from_config(config)
        preflight.check_options(config, settings)
        workdir = check_workdir(_WORKDIR.value)
    except ValueError as error:
        _fail(error)
    if (workdir / RESULTS).exists() and not _OVERWRITE.value:
        logging.info("%s exists; the run is finished (pass --overwrite to train again).", workdir / RESULTS)
        results = load_results(workdir)
    else:
        if _NUM_CPU_DEVICES.value:
            distribute.split_cpu(_NUM_CPU_DEVICES.value)
        strategy = distribute.make_strategy(_STRATEGY.value, _DEVICES.value)
        # A batch scheduler stops a job with SIGTERM (then SIGKILL after a grace period).
        interrupts.handle_sigterm()
        try:
            results = trainer.train_and_evaluate(
                config, workdir, strategy=strategy, overwrite=_OVERWRITE.value, verbose=_VERBOSE.value
            )
        except WorkdirLocked as error:
            _fail(error, 1)
        except trainer.RunRefused as error:
            _fail(error)
        except KeyboardInterrupt as error:
            what, code = interrupts.describe(error)
            print(f"\n{what}: {trainer.describe_saved(workdir)} Run the same command to resume.", file=sys.stderr)
            sys.exit(code)
    print(f"method={results['method']} seed={results['seed']} best_epoch={results.get('best_epoch')}")
    print(trainer.format_metrics(results["tasks"]))
    print(f"results: {workdir / RESULTS}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
