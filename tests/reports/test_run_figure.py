"""mtl_tf.reports.run_figure and launch/plot_run.py: one run's weights, losses and validation metrics per epoch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl_tf.reports import run_figure

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def result():
    """A results.json as launch/train.py writes it, for two tasks (one of them named like the other's prefix)."""
    history = []
    for epoch, (w, acc) in enumerate([(0.3, 0.5), (0.4, 0.6), (0.45, 0.7)], start=1):
        history.append({
            "epoch": epoch, "loss": 1.0, "seg_loss": 2.0 / epoch, "seg_depth_loss": 1.0 / epoch,
            "seg_weight": w, "seg_depth_weight": 1 - w, "seg_accuracy": acc, "learning_rate": 0.1,
            "val_loss": 1.5, "val_seg_loss": 2.5 / epoch, "val_seg_depth_loss": 1.5 / epoch,
            "val_seg_accuracy": acc - 0.1, "val_seg_depth_abs_err": 0.1 * epoch, "val_monitor": acc - 0.1,
        })
    return {"method": "mgda_ub", "benchmark": "toy", "seed": 2, "best_epoch": 3, "history": history,
            "tasks": {"seg": {"accuracy": 0.6}, "seg_depth": {"abs_err": 0.3}}}


def test_curves_come_from_the_history():
    curves = run_figure.run_curves(result())
    np.testing.assert_array_equal(curves["epochs"], [1, 2, 3])
    assert curves["tasks"] == ["seg", "seg_depth"] and curves["best_epoch"] == 3
    np.testing.assert_allclose(curves["weights"]["seg"], [0.3, 0.4, 0.45])
    np.testing.assert_allclose(curves["weights"]["seg_depth"], [0.7, 0.6, 0.55])
    np.testing.assert_allclose(curves["train_loss"]["seg_depth"], [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(curves["val_loss"]["seg"], [2.5, 1.25, 2.5 / 3])
    assert sorted(curves["val_metrics"]) == ["abs_err", "accuracy"]
    assert list(curves["val_metrics"]["accuracy"]) == ["seg"] and list(curves["val_metrics"]["abs_err"]) == ["seg_depth"]
    np.testing.assert_allclose(curves["val_metrics"]["accuracy"]["seg"], [0.4, 0.5, 0.6])
    with pytest.raises(ValueError, match="no per-epoch 'history'"):
        run_figure.run_curves({"method": "uniform", "tasks": {}})


def test_the_weights_are_the_epoch_means_where_the_history_has_them():
    """`{task}_weight_mean` (the mean over the epoch's steps) when logged; else the last step's `{task}_weight`."""
    last = run_figure.run_curves(result())
    assert last["weight_log"] == "_weight"
    assert run_figure.WEIGHT_TITLES["_weight"] == "task weights at the last step of each epoch"
    with_means = result()
    for entry in with_means["history"]:
        entry.update(seg_weight_mean=entry["seg_weight"] - 0.05, seg_depth_weight_mean=entry["seg_depth_weight"] + 0.05)
    curves = run_figure.run_curves(with_means)
    assert curves["weight_log"] == "_weight_mean"
    assert run_figure.WEIGHT_TITLES["_weight_mean"] == "task weights, mean over each epoch"
    np.testing.assert_allclose(curves["weights"]["seg"], [0.25, 0.35, 0.4])
    np.testing.assert_allclose(curves["weights"]["seg_depth"], [0.75, 0.65, 0.6])
    assert "weight_mean" not in curves["val_metrics"]


def test_draw_writes_a_png_beside_the_results_and_a_grid_draws_its_selected_point(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(result()))
    assert run_figure.draw_run(tmp_path / "run") == tmp_path / "run" / "run.png"
    assert (tmp_path / "run" / "run.png").read_bytes()[:8] == PNG
    grid = {"method": "grid", "selected": {"workdir": str(tmp_path / "run"), "weights": [0.5, 0.5]}, "tasks": {}}
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "results.json").write_text(json.dumps(grid))
    loaded, workdir = run_figure.load_result(tmp_path / "grid")
    assert workdir == tmp_path / "run" and loaded["method"] == "mgda_ub"
    with pytest.raises(FileNotFoundError, match="results.json not found"):
        run_figure.draw_run(tmp_path / "nothing")


def test_plot_run_script(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(result()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run([sys.executable, str(REPO / "launch" / "plot_run.py"), f"--workdir={tmp_path}",
                                f"--out={tmp_path / 'fig.png'}"], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"figure: {tmp_path / 'fig.png'}" in completed.stdout
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG
    missing = subprocess.run([sys.executable, str(REPO / "launch" / "plot_run.py"), f"--workdir={tmp_path / 'none'}"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "results.json not found" in missing.stderr
