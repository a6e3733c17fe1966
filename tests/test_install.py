"""What `pip install` promises: a light core, a `launch` extra, the README saying which is which.

* The library core imports and trains with none of the launch extra's packages: a fresh Python
  process whose import system refuses them builds a `MultiTaskModel` and fits one step.
* `setup.py`'s requirements are what the README's "Two commands" section says they are.
* The package is typed (PEP 561): `py.typed` ships, the public registry and solver are annotated.
"""

import inspect
import json
import os
import re
import runpy
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# Import names of the launch extra's distributions (tensorflow-datasets, importlib_resources,
# ml_collections, tensorboard, matplotlib, pillow, scipy). absl-py is in the extra too but is
# also a dependency of TensorFlow itself, so it cannot be absent: the child process checks instead
# that the core loads no absl module beyond those `import tensorflow, keras` load.
BLOCKED = ("tensorflow_datasets", "importlib_resources", "ml_collections", "tensorboard", "matplotlib", "PIL",
           "scipy")
CORE = ("mtl_tf", "mtl_tf.model", "mtl_tf.balancers", "mtl_tf.solvers", "mtl_tf.losses", "mtl_tf.metrics",
        "mtl_tf.nets", "mtl_tf.data.idx", "mtl_tf.data.multi_digits")

_CHILD = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys

    BLOCKED, MODULES = set(sys.argv[1].split(",")), sys.argv[2].split(",")

    class Refuse(importlib.abc.MetaPathFinder):
        # As if the launch extra were not installed.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    import keras, numpy as np, tensorflow as tf

    absl_before = {m for m in sys.modules if m.partition(".")[0] == "absl"}
    report = {"errors": {}}
    for module in MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:
            report["errors"][module] = f"{type(e).__name__}: {e}"
    report["absl_added"] = sorted({m for m in sys.modules if m.partition(".")[0] == "absl"} - absl_before)
    if "mtl_tf.model" in MODULES and not report["errors"]:
        import mtl_tf

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model = mtl_tf.MultiTaskModel(
            encoder=keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)]),
            heads={"a": keras.layers.Dense(3), "b": keras.layers.Dense(2)},
            losses={"a": loss, "b": loss},
            balancer="mgda_ub",
        )
        model.compile(optimizer="sgd")
        x = np.random.default_rng(0).random((4, 3, 3, 1), dtype=np.float32)
        history = model.fit(x, {"a": np.array([0, 1, 2, 0]), "b": np.array([1, 0, 1, 0])},
                            batch_size=4, epochs=1, verbose=0)
        report["history"] = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    report["loaded_blocked"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print("REPORT " + json.dumps(report))
    """
)


def run_without_launch_extra(modules):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(BLOCKED), ",".join(modules)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT "):])


def test_core_imports_and_trains_without_the_launch_extra():
    report = run_without_launch_extra(CORE)
    assert report["errors"] == {}
    assert report["loaded_blocked"] == [] and report["absl_added"] == []
    history = report["history"]
    # One step of MGDA-UB on two tasks: both weights on the simplex, finite losses.
    assert abs(history["a_weight"][0] + history["b_weight"][0] - 1.0) < 1e-5
    assert all(v[0] == v[0] and abs(v[0]) < 1e6 for v in history.values())


def test_export_imports_without_the_launch_extra():
    assert run_without_launch_extra(["mtl_tf.export"])["errors"] == {}


# -- setup.py and the README ----------------------------------------------------------------


@pytest.fixture(scope="module")
def setup_kwargs():
    """The keyword arguments setup.py passes to setuptools.setup (nothing is built)."""
    seen = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: seen.update(kwargs)
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
    return seen


def names(requirements):
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_core_requires_only_tensorflow_keras_numpy(setup_kwargs):
    assert names(setup_kwargs["install_requires"]) == {"tensorflow", "keras", "numpy"}
    everything = setup_kwargs["install_requires"] + sum(setup_kwargs["extras_require"].values(), [])
    # tensorflow-cpu beside tensorflow[and-cuda] would be two distributions owning tensorflow/.
    assert "tensorflow-cpu" not in names(everything)
    tf_pins = {str(Requirement(r).specifier) for r in everything if Requirement(r).name == "tensorflow"}
    assert len(tf_pins) == 1, f"tensorflow pinned differently in the core and the extras: {tf_pins}"


def test_extras_are_what_the_readme_says(setup_kwargs):
    extras = {k: names(v) for k, v in setup_kwargs["extras_require"].items()}
    assert set(extras) == {"launch", "test", "and-cuda"}
    assert extras["launch"] == {"tensorflow-datasets", "importlib-resources", "absl-py", "ml-collections",
                                "tensorboard", "matplotlib", "pillow", "scipy"}
    assert extras["test"] >= extras["launch"] | {"pytest", "pytest-xdist", "scipy", "sphinx"}
    (cuda,) = setup_kwargs["extras_require"]["and-cuda"]
    assert Requirement(cuda).name == "tensorflow" and Requirement(cuda).extras == {"and-cuda"}

    text = section("Install")
    flat = text.lower().replace("_", "-")
    for name in extras["launch"] | {"tensorflow", "keras", "numpy"}:
        assert f"`{name}`" in flat, f"the README's Install section does not name `{name}`"
    assert 'pip install -e ".[launch]"' in bash_blocks(text)[0].splitlines()[-1]
    assert 'pip install -e ".[launch,and-cuda]"' in text
    # The first run: the smoke variant first, then the full job; both train MGDA-UB on multi-fashion.
    smoke, full = bash_blocks(section("First run"))[:2]
    assert smoke.startswith("python launch/train.py --config=configs/multi_fashion.py:smoke")
    assert full.startswith("python launch/train.py --config=configs/multi_fashion.py --config.method=mgda_ub")
    (test_cmd,) = bash_blocks(section("Tests"))
    assert test_cmd == 'pip install -e ".[test]" && python -m pytest'


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[test]"' in ci
    assert ci.rstrip().splitlines()[-1] == "python -m pytest"


# -- typing ----------------------------------------------------------------------------------


def test_package_is_typed(setup_kwargs):
    assert (ROOT / "mtl_tf" / "py.typed").is_file()
    assert "py.typed" in setup_kwargs["package_data"]["mtl_tf"]


@pytest.mark.parametrize("name", ["balancers.get", "balancers.available", "balancers.option_names",
                                  "balancers.register", "solvers.min_norm_weights"])
def test_public_functions_are_annotated(name):
    import mtl_tf

    module, function = name.split(".")
    func = getattr(getattr(mtl_tf, module), function)
    func = getattr(func, "__wrapped__", func)  # min_norm_weights is wrapped by autograph's do_not_convert
    hints = typing.get_type_hints(func)
    params = list(inspect.signature(func).parameters.values())
    assert "return" in hints
    assert all(p.name in hints for p in params), f"{name}: unannotated {[p.name for p in params if p.name not in hints]}"
