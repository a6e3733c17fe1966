"""Re-evaluates the best weights of a finished (or interrupted) run and prints per-task metrics.

  python launch/evaluate.py --workdir=runs/multi_fashion_mgda_ub [--split=test|val] [--data_dir=...]

Rebuilds the benchmark and model from `<workdir>/config.json`, loads
`<workdir>/best.weights.h5` and evaluates; `--json` prints the metrics as JSON.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags  # noqa: E402

from mtl_tf.training import distribute, trainer  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch/train.py.", required=True)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "val"], "Split to evaluate.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data set location, if not the one the run used.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES), "Distribution strategy.")
_JSON = flags.DEFINE_bool("json", False, "Print the metrics as JSON.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    strategy = distribute.make_strategy(_STRATEGY.value)
    tasks = trainer.evaluate_workdir(_WORKDIR.value, split=_SPLIT.value, data_dir=_DATA_DIR.value, strategy=strategy)
    if _JSON.value:
        print(json.dumps(tasks, indent=1))
    else:
        print(f"{_SPLIT.value} metrics of {_WORKDIR.value}:")
        print(trainer.format_metrics(tasks))


if __name__ == "__main__":
    app.run(main)
