"""`fairgrad` (Ban & Ji, ICML 2024) against its weight equation on explicit vectors.

Reference: w > 0 with <g_t, d> = w_t^(-1/alpha) for every task, d = sum_t w_t
g_t (G^T G w = w^(-1/alpha)), found by scipy's root finder on the vectors; the
shared parameters step by d, each head by its own gradient.
"""

import numpy as np
import pytest
import scipy.optimize

from mtl_tf import balancers
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny


def fair_weights_of(vectors, alpha):
    # In log coordinates (w = e^u) so the root finder stays in w > 0. tol=1e-13 is scipy's stopping
    # tolerance (500 eps: the reference stops where float64 stops improving), not an assertion.
    result = scipy.optimize.root(lambda u: vectors @ (np.exp(u) @ vectors) - np.exp(-u / alpha),
                                 -np.log(np.linalg.norm(vectors, axis=1)), tol=1e-13)
    assert np.max(np.abs(vectors @ (np.exp(result.x) @ vectors) - np.exp(-result.x / alpha))) < 1e-9, result.message
    return np.exp(result.x)


@pytest.mark.parametrize("num_tasks,alpha,gradient_at", [(2, 1.0, "shared_parameters"), (3, 2.0, "shared_parameters"),
                                                         (3, 0.5, "representation")])
def test_step_solves_the_fairness_equation(num_tasks, alpha, gradient_at):
    setup = ref.conflicting_setup(num_tasks, gradient_at=gradient_at)
    vectors = ref.task_vectors(setup, gradient_at)
    w = fair_weights_of(vectors, alpha)
    model, logs = tiny.run(setup, "fairgrad", {"alpha": alpha, "gradient_at": gradient_at})
    tiny.assert_params_close(model, ref.step(setup, w @ vectors, gradient_at))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), w, rtol=1e-5)


def test_alpha_one_is_nash_mtl():
    setup = ref.conflicting_setup(3)
    fair, _ = tiny.run(setup, "fairgrad", {"alpha": 1.0})
    nash, _ = tiny.run(setup, "nash_mtl", {})
    tiny.assert_params_close(fair, tiny.model_params(nash), atol=1e-6, rtol=1e-6)


def test_max_norm_clips_the_shared_step():
    setup = ref.conflicting_setup(2)
    vectors = ref.task_vectors(setup)
    d = fair_weights_of(vectors, 2.0) @ vectors
    limit = 0.5 * np.linalg.norm(d)
    model, _ = tiny.run(setup, "fairgrad", {"alpha": 2.0, "max_norm": float(limit)})
    tiny.assert_params_close(model, ref.step(setup, 0.5 * d))


def test_invalid_options():
    with pytest.raises(ValueError, match="fairgrad alpha must be a positive finite number"):
        balancers.get("fairgrad", alpha=0.0)
    with pytest.raises(ValueError, match="fairgrad max_norm must be a finite number >= 0"):
        balancers.get("fairgrad", max_norm=float("inf"))
