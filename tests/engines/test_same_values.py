"""Every net, loss, metric and backend op gives TensorFlow's values under JAX, with TensorFlow blocked.

`tests/engines/same_values_cases.py` holds one computation (every public net
and builder of `mtl_tf.nets` at small sizes with weights set from a seeded
NumPy generator, every loss of `mtl_tf.losses`, every metric of
`mtl_tf.metrics`, every function of `mtl_tf.backend.ops`, on fixed NumPy
inputs). This test runs it here under TensorFlow and in a subprocess with
`KERAS_BACKEND=jax JAX_PLATFORMS=cpu MTL_TF_BLOCK_TENSORFLOW=1` (the blocker is
installed before Keras is imported), and compares the two.

Tolerance: float32 throughout, `rtol=1e-5, atol=1e-5` on values of order 1
(the weights keep activations within a few units). The two backends run
different kernels (oneDNN / Eigen against XLA CPU), so sums and convolutions
round in a different order: a float32 sum of n terms differs by up to about
n * 2**-24 * |terms|, i.e. 1e-6 for the few hundred terms of these small nets;
the largest difference measured was 1.6e-6 (a LeNet encoder's output, values
up to 3.2), so 1e-5 leaves a margin of 5, while a real discrepancy is far larger (a decoder
fed from an encoder with other weights, a slip made while writing this test,
differed by 8e-2). Integer results (confusion matrices, switches, masks,
label counts) are compared exactly. The metrics accumulate in float64 on
TensorFlow and, without `jax_enable_x64`, in float32 on JAX: `OffsetError("mse")`
of 2077 differed by 4.9e-4, a relative 2.4e-7 (float32's 2**-24 = 6e-8 per
rounding), inside `rtol`.

`XLA_FLAGS=--xla_backend_optimization_level=0` in the subprocess halves the
JAX compile time of the op-by-op eager run; it does not change the values
beyond the tolerance (checked).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import backends

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e-5
ATOL = 1e-5
EXACT = ("switches", "confusion_matrix", "valid_pixel_mask", "max_pooling_with_switches/1", "_count")

pytestmark = pytest.mark.skipif(
    backends.keras_backend() != "tensorflow", reason="the TensorFlow values are the reference: TensorFlow process only"
)


def _jax_values(tmp_path, parts, x64=False):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is in the test extra: pip install -e '.[test]'")
    out = tmp_path / "jax_values.npz"
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS=flags, **{backends.BLOCK_ENV: "1"})
    env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    env.pop("PYTEST_XDIST_WORKER", None)
    completed = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "tests.engines.same_values_cases", str(out), ",".join(parts)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, f"the JAX process failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


NET_PARTS = ("engine_ops", "losses", "metrics", "nets")


def test_nets_losses_metrics_and_ops_give_tensorflows_values_under_jax(tmp_path):
    from tests.engines import same_values_cases

    compare(same_values_cases.compute(NET_PARTS), _jax_values(tmp_path, NET_PARTS))


def test_every_balancer_gives_tensorflows_update_under_jax(tmp_path):
    """Every method's `compute_update` (tests/balancers/array_problem.py: hand-derived gradients of the
    tiny problem, so no training step), three SGD steps, with the solvers in float64 on both backends
    (`jax_enable_x64`; in float32 the fair Newton and QP solvers stop at their float32 accuracy, e.g.
    upgrad's weights 1e-4 apart). Methods that draw random numbers: shapes only (own generator per
    backend). Same tolerance as above: the values are of order 1 and a step is a few hundred roundings."""
    from tests.engines import same_values_cases

    compare(same_values_cases.compute(("balancers",)), _jax_values(tmp_path, ("balancers",), x64=True))


def compare(reference, values):
    assert str(values.pop("backend")) == "jax"
    assert sorted(values) == sorted(reference)
    largest = largest_relative = 0.0
    for key in sorted(reference):
        expected, got = np.asarray(reference[key]), np.asarray(values[key])
        assert got.shape == expected.shape, key
        if "/random_" in key:
            continue  # each backend its own generator: shapes only
        if expected.dtype.kind in "US" or any(tag in key for tag in EXACT):
            np.testing.assert_array_equal(got, expected, err_msg=key)
            continue
        # A balancer's update is a combination of task gradients that may be large (loss scale 8: entries
        # up to 3.5e3): its small entries carry the round-off of its largest terms, so the absolute
        # tolerance scales with the array's largest entry (1e-5 of it; 1e-5 for values of order 1).
        atol = ATOL * max(1.0, float(np.nanmax(np.abs(expected)))) if key.startswith("balancers/") and expected.size else ATOL
        np.testing.assert_allclose(got.astype("float64"), expected.astype("float64"), rtol=RTOL, atol=atol,
                                   equal_nan=True, err_msg=key)
        if expected.size:
            difference = np.abs(got.astype("float64") - expected)
            largest = max(largest, float(np.nanmax(difference)))
            largest_relative = max(largest_relative, float(np.nanmax(difference / np.maximum(1.0, np.abs(expected)))))
    print(f"TensorFlow / JAX over {len(reference)} arrays: largest difference {largest:.3g}, "
          f"relative to max(1, |value|) {largest_relative:.3g}")
