"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow."""

import setuptools

setuptools.setup(
    name="mtl_tf",
    version="0.1.0",
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
    ],
    extras_require={
        "test": ["pytest>=8", "scipy>=1.11"],
    },
)
