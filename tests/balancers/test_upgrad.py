"""`upgrad` and `dualproj` (Quinton & Rey, 2024) against projections onto the dual cone computed on the vectors.

The dual cone of the task gradients is C = {d : <g_t, d> >= 0 for all t}.
References: for two conflicting tasks the projection of g_1 onto C is
g_1 - <g_1, g_2> / ||g_2||^2 g_2 (the paper's picture); in general it is
argmin_{G d >= 0} ||d - g||^2, solved by scipy in parameter space (not through
the Gramian). UPGrad: d = mean_i pi_C(g_i); DualProj: d = pi_C(mean_i g_i).
With TorchJD's default regularisation (reg_eps = 1e-4 on the trace-normalised
Gramian) the reference is TorchJD's program min_{v >= u} v^T (K / tr K + reg I) v,
solved by enumerating its active sets.
"""

import numpy as np
import pytest
import scipy.optimize

from mtl_tf import balancers
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny
from tests.test_solvers_qp import brute_force


def project(vector, vectors):
    """pi_C(vector) by scipy's SLSQP in the vectors' own space (ftol 1e-16: run to float64's limit)."""
    result = scipy.optimize.minimize(
        lambda d: 0.5 * np.sum((d - vector) ** 2), vector, jac=lambda d: d - vector, method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda d: vectors @ d, "jac": lambda d: vectors}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    assert np.all(vectors @ result.x >= -1e-9)
    return result.x


def torchjd_weights(vectors, u, reg_eps=1e-4):
    gram = vectors @ vectors.T
    gram = gram / np.trace(gram) + reg_eps * np.eye(len(gram))
    return np.array([brute_force(2 * gram, np.zeros(len(gram)), row, False)[0] for row in np.atleast_2d(u)])


@pytest.mark.parametrize("gradient_at", ("shared_parameters", "representation"))
def test_two_conflicting_tasks_take_the_papers_projections(gradient_at):
    setup = ref.conflicting_setup(2, gradient_at=gradient_at)
    g1, g2 = ref.task_vectors(setup, gradient_at)
    assert g1 @ g2 < 0
    projected_1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    projected_2 = g2 - (g1 @ g2) / (g1 @ g1) * g1
    expected = 0.5 * (projected_1 + projected_2)
    model, logs = tiny.run(setup, "upgrad", {"reg_eps": 0.0, "gradient_at": gradient_at})
    tiny.assert_params_close(model, ref.step(setup, expected, gradient_at))
    # Guard: the projections changed the step (the mean gradient is another point).
    assert not np.allclose(expected, 0.5 * (g1 + g2), atol=1e-4)


def test_upgrad_three_tasks_is_the_mean_of_the_projections():
    setup = ref.conflicting_setup(3)
    vectors = ref.task_vectors(setup)
    expected = np.mean([project(g, vectors) for g in vectors], axis=0)
    model, logs = tiny.run(setup, "upgrad", {"reg_eps": 0.0})
    tiny.assert_params_close(model, ref.step(setup, expected), atol=2e-6, rtol=2e-5)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks) @ vectors, expected, atol=1e-5, rtol=1e-4)


def test_dualproj_three_tasks_is_the_projected_mean():
    # Unbalanced targets: the mean gradient increases the first task's loss.
    setup = tiny.make_setup(num_tasks=3, seed=1, target_scales=[3.0, 1.0, 0.3])
    vectors = ref.task_vectors(setup)
    assert np.min(vectors @ vectors.mean(axis=0)) < 0
    expected = project(vectors.mean(axis=0), vectors)
    assert not np.allclose(expected, vectors.mean(axis=0), atol=1e-4)
    model, _ = tiny.run(setup, "dualproj", {"reg_eps": 0.0})
    tiny.assert_params_close(model, ref.step(setup, expected), atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_default_options_are_torchjds_program(method):
    setup = ref.conflicting_setup(3, start=5)
    vectors = ref.task_vectors(setup)
    if method == "upgrad":
        weights = torchjd_weights(vectors, np.eye(3) / 3).sum(axis=0)
    else:
        weights = torchjd_weights(vectors, np.ones(3) / 3)[0]
    model, logs = tiny.run(setup, method, {})
    tiny.assert_params_close(model, ref.step(setup, weights @ vectors), atol=2e-6, rtol=2e-5)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), weights, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_agreeing_tasks_take_the_mean_gradient(method):
    for seed in range(100):
        setup = tiny.make_setup(num_tasks=3, seed=seed)
        vectors = ref.task_vectors(setup)
        gram = vectors @ vectors.T
        if gram.min() > 0:
            break
    model, logs = tiny.run(setup, method, {})
    tiny.assert_params_close(model, ref.step(setup, vectors.mean(axis=0)))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [1 / 3] * 3, atol=1e-6)


@pytest.mark.parametrize("method", ["upgrad", "dualproj"])
def test_invalid_options(method):
    with pytest.raises(ValueError, match=f"{method} reg_eps must be a finite number >= 0"):
        balancers.get(method, reg_eps=-1e-4)
    with pytest.raises(ValueError, match=f"{method} norm_eps must be a finite number >= 0"):
        balancers.get(method, norm_eps=float("nan"))
