"""`nash_mtl` (Navon et al., ICML 2022) against Theorem 3.1 on explicit vectors.

Reference: alpha > 0 with alpha_t <g_t, d> = 1 for every task, d = sum_t alpha_t
g_t (the bargaining solution's condition), found by scipy's root finder on the
vectors; the shared parameters step by d (clipped to max_norm when given), each
head by its own gradient.
"""

import dataclasses

import numpy as np
import pytest
import scipy.optimize

from mtl_tf import balancers
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny


def bargaining_weights(vectors):
    # In log coordinates (a = e^u) so the root finder stays in a > 0. tol=1e-13 is scipy's stopping
    # tolerance (500 eps: the reference stops where float64 stops improving), not an assertion.
    result = scipy.optimize.root(lambda u: np.exp(u) * (vectors @ (np.exp(u) @ vectors)) - 1.0,
                                 -np.log(np.linalg.norm(vectors, axis=1)), tol=1e-13)
    assert np.max(np.abs(np.exp(result.x) * (vectors @ (np.exp(result.x) @ vectors)) - 1.0)) < 1e-9, result.message
    return np.exp(result.x)


@pytest.mark.parametrize("num_tasks,gradient_at", [(2, "shared_parameters"), (3, "shared_parameters"),
                                                   (3, "representation")])
def test_step_is_the_bargaining_solution(num_tasks, gradient_at):
    setup = ref.conflicting_setup(num_tasks, gradient_at=gradient_at)
    vectors = ref.task_vectors(setup, gradient_at)
    alpha = bargaining_weights(vectors)
    model, logs = tiny.run(setup, "nash_mtl", {"gradient_at": gradient_at})
    tiny.assert_params_close(model, ref.step(setup, alpha @ vectors, gradient_at))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, rtol=1e-5)
    # Theorem 3.1's consequence: ||d||^2 = T.
    np.testing.assert_allclose(np.sum((alpha @ vectors) ** 2), num_tasks, rtol=1e-9)


def test_max_norm_clips_the_shared_step():
    setup = ref.conflicting_setup(3)
    vectors = ref.task_vectors(setup)
    d = bargaining_weights(vectors) @ vectors  # ||d|| = sqrt(3) > 1
    model, logs = tiny.run(setup, "nash_mtl", {"max_norm": 1.0})
    tiny.assert_params_close(model, ref.step(setup, d / np.linalg.norm(d)))
    np.testing.assert_allclose(logs[0]["clip_factor"], 1 / np.sqrt(3), rtol=1e-5)


def test_weights_are_reused_between_updates():
    setup = ref.conflicting_setup(2)
    model, logs = tiny.run(setup, "nash_mtl", {"update_weights_every": 2}, epochs=3)
    current, alpha = setup, None
    for step in range(3):
        vectors = ref.task_vectors(current)
        if step % 2 == 0:
            alpha = bargaining_weights(vectors)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha, rtol=1e-5)
        current = dataclasses.replace(current, params=ref.step(current, alpha @ vectors))
    tiny.assert_params_close(model, current.params, atol=2e-5, rtol=2e-5)


def test_invalid_options():
    with pytest.raises(ValueError, match="nash_mtl update_weights_every must be an integer >= 1"):
        balancers.get("nash_mtl", update_weights_every=0)
    with pytest.raises(ValueError, match="nash_mtl max_norm must be a finite number >= 0"):
        balancers.get("nash_mtl", max_norm=-1.0)
