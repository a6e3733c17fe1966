"""The simplex grid of the static-weights baseline (Sener & Koltun's grid search).

`simplex_grid` makes the weight vectors; each point is one `static` run under
`<workdir>/points/<grid_point_key(weights)>/` (`mtl_tf.training.trainer`), and the
paper tables name their grid runs by the same key (`mtl_tf.reports`).
"""

from __future__ import annotations

import itertools
from fractions import Fraction


def simplex_grid(num_tasks: int, divisions: int = 10, include_vertices: bool = False, total: float = 1.0):
    """Weight vectors c with c_t in {0, 1/d, ..., 1} * total and sum_t c_t = total.

    `include_vertices=False` drops the points with a zero weight (a task with
    weight 0 is never trained). Ordered lexicographically, first task's weight
    descending.
    """
    if num_tasks < 1 or divisions < 1:
        raise ValueError(f"simplex_grid needs num_tasks >= 1 and divisions >= 1; got {num_tasks}, {divisions}")
    points = []
    for parts in itertools.product(range(divisions, -1, -1), repeat=num_tasks - 1):
        last = divisions - sum(parts)
        if last < 0:
            continue
        counts = (*parts, last)
        if not include_vertices and min(counts) == 0:
            continue
        points.append(tuple(float(Fraction(c, divisions) * Fraction(str(total))) for c in counts))
    if not points:
        raise ValueError(
            f"the grid with {divisions} divisions for {num_tasks} tasks has no point without a zero weight; "
            "use more divisions or include_vertices=True"
        )
    return points


def grid_point_key(weights) -> str:
    """The directory name of a grid point: (0.1, 0.9) -> "w0.1_0.9"."""
    return "w" + "_".join(f"{w:.3f}".rstrip("0").rstrip(".") for w in weights)
