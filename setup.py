"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow.

Three ways to install (the README's "Two commands" section says the same):

* `pip install .`: the library alone (`mtl_tf.MultiTaskModel`, balancers,
  solvers, losses, metrics, nets, export), which needs TensorFlow, Keras and
  NumPy only;
* `pip install ".[launch]"`: plus what the launch scripts, data sets,
  benchmarks and reports need (`launch/*.py`, `configs/*.py`);
* `pip install ".[test]"`: plus the test suite's needs (the launch extra too).

`and-cuda` adds NVIDIA's CUDA libraries (`tensorflow[and-cuda]`) for a GPU.
"""

import re
from pathlib import Path

import setuptools

# One source for the version: mtl_tf/__init__.py (results.json records it).
_VERSION = re.search(
    r'^__version__ = "([^"]+)"', (Path(__file__).parent / "mtl_tf" / "__init__.py").read_text(), re.M
).group(1)

_TENSORFLOW = "tensorflow>=2.21,<2.22"

# What `import mtl_tf` and the library core need. `tensorflow` (not
# tensorflow-cpu) on every platform: its Linux wheel runs on CPUs and GPUs alike,
# and `tensorflow[and-cuda]` adds to it rather than installing a second
# distribution that owns the same `tensorflow/` directory.
INSTALL_REQUIRES = [
    _TENSORFLOW,
    "keras>=3.15,<3.16",
    "numpy>=1.26",
]

# Only the launch scripts, configs, data sets, benchmarks and reports need these;
# the core imports none of them (tests/test_install.py checks it).
LAUNCH_REQUIRES = [
    "tensorflow-datasets>=4.9.10",
    # tensorflow-datasets 4.9.10 fails to prepare any data set without it.
    "importlib_resources",
    "absl-py>=2.1",
    "ml_collections>=1.0",
    # TensorFlow 2.21 no longer pulls tensorboard in; the launch scripts log to it.
    "tensorboard>=2.21",
    "matplotlib>=3.8",
    "pillow>=10",
    # mtl_tf.timing.reference (the exact min-norm QP of launch/benchmark.py).
    "scipy>=1.11",
]

EXTRAS_REQUIRE = {
    "launch": LAUNCH_REQUIRES,
    # The suite runs the launch scripts; sphinx builds the API reference in a test.
    # pytest-xdist: the default suite runs on every core (pytest.ini), which keeps it under 10 minutes on 2.
    "test": LAUNCH_REQUIRES + ["pytest>=8", "pytest-xdist>=3.5", "sphinx>=7", "jax[cpu]>=0.4.34"],
    # NVIDIA's CUDA and cuDNN wheels for TensorFlow on a Linux GPU machine.
    "and-cuda": [_TENSORFLOW.replace("tensorflow", "tensorflow[and-cuda]", 1)],
}

setuptools.setup(
    name="mtl_tf",
    version=_VERSION,
    description=(
        "MGDA, MGDA-UB, single gradient step update and the multi-task baselines, "
        "native to Keras 3 (model.fit, tf.distribute, SavedModel)."
    ),
    packages=setuptools.find_packages(include=["mtl_tf", "mtl_tf.*"]),
    # PEP 561: the package ships its type hints.
    package_data={"mtl_tf": ["py.typed"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
