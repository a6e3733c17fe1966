"""`mtl_tf.solvers.fair.fair_weights` against the equation K w = w^(-1/alpha) and scipy's solution of it."""

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from mtl_tf.solvers.fair import fair_weights


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
    w, iterations = fair_weights(tf.constant(gram), alpha)
    w = w.numpy()
    assert np.all(w > 0) and int(iterations) < 100
    target = w ** (-1 / alpha)
    np.testing.assert_allclose(gram @ w, target, rtol=1e-6)
    np.testing.assert_allclose(w, scipy_solution(gram, alpha), rtol=1e-5)


def test_unlabelled_tasks_take_no_part():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(4, 6))
    gram = vectors @ vectors.T
    mask = np.array([True, False, True, True])
    w = fair_weights(tf.constant(gram), 1.0, tf.constant(mask))[0].numpy()
    assert w[1] == 0.0
    # The same Newton iterations on the same entries (masked ones never enter): at most T = 3 roundings
    # per iterate amplified by the condition of the labelled block: 4 T cond eps.
    sub = gram[np.ix_(mask, mask)]
    rtol = 4 * 3 * np.linalg.cond(sub) * np.finfo(np.float64).eps
    np.testing.assert_allclose(w[mask], fair_weights(tf.constant(sub), 1.0)[0].numpy(), rtol=rtol)


def test_degenerate_gramians_give_finite_weights():
    for gram in ([[1.0, -1.0], [-1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]],
                 [[np.nan, 0.0], [0.0, 1.0]]):
        w = fair_weights(tf.constant(gram, tf.float64))[0].numpy()
        assert np.all(np.isfinite(w)) and np.all(w >= 0)


def test_compiles_with_xla():
    gram = tf.constant([[2.0, -0.5], [-0.5, 1.0]])
    compiled = tf.function(lambda g: fair_weights(g, 2.0)[0], jit_compile=True)
    # The Newton iterations run in float64 either way; XLA may fuse a multiply-add (one rounding less)
    # in each of the ~4 iterations on this 2 x 2 system of condition 2.6: 64 eps64.
    np.testing.assert_allclose(compiled(gram).numpy(), fair_weights(gram, 2.0)[0].numpy(),
                               rtol=64 * np.finfo(np.float64).eps)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        fair_weights(tf.eye(2), 0.0)
