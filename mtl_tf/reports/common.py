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


# -- runs that are not the paper's protocol ------------------------------------------------

# Fields that say where the data is, not what the run is.
NOT_PROTOCOL = ("data.data_dir",)
PROTOCOL_OVERRIDES = "protocol_overrides"  # the key `runner.run_table` adds to each loaded result


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def protocol_differences(config: dict, protocol: dict) -> dict:
    """{field: the run's value} where a run's config (results.json `config`) differs from its protocol's.

    Both are JSON-ready dicts (`config_to_dict`). Fields only one side has (a config
    saved before a field existed) and `NOT_PROTOCOL` fields are not differences.
    """
    ours, theirs = flatten(config), flatten(protocol)
    return {k: ours[k] for k in ours if k in theirs and k not in NOT_PROTOCOL and ours[k] != theirs[k]}


def _value_text(value) -> str:
    return repr(tuple(value)) if isinstance(value, list) else (value if isinstance(value, str) else repr(value))


def overrides_note(results) -> str:
    """"" when every run follows its table's protocol, else one line naming each overridden field.

    Reads the `protocol_overrides` that `runner.run_table` adds to each result; a field
    that only some runs override says how many.
    """
    values: dict[str, list] = {}
    for result in results:
        for field, value in (result.get(PROTOCOL_OVERRIDES) or {}).items():
            values.setdefault(field, []).append(_value_text(value))
    if not values:
        return ""
    parts = []
    for field, texts in values.items():
        distinct = list(dict.fromkeys(texts))
        text = f"{field}={'|'.join(distinct)}"
        if len(texts) < len(results):
            text += f" ({len(texts)} of {len(results)} runs)"
        parts.append(text)
    return "NOT the paper protocol: config overrides " + ", ".join(parts)


# -- profile figures: every method visible -----------------------------------------------

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">", "p")


def marker_styles(points: dict, *, markers: dict | None = None, size: float = 7.0, step: float = 3.5,
                  tolerance: float = 0.015) -> dict:
    """{label: {"marker", "ms", "zorder"}} so that methods at (nearly) the same point all stay visible.

    `points` is {label: (x, y)} in drawing order. Every label gets its own marker shape
    (`markers[label]` when given, else the next of `MARKERS`);
    labels whose points are within `tolerance` of the axes' spans of each other form a
    group, drawn as concentric markers: the first largest and lowest, each next one
    `step` points smaller and on top (a lone point keeps `size`).
    """
    labels = list(points)
    xy = np.array([points[label] for label in labels], dtype=float).reshape(-1, 2)
    span = np.ptp(xy, axis=0) if len(labels) > 1 else np.ones(2)
    span = np.where(span > 0, span, 1.0)
    group_of: dict[str, int] = {}
    groups: list[list[str]] = []
    for i, label in enumerate(labels):
        for j in range(i):
            if np.all(np.abs(xy[i] - xy[j]) <= tolerance * span):
                group = group_of[labels[j]]
                break
        else:
            group = len(groups)
            groups.append([])
        group_of[label] = group
        groups[group].append(label)
    styles = {}
    for i, label in enumerate(labels):
        members = groups[group_of[label]]
        rank = members.index(label)
        marker = (markers or {}).get(label, MARKERS[i % len(MARKERS)])
        styles[label] = {"marker": marker, "ms": size + step * (len(members) - 1 - rank),
                         "zorder": 3 + rank}
    return styles
