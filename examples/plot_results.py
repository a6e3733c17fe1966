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
               MGDA), val_{task}_loss, val_{task}_{metric}, and method scalars
  config, versions, sizes, strategy, wall_time_s

Needs matplotlib (in the `launch` and `test` extras) and the standard library
only, with the non-interactive Agg backend (no display), so the same code reads
results.json files copied off a training machine. The project's own figure of a
run is `python launch/plot_run.py` (`mtl_tf.reports.run_figure`); this example
shows how little reading results.json takes.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files; no window

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


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


def series(history, key):
    """(epochs, values) of the epochs whose log has `key`."""
    points = [(entry["epoch"], entry[key]) for entry in history if entry.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def plot(results, out):
    history, tasks = results["history"], list(results["tasks"])
    metrics = sorted({m for t in tasks for m in results["tasks"][t] if m != "loss"})
    figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    weights_axis, loss_axis, metric_axis = axes
    colours = {task: f"C{i}" for i, task in enumerate(tasks)}
    # Markers show single epochs on short runs; on long ones they would hide the curves.
    marker = len(history) <= 30
    for task in tasks:
        line = {"color": colours[task]}
        weights_axis.plot(*series(history, f"{task}_weight"), marker="o" if marker else None, label=task, **line)
        loss_axis.plot(*series(history, f"{task}_loss"), marker="o" if marker else None, label=f"{task} train", **line)
        loss_axis.plot(*series(history, f"val_{task}_loss"), "--", marker="s" if marker else None,
                       label=f"{task} validation", **line)
        for style, metric in zip(("-", "--", ":", "-."), metrics):
            metric_axis.plot(*series(history, f"val_{task}_{metric}"), style, marker="o" if marker else None,
                             label=f"{task} {metric}", **line)
    weights_axis.set(title="task weights (last step of each epoch)", xlabel="epoch", ylabel="weight")
    loss_axis.set(title="task losses", xlabel="epoch", ylabel="loss")
    metric_axis.set(title="validation metrics", xlabel="epoch")
    best = results.get("best_epoch")
    for axis in axes:
        if best is not None:
            axis.axvline(best, color="grey", linewidth=0.8, linestyle=":")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    test = ", ".join(f"{t} {m} {results['tasks'][t][m]:.4f}" for t in tasks for m in metrics if m in results["tasks"][t])
    figure.suptitle(
        f"{results.get('benchmark', '')} / {results['method']} / seed {results.get('seed')}: "
        f"best epoch {best} (dotted); test {test}"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (launch/train.py --workdir) or its results.json")
    parser.add_argument("--out", help="PNG to write (default: results.png beside results.json)")
    args = parser.parse_args(argv)
    try:
        path, results = load_results(args.run)
    except (OSError, ValueError) as error:  # a wrong path or file: one line, not a traceback
        parser.exit(2, f"plot_results.py: error: {error}\n")
    for entry in results["history"]:
        weights = {t: round(entry[f"{t}_weight"], 4) for t in results["tasks"] if f"{t}_weight" in entry}
        print(f"epoch {entry['epoch']}: loss {entry.get('loss', float('nan')):.4f}, task weights {weights}")
    for task, values in results["tasks"].items():
        print(f"test {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    print("figure:", plot(results, args.out or path.with_name("results.png")))


if __name__ == "__main__":
    main()
