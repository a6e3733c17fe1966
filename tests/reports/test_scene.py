"""Paper tables of the scene benchmarks: runs, rendering against hand-computed cells, figures."""

import numpy as np
import pytest

from mtl_tf import reports
from mtl_tf.reports import scene


def _result(benchmark, label, seed, tasks, **extra):
    return {"run_key": f"{benchmark}-{label}-seed{seed}", "seed": seed, "tasks": tasks, **extra}


def _cityscapes(miou, inst, disp):
    return {"segmentation": {"miou": miou, "pixel_accuracy": 0.9, "loss": 1.0},
            "instance": {"offset_l1": inst, "offset_mse": inst**2, "loss": inst},
            "disparity": {"abs_error": disp, "loss": disp}}


@pytest.fixture
def sener_results():
    results = [
        _result("cityscapes", "uniform", 0, _cityscapes(0.50, 10.0, 3.0)),
        _result("cityscapes", "uniform", 1, _cityscapes(0.54, 12.0, 2.0)),
        _result("cityscapes", "mgda_ub", 0, _cityscapes(0.60, 9.0, 2.5)),
    ]
    single = {"segmentation": 0.55, "instance": 11.0, "disparity": 2.75}
    full = _cityscapes(single["segmentation"], single["instance"], single["disparity"])
    for task in single:
        results.append(_result("cityscapes", f"single_task_{task}", 0, {task: full[task]}))
    for weights, miou in (((0.5, 0.25, 0.25), 0.45), ((0.25, 0.5, 0.25), 0.40)):
        results.append(_result("cityscapes", f"grid_w{weights[0]}", 0, _cityscapes(miou, 11.0, 3.0),
                               config={"balancer": {"weights": list(weights)}}, monitor={"value": None, "mode": "min"}))
    return results


def test_tables_are_registered():
    assert {"sener_table4", "lee_son_table2", "lee_son_table3"} <= set(reports.available())
    table = reports.get("sener_table4")
    assert table.default_methods == scene.SENER_DEFAULT


def test_runs_expand_methods_per_seed():
    runs = reports.get("lee_son_table3").runs(["ordinary", "single_task", "mgda_ub", "grid3"], [0, 1])
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys)) == 2 * (1 + 3 + 1 + 1)
    by_key = {r.key: r for r in runs}
    assert by_key["nyuv2_segnet-ordinary-seed1"].overrides == {
        "method": "static", "balancer.weights": (1.0, 1.0, 1.0), "seed": 1}
    assert by_key["nyuv2_segnet-single_task_normal-seed0"].overrides == {
        "method": "single_task", "single_task.task": "normal", "seed": 0}
    grid = [r for r in runs if "grid" in r.key]
    assert len(grid) == 2 and grid[0].overrides["balancer.weights"] == pytest.approx((1 / 3,) * 3)
    assert all(r.config == "configs/nyuv2.py" for r in runs)
    assert reports.get("sener_table4").runs(["uniform"], [0])[0].config == "configs/cityscapes.py"
    assert reports.get("lee_son_table2").runs(["ordinary"], [0])[0].overrides["balancer.weights"] == (1.0, 1.0)
    with pytest.raises(ValueError, match="not implemented"):
        reports.get("lee_son_table2").runs(["mtan"], [0])
    with pytest.raises(ValueError, match="unknown method"):
        reports.get("lee_son_table2").runs(["bogus"], [0])


def test_render_cells_and_delta_m_by_hand(sener_results):
    markdown = reports.get("sener_table4").render(sener_results)
    lines = {line.split(" | ")[0]: line for line in markdown.splitlines() if line.startswith("| ")}
    uniform = lines["| Uniform scaling (`uniform`)"].split(" | ")
    # mIoU: mean of 50 and 54 = 52.00, sample std 2.83; published 54.59.
    assert uniform[1:3] == ["54.59", "52.00 ± 2.83"]
    assert uniform[3:5] == ["10.38", "11.00 ± 1.41"] and uniform[5:7] == ["2.96", "2.50 ± 0.71"]
    # Delta_m per seed against the single-task run (0.55, 11, 2.75), then mean +- std.
    def dm(miou, inst, disp):
        return 100 * np.mean([-(miou - 0.55) / 0.55, (inst - 11.0) / 11.0, (disp - 2.75) / 2.75])

    seeds = [dm(0.50, 10.0, 3.0), dm(0.54, 12.0, 2.0)]
    assert uniform[8] == f"{np.mean(seeds):.2f} ± {np.std(seeds, ddof=1):.2f}"
    # Published Delta_m from the published rows: Uniform vs Single task (60.68, 11.34, 2.78).
    published = 100 * np.mean([-(54.59 - 60.68) / 60.68, (10.38 - 11.34) / 11.34, (2.96 - 2.78) / 2.78])
    assert uniform[7] == f"{published:.2f}" and uniform[9] == "2 |"
    single = lines["| Single task (`single_task`)"].split(" | ")
    assert single[1:3] == ["60.68", "55.00"] and single[8] == "0.00"
    mgda = lines["| Ours w/o approximation (MGDA, Table 2) (`mgda`)"].split(" | ")
    assert mgda[1:3] == ["66.13", "—"]  # published only
    assert "grid" not in lines  # no validation monitor, so no best grid point


def test_lee_son_tables_show_published_numbers_and_note_missing_single_task():
    markdown = reports.get("lee_son_table3").render([
        _result("nyuv2_segnet", "single_step", 0, {
            "segmentation": {"miou": 0.2, "pixel_accuracy": 0.56},
            "depth": {"abs_error": 0.6, "rel_error": 0.25},
            "normal": {"angle_mean": 30.0, "angle_median": 25.0, "within_11.25": 0.24, "within_22.5": 0.46,
                       "within_30": 0.58},
        }),
    ])
    row = next(line for line in markdown.splitlines() if "`single_step`" in line).split(" | ")
    assert row[1:3] == ["19.49", "20.00"] and row[5:7] == ["0.6028", "0.6000"]
    assert row[17:19] == ["57.72", "58.00"]
    assert "Δm needs our single-task runs" in markdown
    assert "| MTAN (equal weights; published only) (`mtan`) | 17.72 | — |" in markdown


def test_figures_are_written(sener_results, tmp_path):
    paths = reports.get("sener_table4").figures(sener_results, tmp_path)
    assert [p.name for p in paths] == ["sener_table4_profile.png"]
    data = paths[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    points = scene.grid_points(sener_results, scene.SENER_COLUMNS)
    assert sorted(round(v[("segmentation", "miou")], 6) for _, v in points) == [40.0, 45.0]
    paths = reports.get("lee_son_table2").figures([], tmp_path)
    assert paths[0].exists()
