"""Every script in examples/ runs as `python examples/<name>.py` and does what its docstring says.

Each runs in a subprocess (single-threaded TensorFlow, its own caches, no TFDS
data directory, no downloads), as a user would run it, so none goes stale.
The README's "Quickstart" snippet is examples/readme_quickstart.py.
"""

import ast
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data import fixtures

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
README = REPO / "README.md"

# What each example that runs without arguments must print (its own checks
# raise, so a zero exit already means they passed: the examples that train
# assert their accuracy, AUC or MAE against a threshold well above chance, and
# print that line).
EXPECTED_OUTPUT = {
    "own_keras_model.py": [
        "task weights of the last step:", "validation accuracy: bright", "(chance 0.50), quadrant", "(chance 0.25)",
        "the .keras file predicts the same: mgda_ub",
    ],
    "tabular_mmoe.py": [
        "click: ", "% positive in training", "validation AUC: click", "validation AUC: purchase",
        "(chance 0.50, the true probabilities give", "predicted purchase probabilities:",
    ],
    "regression.py": [
        "task weights of the last step:", "validation depth MAE", "m for predicting the mean",
        "validation material accuracy", "(chance 0.33)", "predicted depths:",
    ],
    "partly_labelled.py": [
        "churn: ", "segment: ", "training examples labelled", "had no segment label",
        "validation accuracy on the labelled examples: churn", "(chance 0.50), segment", "(chance 0.33)",
    ],
    "custom_balancer.py": ["'loss_share'", "options of loss_share: ('power',)", "last-step weights:"],
    "tfds_dataset.py": ["element spec:", "test: {'item_accuracy':"],
}
# Examples run by their own tests: plot_results.py needs a run (tests below);
# readme_quickstart.py is the README's snippet, which tests/test_readme.py executes
# (test_readme_snippet_is_the_quickstart_example keeps the two texts equal).
RUN_ELSEWHERE = {"plot_results.py", "readme_quickstart.py"}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples_env")
    env = dict(os.environ)
    env.update(
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        MTL_TF_CACHE=str(root / "cache"),
        MTL_TF_DOWNLOAD="0",
        TFDS_DATA_DIR=str(root / "no_tfds"),
        KERAS_HOME=str(root / "keras_home"),
        MPLBACKEND="Agg",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def run(args, env, cwd):
    completed = subprocess.run(
        [sys.executable, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, (
        f"{args} failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-4000:]}"
    )
    return completed.stdout


def test_every_example_is_run_by_a_test():
    names = {path.name for path in EXAMPLES.glob("*.py")}
    assert names == set(EXPECTED_OUTPUT) | RUN_ELSEWHERE


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT))
def test_example_runs(name, example_env, tmp_path):
    # From another directory, as `python examples/<name>.py` does not rely on the checkout being the cwd.
    stdout = run([EXAMPLES / name], example_env, cwd=tmp_path)
    for text in EXPECTED_OUTPUT[name]:
        assert text in stdout, f"{name} did not print {text!r}; its output:\n{stdout[-3000:]}"


def test_every_example_has_a_docstring_saying_how_to_run_it():
    for path in EXAMPLES.glob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring, f"{path.name} has no module docstring"
        assert f"python examples/{path.name}" in docstring, f"{path.name}'s docstring does not say how to run it"


def readme_snippet():
    text = README.read_text()
    start = text.index("## Quickstart")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)
    assert len(blocks) == 1, "the README's 'Quickstart' section should hold one python block"
    return blocks[0]


def test_readme_snippet_is_the_quickstart_example():
    """The README's code and examples/readme_quickstart.py below its docstring are the same text."""
    source = (EXAMPLES / "readme_quickstart.py").read_text()
    docstring = ast.parse(source).body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    body = "\n".join(source.splitlines()[docstring.end_lineno:]).strip("\n") + "\n"
    assert body == readme_snippet(), (
        "README.md's 'Quickstart' block and examples/readme_quickstart.py (after its docstring) differ; "
        "change both together"
    )


# -- plot_results.py on a run trained by launch/train.py --------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, example_env):
    """A two-epoch MGDA-UB run of launch/train.py on small Fashion-MNIST-like IDX files."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = fixtures.write_idx_dataset(root / "fashion", fixtures.make_source(300, 100, seed=5, style="fashion"))
    workdir = root / "run"
    overrides = {
        "method": "mgda_ub", "epochs": 2, "batch_size": 64, "data.eval_batch_size": 64,
        "data.pareto_sizes": (256, 64, 64), "data.max_train_examples": 256, "data.max_eval_examples": 64,
    }
    run([
        REPO / "launch" / "train.py", "--config=configs/multi_fashion.py:smoke",
        *(f"--config.{key}={value!r}" if not isinstance(value, str) else f"--config.{key}={value}"
          for key, value in overrides.items()),
        f"--data_dir={data}", f"--workdir={workdir}", "--verbose=0",
    ], example_env, cwd=REPO)
    return workdir


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_plot_results_reads_a_run_and_writes_a_png(tiny_run, example_env, tmp_path):
    results = json.loads((tiny_run / "results.json").read_text())
    out = tmp_path / "figures" / "run.png"
    stdout = run([EXAMPLES / "plot_results.py", tiny_run, "--out", out], example_env, cwd=tmp_path)
    # One line per epoch of the run, with the weights results.json recorded for that epoch.
    for entry in results["history"]:
        weights = {t: round(entry[f"{t}_weight"], 4) for t in ("left", "right")}
        means = {t: round(entry[f"{t}_weight_mean"], 4) for t in ("left", "right")}
        assert (f"epoch {entry['epoch']}: loss {entry['loss']:.4f}, task weights {weights} at the last step, "
                f"{means} mean over the epoch") in stdout
    assert len(results["history"]) == 2
    assert f"test left: accuracy {results['tasks']['left']['accuracy']:.4f}" in stdout
    width, height = png_size(out)
    # mtl_tf.reports.run_figure's three panels (weights, losses, validation accuracy): figsize (15, 3.8) at 110 dpi.
    assert (width, height) == (1650, 418)


def test_plot_results_default_figure_path_and_results_file_argument(tiny_run, example_env, tmp_path):
    stdout = run([EXAMPLES / "plot_results.py", tiny_run / "results.json"], example_env, cwd=tmp_path)
    assert f"figure: {tiny_run / 'results.png'}" in stdout
    png_size(tiny_run / "results.png")


def test_plot_results_names_a_missing_run(example_env, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "plot_results.py"), str(tmp_path / "nowhere")],
        env=example_env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        f"plot_results.py: error: {tmp_path / 'nowhere'} does not exist; "
        "expected a run directory of launch/train.py or its results.json\n"
    )


def test_plot_results_names_a_file_that_is_not_json(example_env, tmp_path):
    broken = tmp_path / "results.json"
    broken.write_text('{"method": "mgda_ub", "tasks": ')
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "plot_results.py"), str(broken)],
        env=example_env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"plot_results.py: error: {broken} is not valid JSON")
