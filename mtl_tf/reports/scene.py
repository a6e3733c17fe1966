"""Paper tables of the scene-understanding benchmarks, with the published numbers and performance profiles.

Tables (`launch/reproduce.py --table=NAME`):

  sener_table4    Sener & Koltun, Table 4 (and the MGDA row of Table 2): Cityscapes, segmentation
                  mIoU [%], instance error [px], disparity error [px] (`configs/cityscapes.py`);
  lee_son_table2  Lee & Son, Table 2: MTAN's Cityscapes with SegNet, mIoU and pixel accuracy
                  [%], depth absolute and relative error (`configs/cityscapes_segnet.py`);
  lee_son_table3  Lee & Son, Table 3: MTAN's NYUv2 with SegNet, plus the surface-normal angle
                  mean and median [deg] and the share within 11.25, 22.5, 30 deg [%]
                  (`configs/nyuv2.py`).

Method names a table takes (`--methods=`): every balancer of `mtl_tf.balancers.available()`, and

  ordinary      Lee & Son's (and MTAN's "equal") ordinary MTL: the plain sum of the task
                losses (`static` with every weight 1; `uniform` is the mean);
  single_task   one network per task (one run per task and seed);
  grid, gridN   static weights on the simplex grid with N divisions (10 by default), one run
                per point with no zero weight; the row is each seed's best-validation point,
                so it needs a validation split (`data.val_cities` / `data.val_size`), and
                the figures show every point.

Cells are the mean +- sample standard deviation over seeds of the test metrics of
results.json (fractions shown in percent where the paper uses percent). Delta_m [%]
(`mtl_tf.metrics.delta_m`, lower is better) compares each run with the mean of our
single-task runs over the table's metrics (`mtl_tf.benchmarks.scene.DELTA_M_METRICS`);
the published Delta_m is computed from the published numbers where the paper has a
single-task row (Sener's Table 4 only).

Figures: Sener & Koltun's Figure 4 style pairwise performance profiles, one panel per
pair of tasks, `<table>_profile.png`: each method's mean (error bars over seeds), the
published numbers as hollow markers and the grid points in grey; top-right is better.
Performance measures as in Sener's Figure 4: mIoU, 1 - instance error (normalised by
the 2048-pixel width of the Cityscapes images; our offsets are in source pixels) and
1 / disparity error; for the SegNet tables, mIoU, 1 / depth absolute error and
1 / mean normal angle.

Published numbers, and what we know about them:

* Sener Table 4: the plain-text extraction in `shared/papers` lost the single-task
  mIoU; 60.68 is the value printed in the NeurIPS paper. The text calls the instance
  metric an MSE, but the numbers (about 10 px) and the official evaluation code are an
  L1 error, so we compare with `offset_l1`. Sener's code also standardises the
  disparity target with a per-pixel mean map and truncates predictions to integers in
  its L1 metric; we report the L1 error of the official disparity in pixels.
* Lee & Son Table 3: the "within 30" of Uncertainty reads 37.35, below its own "within
  22.5" (45.59), so it is probably a typo for 57.35; it is shown as printed.
* Lee & Son's Cityscapes relative errors (about 24) are in the units MTAN prints (mean
  |d - d*| / d* over inverse depths), not percent; ours are shown the same way.
* MTAN (Liu et al.) rows are published only (MTAN's attention network is not built here).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from mtl_tf import balancers
from mtl_tf.benchmarks.scene import DELTA_M_METRICS, METRIC_DIRECTIONS
from mtl_tf.metrics import delta_m
from mtl_tf.reports import common
from mtl_tf.reports.registry import PaperTable, Run, register

GRID_DIVISIONS = common.GRID_DIVISIONS
CITYSCAPES_WIDTH = 2048.0  # source width of the official images, Figure 4's normaliser

TASKS = {
    "cityscapes": ("segmentation", "instance", "disparity"),
    "cityscapes_segnet": ("segmentation", "depth"),
    "nyuv2_segnet": ("segmentation", "depth", "normal"),
}

# (task, metric, header, scale applied to our value, decimals)
SENER_COLUMNS = (
    ("segmentation", "miou", "Segmentation mIoU [%]", 100.0, 2),
    ("instance", "offset_l1", "Instance error [px]", 1.0, 2),
    ("disparity", "abs_error", "Disparity error [px]", 1.0, 2),
)
LEE_SON_SEGMENTATION_DEPTH = (
    ("segmentation", "miou", "mIoU [%]", 100.0, 2),
    ("segmentation", "pixel_accuracy", "Pixel acc. [%]", 100.0, 2),
    ("depth", "abs_error", "Depth abs. err.", 1.0, 4),
)
LEE_SON_TABLE2_COLUMNS = LEE_SON_SEGMENTATION_DEPTH + (("depth", "rel_error", "Depth rel. err.", 1.0, 2),)
LEE_SON_TABLE3_COLUMNS = LEE_SON_SEGMENTATION_DEPTH + (
    ("depth", "rel_error", "Depth rel. err.", 1.0, 4),
    ("normal", "angle_mean", "Normal mean [deg]", 1.0, 2),
    ("normal", "angle_median", "Normal median [deg]", 1.0, 2),
    ("normal", "within_11.25", "Within 11.25 [%]", 100.0, 2),
    ("normal", "within_22.5", "Within 22.5 [%]", 100.0, 2),
    ("normal", "within_30", "Within 30 [%]", 100.0, 2),
)

SENER_ROWS = (
    ("single_task", "Single task"),
    ("uniform", "Uniform scaling"),
    ("uncertainty", "Kendall et al. 2018"),
    ("gradnorm", "GradNorm"),
    ("mgda_ub", "Ours (MGDA-UB)"),
    ("mgda", "Ours w/o approximation (MGDA, Table 2)"),
)
SENER_TABLE4 = {
    "single_task": (60.68, 11.34, 2.78),
    "uniform": (54.59, 10.38, 2.96),
    "uncertainty": (64.21, 11.54, 2.65),
    "gradnorm": (64.81, 11.31, 2.57),
    "mgda_ub": (66.63, 10.25, 2.54),
    "mgda": (66.13, 10.28, 2.59),
}
LEE_SON_ROWS = (
    ("ordinary", "Ordinary"),
    ("uncertainty", "Uncertainty"),
    ("gradnorm", "GradNorm"),
    ("mtan", "MTAN (equal weights; published only)"),
    ("split_only", "Split-only"),
    ("single_step", "Proposed (single gradient step)"),
    ("single_task", "Single task (not in the paper)"),
)
LEE_SON_TABLE2 = {
    "ordinary": (52.47, 90.59, 0.0147, 24.62),
    "uncertainty": (49.62, 90.13, 0.0146, 24.22),
    "gradnorm": (46.62, 87.71, 0.0185, 32.77),
    "mtan": (53.04, 91.11, 0.0144, 33.63),
    "split_only": (54.09, 91.18, 0.0141, 23.94),
    "single_step": (53.80, 90.96, 0.0140, 22.99),
}
LEE_SON_TABLE3 = {
    "ordinary": (17.44, 54.92, 0.6059, 0.2573, 31.39, 25.36, 23.42, 45.61, 57.22),
    "uncertainty": (16.92, 54.78, 0.6099, 0.2630, 31.26, 25.34, 23.25, 45.59, 37.35),
    "gradnorm": (12.93, 42.53, 0.8048, 0.3490, 37.85, 35.85, 10.73, 29.14, 41.16),
    "mtan": (17.72, 55.32, 0.5906, 0.2577, 31.44, 25.37, 23.17, 45.65, 57.48),
    "split_only": (17.29, 51.70, 0.6478, 0.2767, 31.98, 26.49, 22.33, 43.79, 55.52),
    "single_step": (19.49, 55.95, 0.6028, 0.2514, 30.83, 25.12, 23.70, 45.90, 57.72),
}

# Figure axes: (task, metric, axis label, performance from our displayed value).
SENER_PROFILE = (
    ("segmentation", "miou", "segmentation mIoU [%]", lambda v: v),
    ("instance", "offset_l1", "1 - instance error / 2048 px", lambda v: 1.0 - v / CITYSCAPES_WIDTH),
    ("disparity", "abs_error", "1 / disparity error [1/px]", lambda v: 1.0 / v),
)
SEGNET_PROFILE = {
    "segmentation": ("segmentation", "miou", "segmentation mIoU [%]", lambda v: v),
    "depth": ("depth", "abs_error", "1 / depth absolute error", lambda v: 1.0 / v),
    "normal": ("normal", "angle_mean", "1 / mean normal angle [1/deg]", lambda v: 1.0 / v),
}


# -- runs ----------------------------------------------------------------------------------




def expand_method(label: str, tasks) -> list[tuple[str, dict]]:
    """A table method name -> [(run label, config overrides)]."""
    if label == "mtan":
        raise ValueError("MTAN's attention network is not implemented; its rows are published numbers only")
    runs = common.expand_shared_method(label, tasks)
    if runs is not None:
        return runs
    raise ValueError(
        f"unknown method {label!r} for a scene table; expected one of {balancers.available()} or "
        "ordinary, single_task, grid, gridN"
    )


def _runs_for(benchmark: str, config: str):
    tasks = TASKS[benchmark]

    def runs(methods, seeds):
        out = []
        for method in methods:
            for run_label, overrides in expand_method(method, tasks):
                for seed in seeds:
                    out.append(Run(
                        key=f"{benchmark}-{run_label}-seed{int(seed)}",
                        config=config,
                        overrides={**overrides, "seed": int(seed)},
                    ))
        return out

    return runs


# -- aggregation ---------------------------------------------------------------------------


def run_label(result: dict) -> str:
    """The row label of a result: its run key without the benchmark prefix and the seed."""
    key = result["run_key"]
    label = key.rsplit("-seed", 1)[0]
    return label.split("-", 1)[1] if "-" in label else label


def _value(result: dict, task: str, metric: str):
    value = (result.get("tasks") or {}).get(task, {}).get(metric)
    return None if value is None else float(value)




def per_seed_rows(results: list, tasks) -> dict:
    """{row label: {seed: {task: {metric: value}}}}; single-task runs are merged per seed."""
    rows: dict[str, dict] = {}
    for result in results:
        label = run_label(result)
        seed = int(result.get("seed", 0))
        task_metrics = {t: dict(m) for t, m in (result.get("tasks") or {}).items() if isinstance(m, dict)}
        if label.startswith("single_task_"):
            task = label[len("single_task_"):]
            if task in task_metrics:
                rows.setdefault("single_task", {}).setdefault(seed, {})[task] = task_metrics[task]
            continue
        if label.startswith("grid_"):
            continue
        rows.setdefault(label, {})[seed] = task_metrics
    grid = [r for r in results if run_label(r).startswith("grid_")]
    best: dict[int, dict] = {}
    for r in grid:
        value = (r.get("monitor") or {}).get("value")
        if value is None:
            continue
        mode = (r.get("monitor") or {}).get("mode", "min")
        seed = int(r.get("seed", 0))
        current = best.get(seed)
        if current is None or (value < current["monitor"]["value"] if mode == "min" else value > current["monitor"]["value"]):
            best[seed] = r
    if best:
        rows["grid"] = {seed: r.get("tasks") or {} for seed, r in best.items()}
    return rows


def _single_task_baseline(rows: dict, tasks) -> dict | None:
    seeds = rows.get("single_task") or {}
    baseline = {}
    for task in tasks:
        metrics: dict[str, list] = {}
        for per_task in seeds.values():
            for metric, value in per_task.get(task, {}).items():
                metrics.setdefault(metric, []).append(float(value))
        if not metrics:
            return None
        baseline[task] = {m: float(np.mean(v)) for m, v in metrics.items()}
    return baseline


def _delta_m(task_metrics: dict, baseline: dict, benchmark: str):
    selected = DELTA_M_METRICS[benchmark]
    results, base, higher = {}, {}, {}
    for task, names in selected.items():
        for name in names:
            value = task_metrics.get(task, {}).get(name)
            reference = baseline.get(task, {}).get(name)
            if value is None or reference is None:
                return None
            results[f"{task}/{name}"] = float(value)
            base[f"{task}/{name}"] = float(reference)
            higher[f"{task}/{name}"] = METRIC_DIRECTIONS[name]
    return delta_m(results, base, higher)


def aggregate(results: list, benchmark: str, columns) -> dict:
    """{row label: {"cells": [(mean, std, n) or None per column], "delta_m": stats or None}}."""
    tasks = TASKS[benchmark]
    rows = per_seed_rows(results, tasks)
    baseline = _single_task_baseline(rows, tasks)
    out = {}
    for label, seeds in rows.items():
        cells = []
        for task, metric, _, scale, _ in columns:
            values = [per_seed.get(task, {}).get(metric) for per_seed in seeds.values()]
            cells.append(common.mean_std([None if v is None else scale * float(v) for v in values]))
        deltas = None
        if baseline is not None:
            deltas = common.mean_std([_delta_m(per_seed, baseline, benchmark) for per_seed in seeds.values()])
        out[label] = {"cells": cells, "delta_m": deltas}
    return out


def published_delta_m(published: dict, benchmark: str, columns) -> dict:
    """Delta_m of every published row against the published single-task row (empty without one)."""
    if "single_task" not in published:
        return {}

    def as_tasks(values):
        tasks: dict[str, dict] = {}
        for (task, metric, _, _, _), value in zip(columns, values):
            tasks.setdefault(task, {})[metric] = value
        return tasks

    baseline = as_tasks(published["single_task"])
    return {label: _delta_m(as_tasks(values), baseline, benchmark) for label, values in published.items()}


def grid_points(results: list, columns) -> list[tuple[list, dict]]:
    """[(weights, {(task, metric): displayed value})], the mean over seeds of every grid point."""
    points: dict[tuple, list] = {}
    for r in results:
        if run_label(r).startswith("grid_"):
            weights = tuple((r.get("config") or {}).get("balancer", {}).get("weights") or ())
            points.setdefault(weights, []).append(r)
    out = []
    for weights, group in points.items():
        values = {}
        for task, metric, _, scale, _ in columns:
            found = [_value(r, task, metric) for r in group]
            found = [scale * v for v in found if v is not None]
            if found:
                values[(task, metric)] = float(np.mean(found))
        out.append((list(weights), values))
    return out


# -- rendering -----------------------------------------------------------------------------


def _format(value, decimals):
    return "—" if value is None else f"{value:.{decimals}f}"


def _cell(stats, decimals) -> str:
    if stats is None:
        return "—"
    mean, std, n = stats
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}" if n > 1 else f"{mean:.{decimals}f}"


def _ordered_labels(paper_rows, rows):
    labels = [label for label, _ in paper_rows]
    return labels + sorted(label for label in rows if label not in labels)


def _renderer(benchmark, paper_rows, published: dict, columns):
    names = dict(paper_rows)
    published_deltas = published_delta_m(published, benchmark, columns)

    def render(results):
        rows = aggregate(results, benchmark, columns)
        header = ["Method"]
        for _, _, title, _, _ in columns:
            header += [f"{title} published", f"{title} ours"]
        header += ["Δm [%] published", "Δm [%] ours", "seeds"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label in _ordered_labels(paper_rows, rows):
            row = rows.get(label, {"cells": [None] * len(columns), "delta_m": None})
            pub = published.get(label, (None,) * len(columns))
            name = "Grid search (best validation point)" if label == "grid" else names.get(label, label)
            cells = [f"{name} (`{label}`)" if name != label else f"`{label}`"]
            for (_, _, _, _, decimals), value, stats in zip(columns, pub, row["cells"]):
                cells += [_format(value, decimals), _cell(stats, decimals)]
            n = max((s[2] for s in row["cells"] if s is not None), default=0)
            cells += [_format(published_deltas.get(label), 2), _cell(row["delta_m"], 2), str(n)]
            lines.append("| " + " | ".join(cells) + " |")
        notes = []
        if not any(label == "single_task" for label in rows):
            notes.append("Δm needs our single-task runs (method `single_task`).")
        return "\n".join(lines + ([""] + notes if notes else []))

    return render


def _figure_maker(benchmark, table_name: str, title: str, published: dict, paper_rows, columns, axes):
    names = dict(paper_rows)
    column_index = {(task, metric): i for i, (task, metric, _, _, _) in enumerate(columns)}

    def figures(results, out_dir: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = aggregate(results, benchmark, columns)
        labels = [label for label in _ordered_labels(paper_rows, rows) if label != "grid"]
        colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
        shapes = {label: common.MARKERS[i % len(common.MARKERS)] for i, label in enumerate(labels)}
        pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i + 1:]]
        fig, panels = plt.subplots(1, len(pairs), figsize=(max(5.2 * len(pairs), 8.0), 6.0), squeeze=False)
        points = grid_points(results, columns)
        for ax, (x_axis, y_axis) in zip(panels[0], pairs):
            xi, yi = column_index[x_axis[:2]], column_index[y_axis[:2]]
            x_perf, y_perf = x_axis[3], y_axis[3]
            grid_xy = [(x_perf(v[x_axis[:2]]), y_perf(v[y_axis[:2]])) for _, v in points
                       if x_axis[:2] in v and y_axis[:2] in v]
            if grid_xy:
                ax.plot(*zip(*grid_xy), "x", color="0.55", ms=5, label="grid search (static weights)", zorder=1)
            ours, published_points, bars = {}, {}, {}
            for label in labels:
                cells = rows.get(label, {}).get("cells")
                if cells and cells[xi] is not None and cells[yi] is not None:
                    (mx, sx, n), (my, sy, _) = cells[xi], cells[yi]
                    px, py = x_perf(mx), y_perf(my)
                    ours[label] = (px, py)
                    # Error bars map through the (monotone) performance transform.
                    bars[label] = (abs(x_perf(mx + sx) - px) if n > 1 else None,
                                   abs(y_perf(my + sy) - py) if n > 1 else None, n)
                pub = published.get(label)
                if pub is not None:
                    published_points[label] = (x_perf(pub[xi]), y_perf(pub[yi]))
            # Methods at the same point: concentric markers of different shapes and sizes.
            ours_style = common.marker_styles(ours, markers=shapes)
            published_style = common.marker_styles(published_points, markers=shapes, size=8.0)
            for label in labels:
                color = colors[label]
                if label in ours:
                    ex, ey, n = bars[label]
                    style = ours_style[label]
                    ax.errorbar(*ours[label], xerr=ex, yerr=ey, fmt=style["marker"], ms=style["ms"], mec="white",
                                mew=0.6, color=color, capsize=3, label=f"{names.get(label, label)} (ours, n={n})",
                                zorder=style["zorder"])
                if label in published_points:
                    style = published_style[label]
                    ax.plot(*published_points[label], marker=style["marker"], ms=style["ms"], mfc="none", mec=color,
                            mew=1.5, ls="none", label=f"{names.get(label, label)} (published)", zorder=2)
            ax.set_xlabel(x_axis[2])
            ax.set_ylabel(y_axis[2])
            ax.tick_params(axis="x", labelrotation=30)
            ax.grid(True, alpha=0.3)
        handles, legend_labels = {}, []
        for ax in panels[0]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = handle
                    legend_labels.append(label)
        fig.legend([handles[label] for label in legend_labels], legend_labels, fontsize=7, loc="lower center",
                   ncol=3, frameon=False)
        note = common.overrides_note(results)
        fig.suptitle(title + (f"\n{textwrap.fill(note, 120)}" if note else ""), fontsize=10,
                     color="firebrick" if note else "black")
        fig.tight_layout(rect=(0, 0.06 + 0.025 * math.ceil(len(legend_labels) / 3), 1, 0.95))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{table_name}_profile.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]

    return figures


# -- registration --------------------------------------------------------------------------

SENER_DEFAULT = ("single_task", "uniform", "uncertainty", "gradnorm", "mgda_ub")
LEE_SON_DEFAULT = ("ordinary", "uncertainty", "gradnorm", "split_only", "single_step", "mgda_ub", "single_task")

register(
    PaperTable(
        name="sener_table4",
        description=(
            "Sener & Koltun, Table 4 (and Figure 4): Cityscapes segmentation mIoU [%], instance error "
            "[px] and disparity error [px] on the official val images; dilated ResNet-50 with "
            "pyramid-pooling decoders, 256x512, last epoch"
        ),
        default_methods=SENER_DEFAULT,
        runs=_runs_for("cityscapes", "configs/cityscapes.py"),
        render=_renderer("cityscapes", SENER_ROWS, SENER_TABLE4, SENER_COLUMNS),
        figures=_figure_maker(
            "cityscapes", "sener_table4", "Cityscapes performance profile (Sener & Koltun Figure 4 layout)",
            SENER_TABLE4, SENER_ROWS, SENER_COLUMNS, SENER_PROFILE,
        ),
    )
)

register(
    PaperTable(
        name="lee_son_table2",
        description=(
            "Lee & Son, Table 2: MTAN's Cityscapes (128x256), 7-class segmentation mIoU and pixel accuracy "
            "[%], depth absolute and relative error; SegNet with one decoder per task, last epoch"
        ),
        default_methods=LEE_SON_DEFAULT,
        runs=_runs_for("cityscapes_segnet", "configs/cityscapes_segnet.py"),
        render=_renderer("cityscapes_segnet", LEE_SON_ROWS, LEE_SON_TABLE2, LEE_SON_TABLE2_COLUMNS),
        figures=_figure_maker(
            "cityscapes_segnet", "lee_son_table2", "Cityscapes (MTAN, SegNet) performance profile",
            LEE_SON_TABLE2, LEE_SON_ROWS, LEE_SON_TABLE2_COLUMNS,
            (SEGNET_PROFILE["segmentation"], SEGNET_PROFILE["depth"]),
        ),
    )
)

register(
    PaperTable(
        name="lee_son_table3",
        description=(
            "Lee & Son, Table 3: MTAN's NYUv2 (288x384), 13-class segmentation, depth and surface normals; "
            "SegNet with one decoder per task, last epoch"
        ),
        default_methods=LEE_SON_DEFAULT,
        runs=_runs_for("nyuv2_segnet", "configs/nyuv2.py"),
        render=_renderer("nyuv2_segnet", LEE_SON_ROWS, LEE_SON_TABLE3, LEE_SON_TABLE3_COLUMNS),
        figures=_figure_maker(
            "nyuv2_segnet", "lee_son_table3", "NYUv2 (MTAN, SegNet) performance profile",
            LEE_SON_TABLE3, LEE_SON_ROWS, LEE_SON_TABLE3_COLUMNS,
            (SEGNET_PROFILE["segmentation"], SEGNET_PROFILE["depth"], SEGNET_PROFILE["normal"]),
        ),
    )
)
