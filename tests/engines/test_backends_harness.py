"""The second test process really runs without TensorFlow, on the backend it was asked for.

This module is in `tests.backends.NEUTRAL_TEST_FILES`, so it runs in both processes.
"""

import importlib
import os

import pytest

from tests import backends


def test_keras_runs_on_the_backend_of_the_process():
    import keras

    assert keras.backend.backend() == backends.keras_backend()


def test_tensorflow_cannot_be_imported_when_blocked():
    if os.environ.get(backends.BLOCK_ENV) != "1":
        pytest.skip("TensorFlow is not blocked in this process")
    with pytest.raises(ModuleNotFoundError, match="blocked"):
        importlib.import_module("tensorflow")
