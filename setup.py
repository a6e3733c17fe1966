"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow."""

import re
from pathlib import Path

import setuptools

# One source for the version: mtl_tf/__init__.py (results.json records it).
_VERSION = re.search(
    r'^__version__ = "([^"]+)"', (Path(__file__).parent / "mtl_tf" / "__init__.py").read_text(), re.M
).group(1)

setuptools.setup(
    name="mtl_tf",
    version=_VERSION,
    description=(
        "MGDA, MGDA-UB, single gradient step update and the multi-task baselines, "
        "native to Keras 3 (model.fit, tf.distribute, SavedModel)."
    ),
    packages=setuptools.find_packages(include=["mtl_tf", "mtl_tf.*"]),
    python_requires=">=3.11",
    install_requires=[
        # tensorflow-cpu and tensorflow (GPU) run the same code; users with GPUs
        # install `tensorflow[and-cuda]` beside this package.
        "tensorflow-cpu>=2.21,<2.22; platform_machine == 'x86_64'",
        "tensorflow>=2.21,<2.22; platform_machine != 'x86_64'",
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9.10",
        # tensorflow-datasets 4.9.10 fails to prepare any data set without it.
        "importlib_resources",
        "numpy>=1.26",
        "absl-py>=2.1",
        "ml_collections>=1.0",
        # TensorFlow 2.21 no longer pulls tensorboard in; the launch scripts log to it.
        "tensorboard>=2.21",
        "matplotlib>=3.8",
        "pillow>=10",
        # mtl_tf.timing.reference (the exact min-norm QP of launch/benchmark.py).
        "scipy>=1.11",
    ],
    extras_require={
        "test": ["pytest>=8", "scipy>=1.11"],
    },
)
