"""Digit tables (Lee & Son Table 1 columns, Sener Table 3): runs, aggregation by hand, rendering, figure.

Results are written the way the trainer writes them (test accuracies as
fractions, the validation monitor, the static weights in the config), so the
report is checked without training anything; tests/launch/test_reproduce.py
trains a tiny table end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtl_tf import reports
from mtl_tf.reports import digits, runner
from mtl_tf.training.grid import grid_point_key, simplex_grid


def _result(key, seed, left, right, monitor=None, weights=None):
    result = {
        "run_key": key,
        "method": key.rsplit("-seed", 1)[0],
        "seed": seed,
        "tasks": {"left": {"accuracy": left, "loss": 0.5}, "right": {"accuracy": right, "loss": 0.6}},
        "monitor": {"name": "val_monitor", "value": monitor if monitor is not None else (left + right) / 2},
    }
    if weights is not None:
        result["config"] = {"balancer": {"weights": list(weights)}}
    return result


def test_every_column_and_sener_table3_are_registered():
    names = reports.available()
    for name in ("lee_son_table1_multi_fashion", "lee_son_table1_multi_mnist",
                 "lee_son_table1_multi_fashion_mnist", "sener_table3", "sener_table3_multi_fashion"):
        assert name in names
    # Lee & Son's multi-fashion column as printed in their Table 1.
    assert digits.LEE_SON_TABLE1["multi_fashion"]["single_step"] == (82.41, 81.78)
    assert digits.LEE_SON_TABLE1["multi_fashion"]["ordinary"] == (81.97, 81.25)


def test_method_names_expand_to_the_runs_the_papers_describe():
    paper = reports.get("lee_son_table1_multi_fashion")
    runs = {r.key: r for r in paper.runs(["ordinary", "mgda_ub", "pareto_mtl_task1", "pareto_mtl_task2",
                                           "single_task", "grid4"], [0, 2])}
    assert runs["ordinary-seed2"].overrides == {"method": "static", "balancer.weights": (1.0, 1.0), "seed": 2}
    assert runs["mgda_ub-seed0"].config == "configs/multi_fashion.py:pareto"
    # Lin et al.'s u_4 = (0, 1) favours task 1, u_0 = (1, 0) task 2 (see the module docstring).
    assert runs["pareto_mtl_task1-seed0"].overrides["balancer.preference_index"] == digits.PARETO_PREFERENCES - 1
    assert runs["pareto_mtl_task2-seed0"].overrides["balancer.preference_index"] == 0
    assert runs["single_task_right-seed0"].overrides["single_task.task"] == "right"
    grid = [k for k in runs if k.startswith("grid_")]
    assert len(grid) == 2 * 3  # 0.75/0.25, 0.5/0.5, 0.25/0.75 for two seeds
    assert runs[f"grid_{grid_point_key((0.75, 0.25))}-seed2"].overrides["balancer.weights"] == (0.75, 0.25)
    assert reports.get("sener_table3").runs(["uniform"], [1])[0].config == "configs/multi_mnist.py:sener"
    with pytest.raises(ValueError, match="unknown method 'sgd'"):
        paper.runs(["sgd"], [0])


def test_aggregation_by_hand():
    results = [
        _result("single_step-seed0", 0, 0.80, 0.70),
        _result("single_step-seed1", 1, 0.84, 0.74),
        _result("single_step-seed2", 2, 0.82, 0.75),
        _result("uniform-seed0", 0, 0.75, 0.76),
        # single task: each run counts for its own task only
        _result("single_task_left-seed0", 0, 0.90, 0.10),
        _result("single_task_right-seed0", 0, 0.10, 0.88),
        _result("single_task_right-seed1", 1, 0.05, 0.86),
    ]
    # grid: per seed, the point with the best validation monitor (not the best test accuracy).
    for seed, best in ((0, (0.7, 0.3)), (1, (0.3, 0.7))):
        for weights in simplex_grid(2, 10):
            key = f"grid_{grid_point_key(weights)}-seed{seed}"
            chosen = tuple(weights) == pytest.approx(best)
            results.append(_result(key, seed, 0.60 + 0.01 * seed + (0.1 if chosen else 0.0),
                                   0.99 if not chosen else 0.65, monitor=0.9 if chosen else 0.5, weights=weights))
    rows = digits.aggregate(results)

    mean, std, n = rows["single_step"][0]
    assert n == 3 and mean == pytest.approx(82.0) and std == pytest.approx(np.std([80, 84, 82], ddof=1))
    assert rows["single_step"][1][0] == pytest.approx(73.0)
    assert rows["uniform"] == ((pytest.approx(75.0), 0.0, 1), (pytest.approx(76.0), 0.0, 1))
    assert rows["single_task"][0] == (pytest.approx(90.0), 0.0, 1)
    assert rows["single_task"][1][:2] == (pytest.approx(87.0), pytest.approx(np.std([88, 86], ddof=1)))
    assert rows["grid"][0][0] == pytest.approx(np.mean([70.0, 71.0]))
    assert rows["grid"][1] == (pytest.approx(65.0), pytest.approx(0.0), 2)
    assert not any(label.startswith(("grid_", "single_task_")) for label in rows)

    points = digits.grid_points(results)
    assert len(points) == 9
    best = [p for p in points if p[0] == pytest.approx([0.7, 0.3])][0]
    assert best[1] == pytest.approx(np.mean([70.0, 61.0])) and best[2] == pytest.approx(np.mean([65.0, 99.0]))


def test_render_puts_ours_beside_the_published_in_the_papers_row_order():
    results = [
        _result("single_step-seed0", 0, 0.7162, 0.7242),
        _result("single_step-seed1", 1, 0.7262, 0.7342),
        _result("mgda_ub-seed0", 0, 0.6884, 0.6931),
    ]
    text = reports.get("lee_son_table1_multi_fashion").render(results)
    lines = text.splitlines()
    assert lines[0].startswith("| Method | Published task 1 | Published task 2 | Ours task 1 | Ours task 2 |")
    assert "| Proposed (single gradient step) (`single_step`) | 82.41 | 81.78 | 72.12 ± 0.71 | 72.92 ± 0.71 | 2 |" in lines
    assert "| Ordinary (`ordinary`) | 81.97 | 81.25 | — | — | 0 |" in lines
    # A method the paper does not report comes after the paper's rows, without a published number.
    assert lines[-1] == "| `mgda_ub` | — | — | 68.84 | 69.31 | 1 |"
    paper_order = [line.split(" (`")[0].lstrip("| ") for line in lines[2:-1]]
    assert paper_order == [name for _, name in digits.LEE_SON_ROWS]


def test_profile_figure_is_a_png(tmp_path):
    results = [_result("uniform-seed0", 0, 0.75, 0.76), _result("single_step-seed0", 0, 0.78, 0.77)]
    results += [_result(f"grid_{grid_point_key(w)}-seed0", 0, 0.6 + 0.2 * w[0], 0.8 - 0.2 * w[0], weights=w)
                for w in simplex_grid(2, 4)]
    paths = reports.get("lee_son_table1_multi_fashion").figures(results, tmp_path)
    assert [p.name for p in paths] == ["lee_son_table1_multi_fashion_profile.png"]
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and min(image.size) > 300


def test_reproduce_renders_finished_runs_without_training(tmp_path):
    for key, seed, left, right in (("uniform-seed0", 0, 0.75, 0.76), ("single_step-seed0", 0, 0.78, 0.77)):
        (tmp_path / key).mkdir()
        result = _result(key, seed, left, right)
        del result["run_key"]
        (tmp_path / key / "results.json").write_text(json.dumps(result))
    outcome = runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["uniform", "single_step"],
                               seeds=[0], log=lambda *_: None)
    assert outcome["trained"] == [] and len(outcome["skipped"]) == 2
    assert "| 82.41 | 81.78 | 78.00 | 77.00 | 1 |" in outcome["markdown"]
    assert outcome["table_path"].exists() and [p.name for p in outcome["figures"]] == [
        "lee_son_table1_multi_fashion_profile.png"
    ]


# -- Lee & Son, Figure 3 -----------------------------------------------------------------

# Three epochs of a two-task single_step run, as the trainer's history holds them.
FIG3_SHARED = {"left": [2.0, 1.2, 0.9], "right": [1.0, 0.8, 0.6]}
FIG3_INNER = {"left": [1.5, 1.0, 0.7], "right": [1.5, 1.0, 0.8]}


def _history(inner=True):
    history = []
    for e in range(3):
        entry = {"epoch": e + 1, "loss": FIG3_SHARED["left"][e] + FIG3_SHARED["right"][e]}
        for t in ("left", "right"):
            entry[f"{t}_loss"] = FIG3_SHARED[t][e]
            entry[f"{t}_weight"] = 1.0
            entry[f"val_{t}_loss"] = 9.0  # validation losses must not be read as either curve
            if inner:
                entry[f"{t}_inner_loss"] = FIG3_INNER[t][e]
        history.append(entry)
    return history


def _write_run(root, key, seed, inner=True, method="single_step"):
    result = _result(key, seed, 0.8, 0.7)
    del result["run_key"]
    result.update(method=method, benchmark="multi_fashion", history=_history(inner))
    (root / key).mkdir(parents=True)
    (root / key / "results.json").write_text(json.dumps(result))
    return root / key


def test_fig3_draws_the_logged_losses_of_one_run(tmp_path):
    workdir = _write_run(tmp_path, "single_step-seed0", 0)
    curves = digits.fig3_curves(json.loads((workdir / "results.json").read_text()))
    assert list(curves["tasks"]) == ["left", "right"]
    np.testing.assert_array_equal(curves["epochs"], [1, 2, 3])
    for t in ("left", "right"):
        np.testing.assert_array_equal(curves["tasks"][t]["shared"], FIG3_SHARED[t])
        np.testing.assert_array_equal(curves["tasks"][t]["inner"], FIG3_INNER[t])
    # The paper's quantity: task 1's share of the summed loss, by hand.
    np.testing.assert_allclose(curves["ratio"]["shared"], [2.0 / 3.0, 1.2 / 2.0, 0.9 / 1.5])
    np.testing.assert_allclose(curves["ratio"]["inner"], [0.5, 0.5, 0.7 / 1.5])

    png = tmp_path / "fig3.png"
    assert digits.draw_fig3(workdir, png) == png
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 300

    title = digits.fig3_title({"method": "single_step", "seed": 0}, workdir)
    assert "single_step, seed 0" in title and str(workdir) in title and "this project's measurement" in title


def test_fig3_refuses_a_run_without_inner_losses(tmp_path):
    workdir = _write_run(tmp_path, "split_only-seed0", 0, inner=False, method="split_only")
    assert digits.fig3_curves(json.loads((workdir / "results.json").read_text())) is None
    with pytest.raises(ValueError, match="_inner_loss"):
        digits.draw_fig3(workdir, tmp_path / "fig3.png")
    assert not (tmp_path / "fig3.png").exists()


def test_the_table_report_draws_fig3_for_every_single_step_run(tmp_path, capsys):
    _write_run(tmp_path, "single_step-seed0", 0)
    _write_run(tmp_path, "single_step-seed1", 1, inner=False)  # e.g. trained before the balancer logged them
    _write_run(tmp_path, "uniform-seed0", 0, method="uniform")  # inner losses of another method are not drawn
    _write_run(tmp_path, "uniform-seed1", 1, inner=False, method="uniform")
    # Every run is finished, and dry_run makes sure a missing one would not be trained here.
    outcome = runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["uniform", "single_step"],
                               seeds=[0, 1], dry_run=True, log=lambda *_: None)
    assert outcome["trained"] == [] and len(outcome["skipped"]) == 4
    assert [p.name for p in outcome["figures"]] == [
        "lee_son_table1_multi_fashion_profile.png",
        "lee_son_table1_multi_fashion_fig3_single_step-seed0.png",
    ]
    assert outcome["figures"][1].parent == tmp_path
    with Image.open(outcome["figures"][1]) as image:
        assert image.format == "PNG"
    note = capsys.readouterr().out
    assert "single_step-seed1" in note and "_inner_loss" in note and "single_step-seed0" not in note
