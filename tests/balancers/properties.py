"""Property checks shared by every method that produces task weights.

Each method's test module parametrises these over its method and options:

* `check_weights` - the logged `{task}_weight` of every step are finite and,
  where the method promises it, on the simplex (MGDA's alpha) or on a scaled
  simplex / L1 sphere (Pareto MTL's weights are rescaled to sum |w_t| = T).
* `check_permutation_equivariant` - listing the heads in another order
  permutes the weights and changes nothing else: after the same steps every
  variable (shared and per head) and every per-task log agree by task name.
* `check_common_descent` - MGDA's combined direction d = sum_t alpha_t g_t
  satisfies g_t . d >= -tol for every task t (it is a descent direction for
  every task), unless the point is Pareto-stationary (||d|| ~ 0).
"""

from __future__ import annotations

import numpy as np

from tests.balancers import tiny


def weight_history(step_logs, tasks):
    """[steps, T] logged task weights, in the order of `tasks`."""
    return np.array([tiny.logged_weights(s, tasks) for s in step_logs])


def check_weights(step_logs, tasks, simplex_total=None, abs_total=None, atol=1e-5):
    """Finite weights at every step; optionally w >= 0 with sum w = simplex_total,
    or sum |w| = abs_total."""
    weights = weight_history(step_logs, tasks)
    assert weights.shape == (len(step_logs), len(tasks))
    assert np.all(np.isfinite(weights)), f"non-finite task weights {weights}"
    if simplex_total is not None:
        assert np.all(weights >= -atol), f"negative weights {weights}, expected w >= 0"
        np.testing.assert_allclose(weights.sum(axis=1), simplex_total, atol=atol * simplex_total,
                                   err_msg=f"weights {weights} should sum to {simplex_total}")
    if abs_total is not None:
        np.testing.assert_allclose(np.abs(weights).sum(axis=1), abs_total, atol=atol * abs_total,
                                   err_msg=f"weights {weights} should have sum |w| = {abs_total}")
    return weights


def check_permutation_equivariant(setup, method, options=None, permutation=None, epochs=2, atol=1e-5):
    """Training with the heads listed in a permuted order gives the same model, task by task.

    Compares the logged weights (by task name, so the permuted run's head-order
    weight vector must be the permutation of the original one), the per-task
    losses and every variable after `epochs` steps. Options must be given per
    task by name (dicts), not as lists in head order.
    """
    tasks = setup.tasks
    permutation = permutation or list(reversed(range(len(tasks))))
    permuted = tuple(tasks[i] for i in permutation)
    assert permuted != tasks, "choose a permutation that changes the order"
    model, logs = tiny.run(setup, method, options, epochs=epochs)
    model_p, logs_p = tiny.run(setup, method, options, epochs=epochs, tasks=permuted)
    assert model_p.task_names == permuted
    for step, (original, other) in enumerate(zip(logs, logs_p)):
        np.testing.assert_allclose(
            tiny.logged_weights(other, permuted),
            tiny.logged_weights(original, tasks)[permutation],
            atol=atol, rtol=atol, err_msg=f"{method}: weights of step {step + 1} are not permuted with the heads",
        )
        for key in original:
            if key.endswith("_loss") or key.endswith("_inner_loss"):
                np.testing.assert_allclose(other[key], original[key], atol=atol, rtol=atol, err_msg=key)
    tiny.assert_params_close(model_p, tiny.model_params(model), atol=atol, rtol=atol)
    return logs


def check_common_descent(task_gradients, alpha, tol=1e-6, stationary_tol=1e-4):
    """g_t . d >= -tol * max ||g||^2 for d = sum alpha_t g_t, or ||d|| ~ 0 (Pareto-stationary).

    task_gradients: [T, n] (one flattened gradient per task). Returns True when
    the point was judged Pareto-stationary.
    """
    g = np.asarray(task_gradients, np.float64)
    alpha = np.asarray(alpha, np.float64)
    scale = np.max(np.sum(g**2, axis=1))
    d = alpha @ g
    if np.linalg.norm(d) <= stationary_tol * np.sqrt(scale):
        return True
    products = g @ d
    assert np.all(products >= -tol * scale), (
        f"d = sum alpha_t g_t is not a descent direction for every task: g_t . d = {products}, alpha = {alpha}"
    )
    return False
