"""The simplex grid of the static-weights baseline (mtl_tf.training.grid)."""

import pytest

from mtl_tf.training import grid


def test_simplex_grid_points():
    assert grid.simplex_grid(2, 4) == [(0.75, 0.25), (0.5, 0.5), (0.25, 0.75)]
    assert grid.simplex_grid(2, 2, include_vertices=True) == [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    assert grid.simplex_grid(2, 2, total=2.0) == [(1.0, 1.0)]
    three = grid.simplex_grid(3, 4)
    assert sorted(three) == sorted([(0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (0.25, 0.25, 0.5)])
    assert len(grid.simplex_grid(3, 10, include_vertices=True)) == 66  # C(12, 2)
    assert all(sum(p) == pytest.approx(1.0) for p in grid.simplex_grid(3, 10))
    with pytest.raises(ValueError, match="no point without a zero weight"):
        grid.simplex_grid(3, 2)
    assert grid.grid_point_key((0.1, 0.9)) == "w0.1_0.9"
