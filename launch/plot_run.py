"""Draws one run's figure from its results.json: task weights, task losses and validation metrics per epoch.

  python launch/plot_run.py --workdir=runs/multi_fashion_mgda_ub            # -> runs/multi_fashion_mgda_ub/run.png
  python launch/plot_run.py --workdir=runs/multi_fashion_mgda_ub --out=mgda.png

Reads only results.json (no data set, no model); the figure is `mtl_tf.reports.run_figure.draw_run`'s.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags  # noqa: E402

from mtl_tf.reports import run_figure  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch/train.py (or its results.json).",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "PNG to write (default: <workdir>/run.png).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        path = run_figure.draw_run(_WORKDIR.value, _OUT.value)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"figure: {path}")


if __name__ == "__main__":
    app.run(main)
