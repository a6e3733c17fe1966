"""Test-session set-up shared by every test module.

The CPU is split into two logical devices before TensorFlow touches it, so the
data-parallel tests can build a two-replica MirroredStrategy on a CPU-only
machine; everything else keeps using the default (first) device.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The data loaders fall back to downloading MNIST / Fashion-MNIST; tests must never do that.
os.environ.setdefault("MTL_TF_DOWNLOAD", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import backends  # noqa: E402

# The second test process (tests/test_backends.py starts it) runs the backend-neutral
# tests under another Keras backend, with TensorFlow blocked from import.
backends.block_tensorflow_if_asked()

if backends.keras_backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
elif backends.keras_backend() == "jax":
    import jax

    # The JAX process spends most of its time compiling: every eager op at every new shape, every
    # jax.jit / lax.while_loop of the solvers (a few ms to run, seconds to compile). XLA's optimisation
    # passes are what cost; without them the process takes about 40% less CPU time. The tests compare
    # values with tolerances derived from the arithmetic (or bit for bit between two codings compiled
    # alike), so they hold for unoptimised code as they do for optimised code.
    jax.config.update("jax_disable_most_optimizations", True)


def pytest_collection_modifyitems(session, config, items):
    """The JAX process (tests/test_backends.py, minutes long) first, so it overlaps the TensorFlow tests.

    xdist (`-n auto`, load scheduling) hands out tests in collection order, so the test that starts
    the JAX process goes to the first worker at once instead of extending the run at its end.
    """
    first = [item for item in items if item.nodeid.startswith("tests/test_backends.py::")]
    if first:
        items[:] = first + [item for item in items if item not in first]


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, so every failure is reproducible."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One two-replica MirroredStrategy for the whole session.

    A second MirroredStrategy in the same process breaks TensorFlow's
    collectives (replicas pair up the wrong tensors), so every in-process
    data-parallel test shares this one.
    """
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    return tf.distribute.MirroredStrategy(devices)
