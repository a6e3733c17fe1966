"""The Keras backend check (issue 22): another backend is refused at construction, naming it."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

import mtl_tf
from mtl_tf import engines

_SCRIPT = """
import keras, mtl_tf
print("imported under", keras.backend.backend())
try:
    mtl_tf.MultiTaskModel(keras.layers.Dense(2), {"a": keras.layers.Dense(1)}, losses={"a": "mse"})
except RuntimeError as error:
    print("refused:", error)
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_imports_and_is_refused_at_construction():
    """Under KERAS_BACKEND=jax, `import mtl_tf` works and MultiTaskModel names the backend and the fix."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported under jax" in result.stdout
    refusal = result.stdout.split("refused:", 1)[1]
    assert "'jax'" in refusal and "supported: tensorflow" in refusal and "KERAS_BACKEND=tensorflow" in refusal


def test_another_backend_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(RuntimeError, match=r"runs on 'torch'.*supported: tensorflow.*KERAS_BACKEND=tensorflow"):
        mtl_tf.MultiTaskModel(keras.layers.Dense(2), {"a": keras.layers.Dense(1)}, losses={"a": "mse"})


def test_tensorflow_is_accepted():
    assert engines.require_supported_backend() == "tensorflow"
