"""Paper tables of the digit benchmarks, with the published numbers and a performance profile.

Tables (`launch/reproduce.py --table=NAME`):

  lee_son_table1_multi_fashion         Lee & Son Table 1, multi-fashion column;
  lee_son_table1_multi_mnist           the multi-MNIST column;
  lee_son_table1_multi_fashion_mnist   the multi-(fashion+MNIST) column;
      all three on the Pareto-MTL protocol (`configs/multi_*.py:pareto`);
  sener_table3                         Sener & Koltun Table 3, MultiMNIST (`configs/multi_mnist.py:sener`);
  sener_table3_multi_fashion           the same layout on multi-fashion (Sener's protocol);
                                       no published numbers (the paper has no such column).

Method names a table takes (`--methods=`): every balancer of
`mtl_tf.balancers.available()`, and

  ordinary            Lee & Son's "ordinary" MTL: the plain sum of the losses
                      (`static` with weights 1, 1; `uniform` is the mean);
  pareto_mtl_task1/2  Pareto MTL with the extreme preference vector that favours
                      task 1 / task 2. Lee & Son name the preference by the task it
                      favours; with Lin et al.'s quarter-circle vectors u_k =
                      (cos, sin) of k * pi/8, k = 0..4, the sub-region of u_4 =
                      (0, 1) keeps task 1's loss small, so task 1 is index 4 and
                      task 2 index 0 (`pareto_mtl` alone is the equal preference);
  single_task         one network per task (one run per task);
  grid, gridN         static weights on the simplex grid with N divisions (10 by
                      default, i.e. 0.1/0.9, ..., 0.9/0.1), one run per point; the
                      table row is the point with the best validation accuracy,
                      the figure shows every point.

Accuracies are printed in percent (results.json holds fractions); each cell is
the mean +- sample standard deviation over seeds, with the number of seeds.
The figure is Sener & Koltun's Figure 3 style performance profile: task-1 vs
task-2 test accuracy for every method (error bars over seeds), every grid point,
and the published numbers as hollow markers. Each method has its own marker shape;
methods at (nearly) the same point are drawn as concentric markers of decreasing
size, so none hides another (`common.marker_styles`). Runs trained with config
overrides (`launch/reproduce.py --config_overrides`) are named in the title
(`common.overrides_note`).

Every `single_step` run also gets Lee & Son's Figure 3 (section 4.1, "Loss ratio
of task 1 for multi-MNIST"), `<root>/<table>_fig3_<run>.png`, drawn from the
run's training history by `draw_fig3` (data: `fig3_curves`): per epoch and task
the loss at the shared weights, L_i(theta_s, theta_t^i) (`{task}_loss`), and at
the single-gradient-step point, L_i(theta_s^i, theta_t^i) (`{task}_inner_loss`),
plus the paper's own quantity, task 1's share of the summed loss at both points
(black and red in the paper, 0.5 when the tasks are balanced). The paper tracks
it at every step; a history has epochs only. A run whose history has no inner
losses is skipped with a printed note.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from mtl_tf import balancers
from mtl_tf.reports import common
from mtl_tf.reports.registry import PaperTable, Run, register

TASKS = ("left", "right")
METRIC = "accuracy"
PARETO_PREFERENCES = 5
GRID_DIVISIONS = common.GRID_DIVISIONS

# Lee & Son, Table 1 (accuracy %, task 1 / task 2), in the paper's row order.
LEE_SON_ROWS = (
    ("ordinary", "Ordinary"),
    ("uncertainty", "Uncertainty"),
    ("gradnorm", "GradNorm"),
    ("pareto_mtl", "Pareto MTL (equal)"),
    ("split_only", "Split-only"),
    ("single_step", "Proposed (single gradient step)"),
    ("pareto_mtl_task1", "Pareto MTL (task 1)"),
    ("pareto_mtl_task2", "Pareto MTL (task 2)"),
)
LEE_SON_TABLE1 = {
    "multi_mnist": {
        "ordinary": (91.63, 89.67), "uncertainty": (91.79, 89.08), "gradnorm": (89.65, 86.79),
        "pareto_mtl": (91.76, 89.49), "split_only": (91.52, 89.52), "single_step": (92.30, 90.38),
        "pareto_mtl_task1": (91.79, 88.28), "pareto_mtl_task2": (90.83, 89.77),
    },
    "multi_fashion": {
        "ordinary": (81.97, 81.25), "uncertainty": (81.78, 81.21), "gradnorm": (80.82, 77.88),
        "pareto_mtl": (82.12, 81.35), "split_only": (81.88, 81.36), "single_step": (82.41, 81.78),
        "pareto_mtl_task1": (82.15, 79.81), "pareto_mtl_task2": (80.75, 81.89),
    },
    "multi_fashion_mnist": {
        "ordinary": (93.52, 83.84), "uncertainty": (94.14, 81.08), "gradnorm": (85.34, 81.27),
        "pareto_mtl": (92.68, 84.24), "split_only": (93.01, 83.67), "single_step": (93.56, 84.28),
        "pareto_mtl_task1": (93.75, 82.84), "pareto_mtl_task2": (89.52, 85.03),
    },
}

# Sener & Koltun, Table 3 (MultiMNIST, left / right digit accuracy %).
SENER_ROWS = (
    ("single_task", "Single task"),
    ("uniform", "Uniform scaling"),
    ("uncertainty", "Kendall et al. 2018"),
    ("gradnorm", "GradNorm"),
    ("mgda_ub", "Ours (MGDA-UB)"),
)
SENER_TABLE3 = {
    "single_task": (97.23, 95.90),
    "uniform": (96.46, 94.99),
    "uncertainty": (96.47, 95.29),
    "gradnorm": (96.27, 94.84),
    "mgda_ub": (97.26, 95.90),
}


# -- runs ----------------------------------------------------------------------------------


def expand_method(label: str) -> list[tuple[str, dict]]:
    """A table method name -> [(run label, config overrides)]."""
    if label in ("pareto_mtl_task1", "pareto_mtl_task2"):
        index = PARETO_PREFERENCES - 1 if label.endswith("1") else 0
        return [(label, {"method": "pareto_mtl", "balancer.num_preferences": PARETO_PREFERENCES,
                         "balancer.preference_index": index})]
    runs = common.expand_shared_method(label, TASKS)
    if runs is not None:
        return runs
    raise ValueError(
        f"unknown method {label!r} for a digits table; expected one of {balancers.available()} or "
        "ordinary, pareto_mtl_task1, pareto_mtl_task2, single_task, grid, gridN"
    )


def _runs_for(config: str):
    def runs(methods, seeds):
        out = []
        for method in methods:
            for run_label, overrides in expand_method(method):
                for seed in seeds:
                    out.append(Run(key=f"{run_label}-seed{seed}", config=config, overrides={**overrides, "seed": int(seed)}))
        return out

    return runs


# -- aggregation -----------------------------------------------------------------------


def run_label(result: dict) -> str:
    return result["run_key"].rsplit("-seed", 1)[0]


def _accuracy(result: dict, task: str) -> float | None:
    value = result.get("tasks", {}).get(task, {}).get(METRIC)
    return None if value is None else 100.0 * float(value)




def aggregate(results: list) -> dict:
    """{row label: (stats task 1, stats task 2)}, each stats (mean, std, n) or None.

    Rows: one per run label; `single_task` from the per-task runs; `grid` from
    the best-validation point of each seed's grid.
    """
    by_label: dict[str, list] = {}
    for result in results:
        by_label.setdefault(run_label(result), []).append(result)
    rows = {}
    for label, group in by_label.items():
        if label.startswith("single_task_") or label.startswith("grid_"):
            continue
        rows[label] = tuple(common.mean_std([_accuracy(r, t) for r in group]) for t in TASKS)
    single = [by_label.get(f"single_task_{t}", []) for t in TASKS]
    if any(single):
        rows["single_task"] = tuple(common.mean_std([_accuracy(r, t) for r in runs]) for t, runs in zip(TASKS, single))
    grid = [r for label, group in by_label.items() if label.startswith("grid_") for r in group]
    if grid:
        best_per_seed = {}
        for r in grid:
            value = r.get("monitor", {}).get("value")
            seed = r.get("seed")
            if value is None:
                continue
            if seed not in best_per_seed or value > best_per_seed[seed].get("monitor", {}).get("value"):
                best_per_seed[seed] = r
        rows["grid"] = tuple(common.mean_std([_accuracy(r, t) for r in best_per_seed.values()]) for t in TASKS)
    return rows


def grid_points(results: list) -> list[tuple[list, float, float]]:
    """[(weights, task-1 %, task-2 %)], the mean over seeds of every grid point."""
    points: dict[tuple, list] = {}
    for r in results:
        if run_label(r).startswith("grid_"):
            weights = tuple(r.get("config", {}).get("balancer", {}).get("weights") or ())
            points.setdefault(weights, []).append((_accuracy(r, TASKS[0]), _accuracy(r, TASKS[1])))
    return [(list(w), float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for w, v in points.items()]


# -- rendering -------------------------------------------------------------------------


def _cell(stats) -> str:
    if stats is None:
        return "—"
    mean, std, n = stats
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _published(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ordered_labels(paper_rows, rows):
    labels = [label for label, _ in paper_rows]
    labels += [label for label in rows if label not in labels]
    return labels


def _renderer(paper_rows, published: dict, task_headers):
    names = dict(paper_rows)

    def render(results):
        rows = aggregate(results)
        h1, h2 = task_headers
        lines = [
            f"| Method | Published {h1} | Published {h2} | Ours {h1} | Ours {h2} | seeds |",
            "|---|---|---|---|---|---|",
        ]
        for label in _ordered_labels(paper_rows, rows):
            pub = published.get(label, (None, None))
            ours = rows.get(label, (None, None))
            n = max((s[2] for s in ours if s is not None), default=0)
            name = names.get(label, label)
            if label == "grid":
                name = "Grid search (best validation point)"
            elif label != name:
                name = f"{name} (`{label}`)"
            else:
                name = f"`{label}`"
            lines.append(
                f"| {name} | {_published(pub[0])} | {_published(pub[1])} | {_cell(ours[0])} | {_cell(ours[1])} | {n} |"
            )
        return "\n".join(lines)

    return render


def _pyplot():
    import matplotlib

    # Reports are drawn on headless training machines.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- Lee & Son, Figure 3 -------------------------------------------------------------------

FIG3_METHOD = "single_step"
INNER_SUFFIX = "_inner_loss"
# How the history holds each curve: both are the model's batch-size weighted
# epoch means (`{task}_inner_loss` is in single_step's `epoch_mean_logs`).
SHARED_LOGGED_AS = "epoch mean"
INNER_LOGGED_AS = "epoch mean"


def _load_run(run) -> tuple[dict, Path | None]:
    """A loaded results.json dict, or a results.json / workdir path -> (result, workdir or None)."""
    if isinstance(run, dict):
        return run, None
    path = Path(run)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text()), path.parent


def fig3_tasks(result: dict) -> list[str]:
    """The tasks with an `{task}_inner_loss` in the run's training history, in log order."""
    tasks = []
    for entry in result.get("history") or ():
        for key in entry:
            if key.endswith(INNER_SUFFIX) and not key.startswith("val_"):
                task = key[: -len(INNER_SUFFIX)]
                if task and task not in tasks:
                    tasks.append(task)
    return tasks


def fig3_curves(result: dict, tasks=None) -> dict | None:
    """The data of Lee & Son's Figure 3 for one run, per epoch of its training history.

    Source: Lee & Son, "Multitask Learning with Single Gradient Step Update for
    Task Balancing", section 4.1 and Fig. 3: the black line is task 1's share
    L_1 / (L_1 + L_2) of the loss at the shared weights theta_s, the red line the
    same share at the points theta_s^i of the single gradient step (eq. 2), which
    the shared update (eq. 3) descends.

    Returns None when the history has no `{task}_inner_loss`, else
    {"epochs": [n], "tasks": {task: {"shared": [n], "inner": [n]}},
    "ratio": {"shared": [n], "inner": [n]}} (NumPy float arrays, NaN where an
    epoch lacks a value); "shared" is `{task}_loss` (L_i(theta_s, theta_t^i)),
    "inner" `{task}_inner_loss` (L_i(theta_s^i, theta_t^i)), "ratio" the first
    task's share of the sum over the tasks.
    """
    tasks = list(tasks) if tasks is not None else fig3_tasks(result)
    history = result.get("history") or []
    if not tasks or not history:
        return None

    def column(key):
        return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=float)

    curves = {t: {"shared": column(f"{t}_loss"), "inner": column(f"{t}{INNER_SUFFIX}")} for t in tasks}
    if all(np.isnan(c["inner"]).all() for c in curves.values()):
        return None
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=float)
    ratio = {}
    for point in ("shared", "inner"):
        total = np.sum([curves[t][point] for t in tasks], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[point] = np.where(total != 0, curves[tasks[0]][point] / total, np.nan)
    return {"epochs": epochs, "tasks": curves, "ratio": ratio}


def fig3_title(result: dict, workdir=None) -> str:
    """Names the run, and says the curves are ours, not the paper's."""
    method = result.get("method") or (run_label(result) if "run_key" in result else "?")
    seed = result.get("seed", "?")
    benchmark = result.get("benchmark")
    where = f", {benchmark}" if benchmark else ""
    return (
        f"Lee & Son Fig. 3 layout, this project's measurement: {method}, seed {seed}{where}\n"
        f"workdir: {workdir if workdir is not None else '?'}"
    )


def draw_fig3(run, path, *, workdir=None, tasks=None) -> Path:
    """Draws Lee & Son's Figure 3 for one run into the PNG `path` and returns `path`.

    `run` is a loaded results.json dict or a path to a results.json or its
    workdir. One panel per task with both losses, then the paper's panel, task
    1's loss ratio (black at theta_s, red at theta_s^i, the paper's colours;
    0.5 is balance). See `fig3_curves` for the data and the source.

    Raises:
      ValueError: the history holds no `{task}_inner_loss` (not a single_step run).
    """
    result, loaded_from = _load_run(run)
    workdir = workdir if workdir is not None else loaded_from
    curves = fig3_curves(result, tasks)
    if curves is None:
        raise ValueError(f"run {workdir or result.get('run_key', '?')} has no *{INNER_SUFFIX} in its history")
    plt = _pyplot()
    tasks = list(curves["tasks"])
    epochs = curves["epochs"]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.6 * (len(tasks) + 1), 4.4), squeeze=False)
    axes = axes[0]
    for ax, task in zip(axes, tasks):
        ax.plot(epochs, curves["tasks"][task]["shared"], "o-", color="black", ms=3,
                label=f"at $\\theta_s$: {task}_loss ({SHARED_LOGGED_AS})")
        ax.plot(epochs, curves["tasks"][task]["inner"], "o-", color="red", ms=3,
                label=f"at $\\theta_s^i$: {task}{INNER_SUFFIX} ({INNER_LOGGED_AS})")
        ax.set_title(f"task {task}: training loss", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
    ax = axes[-1]
    ax.axhline(0.5, color="0.6", ls=":", lw=1, label="balanced (0.5)")
    ax.plot(epochs, curves["ratio"]["shared"], "o-", color="black", ms=3,
            label=f"without the single step ({SHARED_LOGGED_AS})")
    ax.plot(epochs, curves["ratio"]["inner"], "o-", color="red", ms=3,
            label=f"after the single step ({INNER_LOGGED_AS})")
    ax.set_title(f"loss ratio of task 1 ({tasks[0]}), the paper's Fig. 3", fontsize=9)
    ax.set_xlabel("epoch (the paper: every step)")
    ax.set_ylabel(f"{tasks[0]} loss / summed loss")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(fig3_title(result, workdir), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _is_fig3_run(result: dict) -> bool:
    label = run_label(result) if "run_key" in result else None
    return result.get("method") == FIG3_METHOD or label == FIG3_METHOD


def fig3_figures(results, out_dir: Path, table_name: str, log=print) -> list[Path]:
    """Figure 3 of every single_step run: `<out_dir>/<table>_fig3_<run key>.png` (runs live in `<out_dir>/<key>`)."""
    paths = []
    for result in results:
        if not _is_fig3_run(result):
            continue
        key = result.get("run_key", f"{FIG3_METHOD}-seed{result.get('seed', '?')}")
        if fig3_curves(result) is None:
            log(f"{table_name}: {key} has no *{INNER_SUFFIX} in its training history; no Fig. 3 for it")
            continue
        paths.append(draw_fig3(result, Path(out_dir) / f"{table_name}_fig3_{key}.png", workdir=Path(out_dir) / key))
    return paths


# -- the performance profile -----------------------------------------------------------------


def _figure_maker(table_name: str, title: str, published: dict, paper_rows, axis_labels):
    def figures(results, out_dir: Path):
        plt = _pyplot()

        rows = aggregate(results)
        names = dict(paper_rows)
        labels = [label for label in _ordered_labels(paper_rows, rows) if label != "grid"]
        colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
        fig, ax = plt.subplots(figsize=(10, 6))
        points = grid_points(results)
        if points:
            ax.plot([p[1] for p in points], [p[2] for p in points], "x-", color="0.55", ms=6, lw=0.8,
                    label="grid search (static weights)", zorder=1)
            for weights, x, y in points:
                ax.annotate("/".join(f"{w:g}" for w in weights), (x, y), fontsize=6, color="0.4",
                            xytext=(3, 3), textcoords="offset points")
        shapes = {label: common.MARKERS[i % len(common.MARKERS)] for i, label in enumerate(labels)}
        ours = {}
        for label in labels:
            stats = rows.get(label)
            if stats and all(s is not None for s in stats):
                ours[label] = (stats[0][0], stats[1][0])
        ours_style = common.marker_styles(ours, markers=shapes)
        published_points = {label: tuple(published[label]) for label in labels if published.get(label) is not None}
        published_style = common.marker_styles(published_points, markers=shapes, size=8.0)
        for label in labels:
            color = colors[label]
            if label in ours:
                (m1, s1, n), (m2, s2, _) = rows[label]
                style = ours_style[label]
                # Methods at the same point: concentric markers of different shapes and sizes (marker_styles).
                ax.errorbar(m1, m2, xerr=s1 if n > 1 else None, yerr=s2 if n > 1 else None, fmt=style["marker"],
                            ms=style["ms"], mec="white", mew=0.6, color=color, capsize=3,
                            label=f"{names.get(label, label)} (ours, n={n})", zorder=style["zorder"])
            if label in published_points:
                style = published_style[label]
                ax.plot(*published_points[label], marker=style["marker"], ms=style["ms"], mfc="none", mec=color, mew=1.5,
                        ls="none", label=f"{names.get(label, label)} (published)", zorder=2)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        note = common.overrides_note(results)
        ax.set_title(title + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=10)
        if note:  # a run that is not the paper's protocol must not pass for one
            ax.title.set_color("firebrick")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        fig.tight_layout()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{table_name}_profile.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return [path, *fig3_figures(results, out_dir, table_name)]

    return figures


# -- registration ----------------------------------------------------------------------

_LEE_SON_DEFAULT = (
    "ordinary", "uniform", "uncertainty", "gradnorm", "pareto_mtl", "split_only", "single_step",
    "pareto_mtl_task1", "pareto_mtl_task2", "mgda_ub",
)
_SENER_DEFAULT = ("single_task", "uniform", "uncertainty", "gradnorm", "mgda_ub", "grid")
_COLUMN_NAMES = {
    "multi_mnist": "multi-MNIST",
    "multi_fashion": "multi-fashion",
    "multi_fashion_mnist": "multi-(fashion+MNIST)",
}

for _benchmark, _column in _COLUMN_NAMES.items():
    _name = f"lee_son_table1_{_benchmark}"
    _description = (
        f"Lee & Son, Table 1, {_column} column: test accuracy [%] of task 1 (top-left) and task 2 "
        "(bottom-right), Pareto-MTL protocol (120k/10k/10k, Pareto-MTL LeNet, best validation epoch)"
    )
    register(
        PaperTable(
            name=_name,
            description=_description,
            default_methods=_LEE_SON_DEFAULT,
            runs=_runs_for(f"configs/{_benchmark}.py:pareto"),
            render=_renderer(LEE_SON_ROWS, LEE_SON_TABLE1[_benchmark], ("task 1", "task 2")),
            figures=_figure_maker(
                _name, f"{_column} (Pareto-MTL protocol): performance profile", LEE_SON_TABLE1[_benchmark],
                LEE_SON_ROWS, ("task 1 (top-left) accuracy [%]", "task 2 (bottom-right) accuracy [%]"),
            ),
        )
    )

register(
    PaperTable(
        name="sener_table3",
        description=(
            "Sener & Koltun, Table 3 and Figure 3: MultiMNIST left / right digit test accuracy [%], "
            "MultiLeNet, Sener protocol, best validation epoch"
        ),
        default_methods=_SENER_DEFAULT,
        runs=_runs_for("configs/multi_mnist.py:sener"),
        render=_renderer(SENER_ROWS, SENER_TABLE3, ("left", "right")),
        figures=_figure_maker(
            "sener_table3", "MultiMNIST accuracy profile (Sener & Koltun Figure 3 layout)", SENER_TABLE3,
            SENER_ROWS, ("task-L (left digit) accuracy [%]", "task-R (right digit) accuracy [%]"),
        ),
    )
)

register(
    PaperTable(
        name="sener_table3_multi_fashion",
        description=(
            "Sener & Koltun's Table 3 layout on multi-fashion (Sener protocol, MultiLeNet): left / right "
            "test accuracy [%]; the paper has no multi-fashion numbers"
        ),
        default_methods=_SENER_DEFAULT,
        runs=_runs_for("configs/multi_fashion.py:sener"),
        render=_renderer(SENER_ROWS, {}, ("left", "right")),
        figures=_figure_maker(
            "sener_table3_multi_fashion", "multi-fashion accuracy profile (Sener protocol)", {},
            SENER_ROWS, ("task-L (left item) accuracy [%]", "task-R (right item) accuracy [%]"),
        ),
    )
)
