"""`mtl_tf.solvers.fair.fair_weights` against the equation K w = w^(-1/alpha) and scipy's solution of it.

Backend-neutral (run under JAX too, float64 through `tests.precision.float64_on_jax`);
`test_compiles_with_xla` compiles with `tf.function(jit_compile=True)` on TensorFlow
and `jax.jit` on JAX.
"""

import keras
import numpy as np
import pytest
import scipy.optimize

from mtl_tf.solvers.fair import fair_weights
from tests.precision import float64_on_jax, float64_unavailable  # noqa: F401  (fixtures)


def tensor(x, dtype=None):
    return keras.ops.convert_to_tensor(x if dtype is None else np.asarray(x, dtype))


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def xla(fn):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import jax

    return jax.jit(fn)


def scipy_solution(gram, alpha):
    """scipy's least squares on K w - w^(-1/alpha) (the official FairGrad code's call), tightened."""
    start = np.ones(len(gram)) / len(gram)
    # Stopping tolerances at 5 eps: the reference stops only when float64 cannot improve it (it is
    # compared at rtol 1e-5, the solver's own tolerance).
    result = scipy.optimize.least_squares(lambda w: gram @ w - np.power(1 / w, 1 / alpha), start, bounds=(0, np.inf),
                                          xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return result.x


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("num", [2, 3, 10, 40])
def test_solves_the_equation_and_matches_scipy(num, alpha):
    rng = np.random.default_rng(num)
    vectors = rng.normal(size=(num, num + 3)) * rng.uniform(0.1, 10.0, size=(num, 1))
    gram = vectors @ vectors.T
    w, iterations = fair_weights(tensor(gram), alpha)
    w = numpy(w)
    assert np.all(w > 0) and int(iterations) < 100
    target = w ** (-1 / alpha)
    np.testing.assert_allclose(gram @ w, target, rtol=1e-6)
    np.testing.assert_allclose(w, scipy_solution(gram, alpha), rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason=(
    "TensorFlow-specific bound: it assumes the masked 4 x 4 and the 3 x 3 problem round alike, which TensorFlow's "
    "kernels do; XLA on CPU (JAX) reduces them in another order, and the Armijo tests near convergence, decided by "
    "round-off, then take other step sizes (the two answers differ by ~2e-11 relative, both within ~2e-11 of the "
    "exact solution)"))
def test_unlabelled_tasks_take_no_part():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(4, 6))
    gram = vectors @ vectors.T
    mask = np.array([True, False, True, True])
    w = numpy(fair_weights(tensor(gram), 1.0, tensor(mask))[0])
    assert w[1] == 0.0
    # The same Newton iterations on the same entries (masked ones never enter): at most T = 3 roundings
    # per iterate amplified by the condition of the labelled block: 4 T cond eps.
    sub = gram[np.ix_(mask, mask)]
    rtol = 4 * 3 * np.linalg.cond(sub) * np.finfo(np.float64).eps
    np.testing.assert_allclose(w[mask], numpy(fair_weights(tensor(sub), 1.0)[0]), rtol=rtol)


def test_degenerate_gramians_give_finite_weights():
    for gram in ([[1.0, -1.0], [-1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]],
                 [[np.nan, 0.0], [0.0, 1.0]]):
        w = numpy(fair_weights(tensor(gram, np.float64))[0])
        assert np.all(np.isfinite(w)) and np.all(w >= 0)


def test_compiles_with_xla():
    gram = tensor([[2.0, -0.5], [-0.5, 1.0]], np.float32)
    compiled = xla(lambda g: fair_weights(g, 2.0)[0])
    # The Newton iterations run in float64 either way; XLA may fuse a multiply-add (one rounding less)
    # in each of the ~4 iterations on this 2 x 2 system of condition 2.6: 64 eps64.
    np.testing.assert_allclose(numpy(compiled(gram)), numpy(fair_weights(gram, 2.0)[0]),
                               rtol=64 * np.finfo(np.float64).eps)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        fair_weights(keras.ops.eye(2), 0.0)
