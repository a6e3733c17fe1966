"""Shared fixtures of the launch-script tests: small IDX data in the official layout, tiny runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data import fixtures

REPO = Path(__file__).resolve().parents[2]

# A tiny multi-fashion run: 256 training composites in batches of 64 (4 steps), 64 val / test.
TINY = {
    "data.pareto_sizes": (256, 64, 64),
    "data.max_train_examples": 256,
    "data.max_eval_examples": 64,
    "batch_size": 64,
    "data.eval_batch_size": 64,
}


def flag_args(overrides: dict) -> list[str]:
    return [f"--config.{k}={v if isinstance(v, str) else repr(v)}" for k, v in overrides.items()]


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory):
    """Fashion-MNIST-like IDX files (gzipped, official names): 300 train, 100 test items."""
    directory = tmp_path_factory.mktemp("fake_fashion")
    return fixtures.write_idx_dataset(directory, fixtures.make_source(300, 100, seed=5, style="fashion"))


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory):
    """Environment of subprocesses: their own cache, no TFDS, the repo importable."""
    root = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(
        MTL_TF_CACHE=str(root / "cache"),
        TFDS_DATA_DIR=str(root / "no_tfds"),
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MTL_TF_CACHE", str(root / "inprocess_cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(root / "no_tfds"))


def run_script(script: str, args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, str(REPO / "launch" / script), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{script} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr[-4000:]}")
    return completed


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, fake_fashion_dir, isolated_env):
    """One smoke run of launch/train.py (MGDA-UB, loss+ normalisation, seed 3), trained once per session."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    args = [
        "--config=configs/multi_fashion.py:smoke",
        "--config.method=mgda_ub",
        "--config.balancer.normalization=loss+",
        "--config.seed=3",
        *flag_args(TINY),
        f"--data_dir={fake_fashion_dir}",
        f"--workdir={workdir}",
        "--verbose=1",
    ]
    completed = run_script("train.py", args, isolated_env)
    return {"workdir": workdir, "args": args, "stdout": completed.stdout, "stderr": completed.stderr}
