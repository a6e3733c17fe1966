"""Reading a run's results.json and plotting it per epoch: task weights, task losses, validation metrics.

Run: python examples/plot_results.py RUN [--out FIGURE.png]

RUN is a run directory of `launch/train.py` (its `--workdir`) or the
`results.json` in it; the figure goes to `--out` (default: `results.png` beside
results.json). For a run to plot in a few seconds:

  python launch/train.py --config=configs/multi_fashion.py:smoke --config.epochs=2 \
      --config.data.pareto_sizes="(256, 64, 64)" --config.batch_size=64 --workdir=/tmp/tiny
  python examples/plot_results.py /tmp/tiny

What results.json holds (written by `mtl_tf.training.trainer`):

  method, seed, benchmark, best_epoch, epochs_trained
  tasks        {task: {metric: value}} on the test split, with the best weights
  validation   the same on the validation split
  history      one dict per epoch: epoch, loss, {task}_loss, {task}_{metric},
               {task}_weight (the task weight of the epoch's last step; alpha for
               MGDA), {task}_weight_mean (its mean over the epoch's steps),
               val_{task}_loss, val_{task}_{metric}, val_monitor, and method scalars
               (every log is described in `mtl_tf.step_logs`)
  config, versions, sizes, strategy, wall_time_s

This script prints the history's task weights and the test metrics, and draws
the figure with `mtl_tf.reports.run_figure.draw_run`, the same figure as
`python launch/plot_run.py --workdir=RUN`. It needs matplotlib (in the `launch`
and `test` extras) and reads only results.json (no data set, no model), so it
works on results.json files copied off a training machine.
"""

import argparse
import json
from pathlib import Path


def load_results(run):
    """The parsed results.json of `run` (a run directory or the file itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a run directory of launch/train.py or its results.json")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); is the run still writing it?") from None
    missing = [key for key in ("method", "tasks", "history") if key not in results]
    if missing:
        raise ValueError(f"{path} has no {missing}; is it a results.json of launch/train.py?")
    return path, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (launch/train.py --workdir) or its results.json")
    parser.add_argument("--out", help="PNG to write (default: results.png beside results.json)")
    args = parser.parse_args(argv)
    try:
        path, results = load_results(args.run)
    except (OSError, ValueError) as error:  # a wrong path or file: one line, not a traceback
        parser.exit(2, f"plot_results.py: error: {error}\n")
    # Only now: mtl_tf imports TensorFlow (seconds), which a wrong path need not wait for.
    from mtl_tf.reports import run_figure

    for entry in results["history"]:
        last = {t: round(entry[f"{t}_weight"], 4) for t in results["tasks"] if f"{t}_weight" in entry}
        mean = {t: round(entry[f"{t}_weight_mean"], 4) for t in results["tasks"] if f"{t}_weight_mean" in entry}
        line = f"epoch {entry['epoch']}: loss {entry.get('loss', float('nan')):.4f}, task weights {last}"
        print(line + (f" at the last step, {mean} mean over the epoch" if mean else " at the last step"))
    for task, values in results["tasks"].items():
        print(f"test {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    print("figure:", run_figure.draw_run(results, Path(args.out or path.with_name("results.png"))))


if __name__ == "__main__":
    main()
