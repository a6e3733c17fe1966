"""Exports the best weights of a finished run as a SavedModel with one named output per task.

  python launch/export.py --workdir=runs/multi_fashion_mgda_ub --out=exported/multi_fashion_mgda_ub

The serving signature `serving_default` takes `image` (float32, [batch, *input shape], the
values the training pipeline feeds: raw pixels 0..255 for the digit `pareto` protocol, pixels / 255
or Sener's normalisation for others; outputs.json records the map from 8-bit pixels as `input.pixels`) and returns one output per task,
named by the task: class probabilities (softmax of the logits) for classification heads,
the raw map for regression heads. The task names, the output kinds and the training config
are stored under <out>/assets/. Load it with TensorFlow alone: launch/predict.py.
The benchmark's data set is needed to rebuild the model (--data_dir if it moved).

A run that is not finished (no results.json) is refused (exit code 2) unless --allow_unfinished;
outputs.json records under `run` whether the run was finished and the epoch of the exported
weights. The SavedModel is written beside --out and renamed into place, so a killed export
leaves nothing that blocks the same command.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags  # noqa: E402

from mtl_tf import export  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch/train.py.", required=True)
_OUT = flags.DEFINE_string("out", None, "SavedModel directory to write (new or empty).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data set location, if not the one the run used.")
_ALLOW_UNFINISHED = flags.DEFINE_bool(
    "allow_unfinished", False, "Export the best weights so far of a run that has no results.json yet."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        model, config, input_shape, pixels = export.load_trained_run(
            _WORKDIR.value, data_dir=_DATA_DIR.value, allow_unfinished=_ALLOW_UNFINISHED.value
        )
    except export.UnfinishedRun as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    status = export.run_status(_WORKDIR.value)
    metadata = export.export_saved_model(
        model, _OUT.value, input_shape=input_shape, config=config, pixel_transform=pixels, run=status
    )
    print(f"SavedModel: {_OUT.value}")
    finished = "finished run" if status["finished"] else f"UNFINISHED run ({status['epochs_trained']} of {status['epochs']} epochs)"
    print(f"weights: epoch {status['best_epoch']} of the {finished} {_WORKDIR.value}")
    print(f"input: {metadata['input']['name']} float32 {metadata['input']['shape']}")
    for task, kind in metadata["outputs"].items():
        print(f"output {task}: {'probabilities' if kind != 'identity' else 'raw'} ({kind})")


if __name__ == "__main__":
    app.run(main)
