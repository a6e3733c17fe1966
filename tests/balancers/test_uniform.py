"""`uniform` (Sener & Koltun section 4: minimise (1/T) sum_t L_t) against a NumPy step.

Also checks the tiny problem's hand-derived reference gradients against finite
differences, since every other balancer test builds on them.
"""

import numpy as np
import pytest

from tests.balancers import properties, tiny


def _numeric_gradient(f, array, eps=1e-6):
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        up = f()
        array[index] = saved - eps
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


def test_reference_gradients_match_finite_differences():
    setup = tiny.make_setup(num_tasks=2, seed=3)
    params = setup.params
    grads = tiny.task_gradients(params, setup)
    for i, t in enumerate(setup.tasks):
        def loss():
            return tiny.losses(params, setup)[i]

        np.testing.assert_allclose(grads[t]["W"], _numeric_gradient(loss, params["W"]), atol=1e-8)
        np.testing.assert_allclose(grads[t]["b"], _numeric_gradient(loss, params["b"]), atol=1e-8)
        np.testing.assert_allclose(grads[t]["V"], _numeric_gradient(loss, params["V"][t]), atol=1e-8)
        np.testing.assert_allclose(grads[t]["c"], _numeric_gradient(loss, params["c"][t]), atol=1e-8)
        other = setup.tasks[1 - i]
        assert np.all(_numeric_gradient(loss, params["V"][other]) == 0)
        # dL/dz: perturb the representation through b's broadcast, row by row.
        z = tiny.representation(params, setup.x)

        def loss_of_z():
            p = z @ params["V"][t] + params["c"][t]
            return np.mean((p - setup.y[t]) ** 2)

        np.testing.assert_allclose(grads[t]["z"], _numeric_gradient(loss_of_z, z), atol=1e-8)


@pytest.mark.parametrize("num_tasks,bias", [(2, True), (3, True), (2, False)])
def test_step_matches_hand_computed_update(num_tasks, bias):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=1, bias=bias)
    model, logs = tiny.run(setup, "uniform")
    weights = np.full(num_tasks, 1.0 / num_tasks)
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, weights))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), weights, rtol=1e-7)
    expected_losses = tiny.losses(setup.params, setup)
    for t, value in zip(setup.tasks, expected_losses):
        np.testing.assert_allclose(logs[0][f"{t}_loss"], value, rtol=1e-5)
    np.testing.assert_allclose(logs[0]["loss"], expected_losses.sum(), rtol=1e-5)
    assert logs[0]["skipped_update"] == 0.0


def test_fit_on_arrays_takes_the_same_step():
    """The helpers feed a one-batch dataset; `fit(x, y, batch_size=B)` on arrays is the same step."""
    setup = tiny.make_setup(num_tasks=2, seed=1)
    model = tiny.build_model(setup, "uniform")
    x = setup.x.astype("float32")
    y = {t: setup.y[t].astype("float32") for t in setup.tasks}
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [0.5, 0.5]))
    assert history.history["a_weight"] == [0.5] and history.history["b_weight"] == [0.5]
    np.testing.assert_allclose(history.history["a_loss"], tiny.losses(setup.params, setup)[:1], rtol=1e-5)


def test_two_steps_match():
    setup = tiny.make_setup(num_tasks=2, seed=2)
    model, logs = tiny.run(setup, "uniform", epochs=2)
    expected = tiny.weighted_step(setup.params, setup, [0.5, 0.5])
    expected_losses = tiny.losses(expected, setup)
    expected = tiny.weighted_step(expected, setup, [0.5, 0.5])
    tiny.assert_params_close(model, expected)
    for t, value in zip(setup.tasks, expected_losses):
        np.testing.assert_allclose(logs[1][f"{t}_loss"], value, rtol=1e-5)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=4)
    logs = properties.check_permutation_equivariant(setup, "uniform", permutation=[2, 0, 1])
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)
