"""Float64 in the solver tests, on every backend.

The solver tests compare float64 solves with float64 references; JAX computes
float64 only with `jax_enable_x64`. `float64_on_jax` (an autouse fixture where a
test module imports it) turns it on for each test and restores the previous
value afterwards; on other backends it does nothing. `float64_unavailable`
makes the current backend report no float64 for one test: on JAX by turning
`jax_enable_x64` off, elsewhere by patching `float64_available` where the
solvers read it, so the float32 fall-back and the explicit-float64 error are
tested on every backend.
"""

from __future__ import annotations

import contextlib

import keras
import pytest


@contextlib.contextmanager
def jax_x64(enabled):
    """JAX's `jax_enable_x64` set to `enabled` inside the block (restored after it)."""
    import jax

    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True)
def float64_on_jax():
    if keras.backend.backend() != "jax":
        yield
        return
    with jax_x64(True):
        yield


@pytest.fixture
def float64_unavailable(monkeypatch):
    if keras.backend.backend() == "jax":
        with jax_x64(False):
            yield
        return
    import mtl_tf.solvers._common as common

    monkeypatch.setattr(common, "float64_available", lambda: False)
    yield
