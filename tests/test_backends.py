"""The backend-neutral tests pass under JAX too, in a second pytest process without TensorFlow.

`python -m pytest` starts that process from here (tests/backends.py lists what it
runs and why). It is the longest single test of the suite (a few CPU minutes), so
tests/conftest.py moves it to the front of the collection: xdist starts it first and
the other workers run the TensorFlow tests beside it. The JAX process is kept short by
XLA compiling without most optimisations there (tests/conftest.py) and by JAX-only
reductions written in the tests themselves (jitted solves where eager execution is not
what a test checks, a representative part of long parameter sweeps: each says why),
never by changing what runs under TensorFlow.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import backends

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(backends.keras_backend() != "tensorflow", reason="started from the TensorFlow process only")
def test_backend_neutral_tests_pass_under_jax_without_tensorflow():
    pytest.importorskip("jax", reason="jax is in the test extra: pip install -e '.[test]'")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", **{backends.BLOCK_ENV: "1"})
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", *backends.NEUTRAL_TEST_FILES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert completed.returncode == 0, (
        f"the JAX process failed (exit {completed.returncode}):\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
    )
    assert " passed" in completed.stdout.splitlines()[-1], completed.stdout[-2000:]
