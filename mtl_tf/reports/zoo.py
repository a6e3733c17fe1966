"""Every method on one digit benchmark at one equal budget: the method-zoo table.

  python launch/reproduce.py --table=method_zoo_multi_fashion --root=runs/method_zoo_multi_fashion

Protocol: Lee & Son's multi-fashion set-up (`configs/multi_fashion.py:pareto`:
120k/10k/10k composites, the Pareto-MTL LeNet, the official recipe: raw pixels,
SGD 1e-3 with momentum 0.9, batch 256), cut to `ZOO_EPOCHS` = 10 epochs for every
method (the learning rate is not halved within them: the first halving is after
epoch 15), each method with its own defaults. Test accuracy [%] at the best
validation epoch.

The budget is equal in epochs (4,690 updates), not in time or in the size of the
update: a method whose update is the sum of the task gradients (`ordinary`,
`pcgrad`, ...) steps about T times further per update than one whose update is
their mean or a point of their convex hull (`uniform`, `mgda`, ...). After 10
epochs at this rate no method has converged (the 100-epoch `ordinary` gains 5
points more), so the table ranks early progress, in which the update's scale
counts as much as its direction. The `sum of weights` column hints at it: the sum
of the logged task weights in the last epoch, which is the update's scale where
the weights are the coefficients of the task gradients (2 for the sum of the two
losses, 1 for their mean or a convex combination; PCGrad, GradVac, Aligned-MTL,
CAGrad, IMTL, Nash-MTL and FairGrad log such coefficients). It is not one for
GradDrop (the kept fraction of each gradient), DB-MTL (factors of normalised
log-loss gradients) or Uncertainty (1/(2 sigma^2)); each method's docstring says
what it logs.

Columns: test accuracy of task 1 and task 2, their mean, the best validation epoch,
the sum of weights, and the wall time per epoch (seconds; the machine and its load
are the reader's to state: this column is not a speed claim, `launch/benchmark.py`
makes those). Rows: the two papers' methods first, then the gradient methods, then
loss weighting; `static` is left out (with the default weights it is `ordinary`)
and `pareto_mtl` runs at its equal preference.
"""

from __future__ import annotations

import math

from mtl_tf import balancers
from mtl_tf.reports import common, digits
from mtl_tf.reports.registry import PaperTable, Run, register

ZOO_EPOCHS = 10
CONFIG = "configs/multi_fashion.py:pareto"

PAPERS = ("ordinary", "uniform", "uncertainty", "gradnorm", "pareto_mtl", "mgda", "mgda_ub", "split_only",
          "single_step")
GRADIENT = ("pcgrad", "graddrop", "gradvac", "cagrad", "imtl", "nash_mtl", "aligned_mtl", "moco", "upgrad",
            "dualproj", "fairgrad", "db_mtl")
LOSS_WEIGHTING = ("dwa", "rlw", "gls", "famo", "stch")
LEFT_OUT = ("static",)


def default_methods() -> tuple:
    """The known groups in order, then any registered method they do not name."""
    known = PAPERS + GRADIENT + LOSS_WEIGHTING
    rest = tuple(m for m in balancers.available() if m not in known and m not in LEFT_OUT)
    return known + rest


def _runs(methods, seeds):
    out = []
    for method in methods:
        for label, overrides in digits.expand_method(method):
            for seed in seeds:
                out.append(Run(key=f"{label}-seed{seed}", config=CONFIG,
                               overrides={**overrides, "epochs": ZOO_EPOCHS, "seed": int(seed)}))
    return out


def _last_epoch(result: dict) -> dict:
    history = result.get("history") or []
    return history[-1] if history else {}


def weight_sum(result: dict) -> float | None:
    """Sum of the logged task weights in the last epoch, or None when a task's weight is not logged."""
    last = _last_epoch(result)
    values = [last.get(f"{t}_weight") for t in digits.TASKS]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def seconds_per_epoch(result: dict) -> float | None:
    wall, epochs = result.get("wall_time_s"), result.get("epochs_trained")
    return float(wall) / epochs if wall and epochs else None


def _group(label: str) -> str:
    if label in PAPERS:
        return "papers' methods"
    if label in GRADIENT:
        return "gradient"
    if label in LOSS_WEIGHTING:
        return "loss weighting"
    return "other"


def _number(value, digits_=2) -> str:
    return "—" if value is None else f"{value:.{digits_}f}"


def render(results) -> str:
    by_label: dict[str, list] = {}
    for result in results:
        by_label.setdefault(digits.run_label(result), []).append(result)
    order = [m for m in default_methods() if m in by_label] + sorted(m for m in by_label if m not in default_methods())
    lines = [
        "| method | group | task 1 | task 2 | mean | best epoch | sum of weights | s / epoch | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in order:
        group = by_label[label]
        per_run = [[digits._accuracy(r, t) for t in digits.TASKS] for r in group]
        acc = [common.mean_std([run[i] for run in per_run]) for i in range(len(digits.TASKS))]
        mean = common.mean_std([sum(run) / len(run) for run in per_run if None not in run])
        epochs = [r.get("best_epoch") for r in group if r.get("best_epoch") is not None]
        scale = common.mean_std([weight_sum(r) for r in group])
        seconds = common.mean_std([seconds_per_epoch(r) for r in group])
        lines.append(
            f"| `{label}` | {_group(label)} | {digits._cell(acc[0])} | {digits._cell(acc[1])} | {digits._cell(mean)} | "
            f"{','.join(str(e) for e in epochs) or '—'} | {_number(scale and scale[0])} | "
            f"{_number(seconds and seconds[0], 1)} | {len(group)} |"
        )
    return "\n".join(lines)


register(
    PaperTable(
        name="method_zoo_multi_fashion",
        description=(
            f"Every method at one equal budget: multi-fashion, Lee & Son's protocol cut to {ZOO_EPOCHS} epochs "
            "(official recipe: SGD 1e-3, momentum 0.9, batch 256), test accuracy [%] at the best validation epoch"
        ),
        default_methods=default_methods(),
        runs=_runs,
        render=render,
    )
)
