"""`cagrad` (Liu et al., NeurIPS 2021) against Algorithm 1 on explicit vectors, with scipy for its inner problem.

Reference: g_0 = mean of the task gradient vectors; w = argmin over the simplex
of g_w^T g_0 + c ||g_0|| ||g_w|| (scipy's SLSQP from several starts, on the
vectors themselves); d = (g_0 + c ||g_0|| / ||g_w|| g_w) / (1 + c^2) (the
official rescale 1; 0 keeps d). The shared parameters step by d, each head by
its own gradient.
"""

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers.cagrad import cagrad_simplex_weights
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny


def inner_weights(vectors, c, starts=6, seed=0):
    """w of Algorithm 1 by scipy's SLSQP on the vectors (best of several starts)."""
    g0 = vectors.mean(axis=0)
    radius = c * np.linalg.norm(g0)
    T = len(vectors)

    def objective(w):
        gw = w @ vectors
        return gw @ g0 + radius * np.sqrt(gw @ gw)

    rng = np.random.default_rng(seed)
    best = None
    for k in range(starts):
        start = np.ones(T) / T if k == 0 else rng.dirichlet(np.ones(T))
        result = scipy.optimize.minimize(
            objective, start, bounds=[(0.0, 1.0)] * T, method="SLSQP",
            # ftol 1e-15 (5 eps): SLSQP runs to float64's limit; the assertions are far looser.
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"ftol": 1e-15, "maxiter": 1000},
        )
        if best is None or result.fun < best.fun:
            best = result
    return best.x, best.fun


def direction(vectors, c, rescale=1):
    w, _ = inner_weights(vectors, c)
    g0 = vectors.mean(axis=0)
    gw = w @ vectors
    d = g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw
    return d / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]


@pytest.mark.parametrize("num_tasks,gradient_at,c,rescale", [
    (2, "shared_parameters", 0.5, 1),
    (3, "shared_parameters", 0.5, 0),
    (3, "representation", 0.4, 2),
])
def test_step_is_algorithm_1(num_tasks, gradient_at, c, rescale):
    setup = ref.conflicting_setup(num_tasks, gradient_at=gradient_at)
    vectors = ref.task_vectors(setup, gradient_at)
    model, logs = tiny.run(setup, "cagrad", {"c": c, "rescale": rescale, "gradient_at": gradient_at})
    expected = direction(vectors, c, rescale)
    tiny.assert_params_close(model, ref.step(setup, expected, gradient_at), atol=2e-6, rtol=2e-5)
    # The logged weights are the coefficients of the task gradients in d.
    coefficients = tiny.logged_weights(logs[0], setup.tasks)
    np.testing.assert_allclose(coefficients @ vectors, expected, atol=1e-5, rtol=1e-4)
    # Guard: the conflict moved the step away from the (rescaled) mean gradient.
    assert not np.allclose(expected, vectors.mean(axis=0) / {0: 1, 1: 1 + c**2, 2: 1 + c}[rescale], atol=1e-4)


def test_c_zero_is_the_mean_gradient():
    setup = ref.conflicting_setup(3)
    model, logs = tiny.run(setup, "cagrad", {"c": 0.0})
    tiny.assert_params_close(model, ref.step(setup, ref.task_vectors(setup).mean(axis=0)))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [1 / 3] * 3, atol=1e-6)


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 10, 40])
def test_inner_solver_reaches_the_optimum(num_tasks):
    rng = np.random.default_rng(num_tasks)
    for _ in range(3):
        gram, vectors = ref.random_gram(rng, num_tasks)
        w = cagrad_simplex_weights(tf.constant(gram), tf.ones([num_tasks], tf.bool), 0.5).numpy()
        assert abs(w.sum() - 1) < 1e-9 and w.min() >= 0
        g0 = vectors.mean(axis=0)
        value = (w @ vectors) @ g0 + 0.5 * np.linalg.norm(g0) * np.linalg.norm(w @ vectors)
        scipy_w, scipy_value = inner_weights(vectors, 0.5, starts=2 if num_tasks > 10 else 6)
        scale = np.linalg.norm(g0) ** 2
        # Never worse than scipy (up to round-off), and the same point where scipy converged.
        assert value <= scipy_value + 1e-9 * scale
        if num_tasks <= 10:
            np.testing.assert_allclose(w, scipy_w, atol=2e-4)


def test_inner_solver_ignores_unlabelled_tasks():
    rng = np.random.default_rng(7)
    gram, vectors = ref.random_gram(rng, 4)
    mask = np.array([True, False, True, True])
    w = cagrad_simplex_weights(tf.constant(gram), tf.constant(mask), 0.5).numpy()
    kept = cagrad_simplex_weights(tf.constant(gram[np.ix_(mask, mask)]), tf.ones([3], tf.bool), 0.5).numpy()
    assert w[1] == 0.0
    # The same iterations on the same entries (the masked task never enters): at most T = 4 roundings
    # per iterate, amplified by the condition of the labelled block: 4 T cond eps.
    atol = 4 * 4 * np.linalg.cond(gram[np.ix_(mask, mask)]) * np.finfo(float).eps
    np.testing.assert_allclose(w[mask], kept, rtol=0, atol=atol)


def test_invalid_options():
    with pytest.raises(ValueError, match="cagrad c must be a finite number >= 0"):
        balancers.get("cagrad", c=-0.1)
    with pytest.raises(ValueError, match=r"cagrad rescale=3 is not valid; expected one of \[0, 1, 2\]"):
        balancers.get("cagrad", rescale=3)
