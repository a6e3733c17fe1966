"""launch/train.py and the trainer behind it (mtl_tf.training.trainer) on small generated IDX data."""

import json

import keras
import numpy as np
import pytest

from mtl_tf.training import config as config_lib
from mtl_tf.training import distribute, trainer
from mtl_tf.training.workdir import write_json
from tests.launch.conftest import TINY, run_script


def tiny_config(data_dir, **overrides):
    config = config_lib.load("configs/multi_fashion.py:smoke")
    config_lib.apply_overrides(config, {**TINY, **overrides})
    config_lib.add_data_dir(config, data_dir)
    return config


# -- the command line ----------------------------------------------------------------------


def test_cli_writes_a_valid_results_json(cli_run):
    workdir = cli_run["workdir"]
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == "mgda_ub" and results["seed"] == 3
    assert set(results["tasks"]) == {"left", "right"}
    for task in ("left", "right"):
        assert 0.0 <= results["tasks"][task]["accuracy"] <= 1.0
        assert np.isfinite(results["tasks"][task]["loss"])
        assert set(results["validation"][task]) >= {"accuracy", "loss"}
    # Command-line overrides reached the run and are recorded with it.
    assert results["config"]["balancer"]["normalization"] == "loss+"
    assert results["config"]["seed"] == 3
    assert results["config"]["data"]["data_dir"].endswith("fake_fashion0")
    assert set(results["versions"]) >= {"tensorflow", "keras", "mtl_tf", "mtl_tf_commit", "python"}
    assert results["best_epoch"] == 1 and results["epochs_trained"] == 1
    assert len(results["history"]) == 1 and "val_monitor" in results["history"][0]
    assert results["history"][0]["val_monitor"] == pytest.approx(
        np.mean([results["history"][0]["val_left_accuracy"], results["history"][0]["val_right_accuracy"]])
    )
    assert results["wall_time_s"] > 0
    assert results["sizes"] == {"train": 256, "val": 64, "test": 64}
    assert json.loads((workdir / "config.json").read_text()) == results["config"]
    assert (workdir / "best.weights.h5").stat().st_size > 0
    assert list((workdir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert not (workdir / "backup").exists()  # removed once results.json is written
    assert "left: accuracy=" in cli_run["stdout"]


# -- the trainer in process ------------------------------------------------------------------


def test_unknown_method_and_foreign_options_are_errors(fake_fashion_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'mgda-ub'.*'mgda_ub'"):
        trainer.train_and_evaluate(tiny_config(fake_fashion_dir, method="mgda-ub"), tmp_path / "a")
    config = tiny_config(fake_fashion_dir, method="uniform", **{"balancer.normalization": "l2"})
    with pytest.raises(ValueError, match=r"\['normalization'\] do not apply to method 'uniform'"):
        trainer.balancer_spec(config)
    with pytest.raises(KeyError, match="no field 'balancer.normalisation'"):
        config_lib.apply_overrides(config, {"balancer.normalisation": "l2"})


class _Interrupt(keras.callbacks.Callback):
    """Stands in for a killed process: raises when the given epoch starts."""

    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("killed")


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def test_a_killed_run_resumes_at_its_last_finished_epoch(fake_fashion_dir, tmp_path, monkeypatch):
    config = tiny_config(fake_fashion_dir, epochs=2, method="uniform")
    workdir = tmp_path / "run"
    real_fit = distribute.fit

    def fit_with(extra):
        def fit(model, train, **kwargs):
            kwargs["callbacks"] = [*kwargs["callbacks"], extra]
            return real_fit(model, train, **kwargs)
        return fit

    monkeypatch.setattr(distribute, "fit", fit_with(_Interrupt(at_epoch=1)))
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, workdir, verbose=0)
    assert not (workdir / "results.json").exists()
    assert (workdir / "backup").is_dir()
    first_epoch = json.loads((workdir / "train_state.json").read_text())["history"]
    assert [h["epoch"] for h in first_epoch] == [1]

    # The same config again: only the second epoch is trained.
    seen = []
    monkeypatch.setattr(distribute, "fit", fit_with(_EpochRecorder(seen)))
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(tiny_config(fake_fashion_dir, epochs=2, method="uniform"), workdir, verbose=0)
    assert seen == [1]
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["history"][0] == first_epoch[0]
    assert results["best_epoch"] in (1, 2)
    assert not (workdir / "backup").exists()

    # A finished run is returned as is; overwrite removes it and trains again.
    seen.clear()
    again = trainer.train_and_evaluate(tiny_config(fake_fashion_dir, epochs=2, method="uniform"), workdir)
    assert seen == [] and again == json.loads((workdir / "results.json").read_text())
    calls = []
    monkeypatch.setattr(trainer, "_train_single", lambda config, wd, **kw: calls.append(sorted(p.name for p in wd.iterdir() if p.name != ".lock")))
    trainer.train_and_evaluate(tiny_config(fake_fashion_dir, epochs=2, method="uniform"), workdir, overwrite=True)
    # Results, weights, state, logs and config.json of the old run are gone (config.json is written again
    # by _train_single once the data and the model are built).
    assert calls == [[]]


def test_an_unfinished_run_of_another_config_is_not_resumed(fake_fashion_dir, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_json(workdir / "config.json", config_lib.config_to_dict(tiny_config(fake_fashion_dir, seed=1)))
    with pytest.raises(ValueError, match="different config"):
        trainer.train_and_evaluate(tiny_config(fake_fashion_dir, seed=2), workdir)


def test_single_task_trains_one_head_on_one_target(fake_fashion_dir, tmp_path):
    config = tiny_config(fake_fashion_dir, method="single_task", **{"single_task.task": "right"})
    benchmark = trainer.build_benchmark(config)
    assert benchmark.task_names == ("right",) and benchmark.monitor == ["right_accuracy"]
    _, targets = next(iter(benchmark.train))
    assert set(targets) == {"right"}
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(config, tmp_path / "single", verbose=0)
    assert results["method"] == "single_task" and set(results["tasks"]) == {"right"}
    assert results["history"][0]["right_weight"] == 1.0

    missing = tiny_config(fake_fashion_dir, method="single_task")
    with pytest.raises(ValueError, match="single_task.task"):
        trainer.build_benchmark(missing)
    wrong = tiny_config(fake_fashion_dir, method="single_task", **{"single_task.task": "middle"})
    with pytest.raises(ValueError, match=r"'middle' is not a task.*\['left', 'right'\]"):
        trainer.build_benchmark(wrong)


def test_grid_runs_static_weights_per_point_and_reports_the_best_on_validation(fake_fashion_dir, tmp_path, monkeypatch):
    trained = []
    # Validation monitor of each point (made up): the middle point is best.
    monitor = {(0.75, 0.25): 0.4, (0.5, 0.5): 0.7, (0.25, 0.75): 0.6}

    def fake_single(config, workdir, **kwargs):
        weights = tuple(config.balancer.weights)
        trained.append((config.method, weights, workdir.name))
        results = {"method": config.method, "tasks": {"left": {"accuracy": weights[0]}, "right": {"accuracy": weights[1]}},
                   "validation": {}, "monitor": {"value": monitor[weights], "mode": "max"}, "wall_time_s": 1.0}
        write_json(workdir / "results.json", results)
        return results

    monkeypatch.setattr(trainer, "_train_single", fake_single)
    config = tiny_config(fake_fashion_dir, method="grid", **{"grid.divisions": 4})
    results = trainer.train_and_evaluate(config, tmp_path / "grid")
    assert trained == [
        ("static", (0.75, 0.25), "w0.75_0.25"), ("static", (0.5, 0.5), "w0.5_0.5"), ("static", (0.25, 0.75), "w0.25_0.75"),
    ]
    assert results["method"] == "grid" and results["selected"]["weights"] == [0.5, 0.5]
    assert results["tasks"] == {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.5}}
    assert [p["monitor_value"] for p in results["points"]] == [0.4, 0.7, 0.6]
    assert results["wall_time_s"] == 3.0
    # Finished points are not retrained when the grid is resumed.
    (tmp_path / "grid" / "results.json").unlink()
    trained.clear()
    trainer.train_and_evaluate(config, tmp_path / "grid")
    assert trained == []


def test_mirrored_strategy_trains_with_two_replicas(fake_fashion_dir, tmp_path, mirrored_strategy):
    config = tiny_config(fake_fashion_dir, method="mgda_ub")
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(config, tmp_path / "mirrored", strategy=mirrored_strategy, verbose=0)
    assert results["strategy"]["num_replicas"] == 2
    assert all(np.isfinite(results["tasks"][t]["loss"]) for t in ("left", "right"))
