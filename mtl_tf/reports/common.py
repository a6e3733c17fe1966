"""Pieces every paper table shares: method labels to runs, and mean +- std over seeds."""

from __future__ import annotations

import numpy as np

from mtl_tf import balancers
from mtl_tf.training.grid import grid_point_key, simplex_grid

GRID_DIVISIONS = 10


def grid_divisions(label: str) -> int | None:
    """`grid` -> the default divisions, `gridN` -> N (N >= 2), anything else -> None."""
    if label == "grid":
        return GRID_DIVISIONS
    if label.startswith("grid") and label[4:].isdigit() and int(label[4:]) >= 2:
        return int(label[4:])
    return None


def expand_shared_method(label: str, tasks) -> list[tuple[str, dict]] | None:
    """The runs of a method label every multi-task table knows, or None for other labels.

    `ordinary` is Lee & Son's plain sum of the losses (static weights of 1),
    `single_task` one run per task, `grid` / `gridN` one static run per point of
    the simplex grid, and any balancer name a run of that balancer.
    """
    if label == "ordinary":
        return [(label, {"method": "static", "balancer.weights": tuple(1.0 for _ in tasks)})]
    if label == "single_task":
        return [(f"single_task_{t}", {"method": "single_task", "single_task.task": t}) for t in tasks]
    divisions = grid_divisions(label)
    if divisions is not None:
        return [
            (f"grid_{grid_point_key(w)}", {"method": "static", "balancer.weights": tuple(w)})
            for w in simplex_grid(len(tasks), divisions)
        ]
    if label in balancers.available():
        return [(label, {"method": label})]
    return None


def mean_std(values):
    """(mean, sample std, n) of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std, len(values)
