"""A figure of one run from its results.json: task weights, task losses and validation metrics per epoch.

`run_curves(result)` reads the per-epoch `history` that `mtl_tf.training.trainer` writes into
results.json (one dict per epoch: `{task}_weight_mean`, `{task}_weight`, `{task}_loss`,
`val_{task}_loss`, `val_{task}_{metric}`, ...; the logs are listed in `mtl_tf.step_logs`);
`draw_run(run, path)` draws it as a PNG (matplotlib, Agg backend), which `launch/plot_run.py`
and `examples/plot_results.py` do from the command line:

  panel 1  the task weights the method used (alpha for MGDA, the loss weights of
           uncertainty / GradNorm, constants for static or uniform): the mean over each
           epoch's steps (`{task}_weight_mean`), or, for a history without it (runs
           written before it was logged), the weight of each epoch's last step
           (`{task}_weight`); the panel's title says which;
  panel 2  each task's training loss (solid) and validation loss (dashed);
  then     one panel per validation metric (accuracy, mIoU, ...) with a line per task.

A dotted vertical line marks the best validation epoch (the weights the run reports). A grid
run's results.json has no history: the figure is its selected point's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_NOT_METRICS = ("loss", "weight", "weight_mean", "inner_loss")
WEIGHT_TITLES = {
    "_weight_mean": "task weights, mean over each epoch",
    "_weight": "task weights at the last step of each epoch",
}


def load_result(run) -> tuple[dict, Path | None]:
    """(results dict, its workdir or None) from a dict, a results.json path or a run directory.

    A grid run is replaced by its selected point (the run whose history exists).
    """
    if isinstance(run, dict):
        result, workdir = run, None
    else:
        path = Path(run)
        if path.is_dir() or path.suffix != ".json":
            path = path / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: a figure needs a finished run's results.json")
        result, workdir = json.loads(path.read_text()), path.parent
    if result.get("method") == "grid" and not result.get("history"):
        return load_result(result["selected"]["workdir"])
    return result, workdir


def _task_of(key: str, tasks) -> str | None:
    matches = [t for t in tasks if key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


def run_curves(result: dict) -> dict:
    """The per-epoch curves of a results.json dict.

    Returns {"epochs": [n], "tasks": [task], "weights": {task: [n]}, "weight_log": str,
    "train_loss": {task: [n]}, "val_loss": {task: [n]}, "val_metrics": {metric: {task: [n]}},
    "best_epoch": int | None} (float arrays, NaN where an epoch lacks the value; tasks without a
    curve are left out). `weight_log` is the suffix of the weights' log: `"_weight_mean"` (the
    epoch mean) when the history has it, else `"_weight"` (each epoch's last step).

    Raises:
      ValueError: the result has no history (not a results.json of `launch/train.py`).
    """
    history = result.get("history") or []
    if not history:
        raise ValueError(
            "the run's results.json has no per-epoch 'history' (written by launch/train.py); nothing to plot"
        )
    tasks = list(result.get("tasks") or {})
    if not tasks:  # an older or foreign result: the tasks of the weight logs
        tasks = sorted({k[: -len("_weight")] for h in history for k in h if k.endswith("_weight") and not k.startswith("val_")})
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=float)

    def column(key):
        return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=float)

    def present(curves):
        return {t: c for t, c in curves.items() if not np.isnan(c).all()}

    metrics: dict[str, dict] = {}
    for key in dict.fromkeys(k for h in history for k in h):  # every key once, in log order
        if not key.startswith("val_"):
            continue
        task = _task_of(key[4:], tasks)
        if task is None:
            continue
        metric = key[4 + len(task) + 1:]
        if metric in _NOT_METRICS:
            continue
        metrics.setdefault(metric, {})[task] = column(key)
    weight_log = "_weight_mean" if any(f"{t}_weight_mean" in h for h in history for t in tasks) else "_weight"
    return {
        "epochs": epochs,
        "tasks": tasks,
        "weights": present({t: column(f"{t}{weight_log}") for t in tasks}),
        "weight_log": weight_log,
        "train_loss": present({t: column(f"{t}_loss") for t in tasks}),
        "val_loss": present({t: column(f"val_{t}_loss") for t in tasks}),
        "val_metrics": {m: present(c) for m, c in metrics.items() if present(c)},
        "best_epoch": result.get("best_epoch"),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # reports are drawn on headless training machines
    import matplotlib.pyplot as plt

    return plt


def draw_run(run, path=None) -> Path:
    """Draws the figure of one run (see the module doc) into the PNG `path`; returns `path`.

    `run` is a results.json dict, a results.json path or a run directory; `path`
    defaults to `<workdir>/run.png` (required for a dict).
    """
    result, workdir = load_result(run)
    if path is None:
        if workdir is None:
            raise ValueError("give the PNG path: a results dict has no run directory to write it to")
        path = workdir / "run.png"
    curves = run_curves(result)
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metric_names = list(curves["val_metrics"])
    panels = 2 + len(metric_names)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.8 * rows), squeeze=False)
    axes = axes.ravel()
    colors = {t: plt.get_cmap("tab10" if len(curves["tasks"]) <= 10 else "tab20")(i % 20)
              for i, t in enumerate(curves["tasks"])}
    epochs = curves["epochs"]

    ax = axes[0]
    for task, values in curves["weights"].items():
        ax.plot(epochs, values, "o-", ms=3, color=colors[task], label=task)
    ax.set_title(WEIGHT_TITLES[curves["weight_log"]], fontsize=9)
    ax.set_ylabel("weight")
    if not curves["weights"]:
        ax.text(0.5, 0.5, "no {task}_weight in the history", ha="center", va="center", transform=ax.transAxes)

    ax = axes[1]
    for task, values in curves["train_loss"].items():
        ax.plot(epochs, values, "o-", ms=3, color=colors[task], label=f"{task} train")
    for task, values in curves["val_loss"].items():
        ax.plot(epochs, values, "s--", ms=3, color=colors[task], label=f"{task} validation")
    ax.set_title("task losses (solid: training, dashed: validation)", fontsize=9)
    ax.set_ylabel("loss")

    for ax, metric in zip(axes[2:], metric_names):
        for task, values in curves["val_metrics"][metric].items():
            ax.plot(epochs, values, "o-", ms=3, color=colors[task], label=task)
        ax.set_title(f"validation {metric}", fontsize=9)
        ax.set_ylabel(metric)

    for ax in axes[:panels]:
        if curves["best_epoch"] is not None:
            ax.axvline(curves["best_epoch"], color="0.5", ls=":", lw=1, label=f"best epoch {curves['best_epoch']}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if len(ax.get_legend_handles_labels()[0]) <= 12:  # 40 CelebA tasks: colours only
            ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.set_visible(False)
    title = f"{result.get('method', '?')} on {result.get('benchmark', '?')}, seed {result.get('seed', '?')}"
    if workdir is not None:
        title += f"\n{workdir}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
