"""The backend-neutral part of the suite, run a second time under JAX with TensorFlow blocked.

`python -m pytest` (the README's one command) runs every test under TensorFlow;
`tests/test_backends.py` then starts a second pytest process with
`KERAS_BACKEND=jax` and `MTL_TF_BLOCK_TENSORFLOW=1` over `NEUTRAL_TEST_FILES`,
the test modules of the code written in `keras.ops` (no training step). Importing
TensorFlow there raises, so a module that still needs it fails loudly instead of
passing on a backend it does not use. A test module joins the list once it and
the code it tests import no TensorFlow.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

BLOCK_ENV = "MTL_TF_BLOCK_TENSORFLOW"

# Test modules (paths relative to the repository root) that run under every backend.
NEUTRAL_TEST_FILES: tuple[str, ...] = (
    "tests/engines/test_backends_harness.py",
    "tests/test_solvers.py",
    "tests/test_solvers_fair.py",
    "tests/test_solvers_qp.py",
    # nets, losses, metrics (issue 24): forward passes, values, serialisation; their fit / tf.function tests skip here.
    "tests/test_losses.py",
    "tests/test_metrics.py",
    "tests/nets/test_cross_stitch.py",
    "tests/nets/test_init.py",
    "tests/nets/test_initializers.py",
    "tests/nets/test_lenet.py",
    "tests/nets/test_mmoe.py",
    "tests/nets/test_mtan.py",
    "tests/nets/test_ple.py",
    "tests/nets/test_pspnet.py",
    "tests/nets/test_resnet.py",
    "tests/nets/test_segnet.py",
    "tests/nets/test_serialization.py",
    "tests/nets/test_split.py",
    # balancers (issue 24): every method builds and round-trips; the array harness's exact gradients;
    # the backend's stateless draws. Their compute_update under JAX: tests/engines/test_same_values.py.
    "tests/balancers/test_neutral.py",
    "tests/balancers/test_array_problem.py",
    "tests/backend/test_random.py",
)


def keras_backend() -> str:
    """The backend Keras will use, read the way Keras reads it, without importing Keras first."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def full_sweep_on_tensorflow(cases, kept, reason):
    """`cases` of a `pytest.mark.parametrize`, all run under TensorFlow; elsewhere only those at indices `kept`.

    The other backends' process (JAX: every op compiled at its first shape) must stay within a few
    CPU minutes, so long sweeps run in full under TensorFlow and, elsewhere, on the cases `kept`,
    which the caller picks to reach every path of the code under test; `reason` says which. The
    others are skipped there with that reason, under the same test ids; under TensorFlow `cases`
    is returned as it is. A case of several arguments is a tuple, as `parametrize` takes it.
    """
    import pytest

    if keras_backend() == "tensorflow":
        return list(cases)
    skip = pytest.mark.skip(reason=f"the full sweep runs under TensorFlow; here {reason}")
    return [case if index in kept else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=skip)
            for index, case in enumerate(cases)]


class TensorFlowBlocker(importlib.abc.MetaPathFinder):
    """A meta-path finder that refuses `tensorflow` and its submodules (and `tf_keras`)."""

    blocked = ("tensorflow", "tf_keras")

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(
                f"import of {fullname!r} blocked: this test process checks that the code runs without TensorFlow "
                f"({BLOCK_ENV}=1)", name=fullname,
            )
        return None


def block_tensorflow_if_asked() -> None:
    """Installs `TensorFlowBlocker` first on `sys.meta_path` when `MTL_TF_BLOCK_TENSORFLOW=1`."""
    if os.environ.get(BLOCK_ENV) != "1":
        return
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in TensorFlowBlocker.blocked)
    if loaded:
        raise RuntimeError(f"{BLOCK_ENV}=1 but TensorFlow is already imported: {loaded[:5]}")
    if not any(isinstance(finder, TensorFlowBlocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, TensorFlowBlocker())
