"""launch/evaluate.py: re-evaluating the saved best weights gives the metrics the run reported."""

import json

import pytest

from mtl_tf.training import trainer
from tests.launch.conftest import run_script


def test_cli_evaluate_reproduces_the_test_metrics(cli_run, isolated_env):
    workdir = cli_run["workdir"]
    results = json.loads((workdir / "results.json").read_text())
    completed = run_script("evaluate.py", [f"--workdir={workdir}", "--json"], isolated_env)
    printed = json.loads(completed.stdout[completed.stdout.index("{"):])
    for task in ("left", "right"):
        assert printed[task]["accuracy"] == pytest.approx(results["tasks"][task]["accuracy"], abs=1e-6)
        assert printed[task]["loss"] == pytest.approx(results["tasks"][task]["loss"], rel=1e-5)


def test_evaluate_the_validation_split_in_process(cli_run):
    workdir = cli_run["workdir"]
    results = json.loads((workdir / "results.json").read_text())
    tasks = trainer.evaluate_workdir(workdir, split="val")
    for task in ("left", "right"):
        assert tasks[task]["accuracy"] == pytest.approx(results["validation"][task]["accuracy"], abs=1e-6)


def test_evaluate_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found.*not a \\(trained\\) run directory"):
        trainer.evaluate_workdir(tmp_path)


def test_a_truncated_best_weights_file_is_named(cli_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run["workdir"], run, ignore=shutil.ignore_patterns(".lock"))
    with open(run / "best.weights.h5", "r+b") as f:
        f.truncate(300)
    with pytest.raises(ValueError, match=rf"{run / 'best.weights.h5'} cannot be loaded: .*--overwrite"):
        trainer.restore_run(run)
