"""The array harness (`tests/balancers/array_problem.py`) is the tiny problem's exact gradients, on any backend.

Its gradients are checked against `tiny.task_gradients` (float64 NumPy, derived by
hand); on TensorFlow, one SGD step of a method through the harness equals one
`model.fit` step through the TensorFlow engine, so the cross-backend comparison
of `tests/engines/test_same_values.py` rests on the same updates the method
tests check against their NumPy references.
"""

import keras
import numpy as np
import pytest

from mtl_tf import balancers
from tests import backends
from tests.balancers import tiny
from tests.balancers.array_problem import ArrayProblem, make_variables, sgd_step

# float32 arithmetic on values of order 1 against float64: a few roundings of 6e-8 each.
TOLERANCE = 1e-5


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def test_gradients_are_the_hand_derived_ones():
    setup = tiny.make_setup(num_tasks=3, seed=5)
    expected = tiny.task_gradients(setup.params, setup)
    problem = ArrayProblem(setup)
    z = problem.encode()
    losses, representation_grads, heads = problem.representation_gradients(z)
    np.testing.assert_allclose([numpy(v) for v in losses], tiny.losses(setup.params, setup), rtol=TOLERANCE)
    for i, t in enumerate(setup.tasks):
        np.testing.assert_allclose(numpy(representation_grads[i]), expected[t]["z"], atol=TOLERANCE)
        weight, bias = problem.encoder_backward(representation_grads[i])
        np.testing.assert_allclose(numpy(weight), expected[t]["W"], atol=TOLERANCE)
        np.testing.assert_allclose(numpy(bias), expected[t]["b"], atol=TOLERANCE)
        np.testing.assert_allclose(numpy(heads[t][0]), expected[t]["V"], atol=TOLERANCE)
        np.testing.assert_allclose(numpy(heads[t][1]), expected[t]["c"], atol=TOLERANCE)
    stacked = problem.encoder_backward_stacked(keras.ops.stack(representation_grads))
    np.testing.assert_allclose(numpy(stacked[0]), [expected[t]["W"] for t in setup.tasks], atol=TOLERANCE)


def test_objective_and_stateless_gradients_are_exact():
    setup = tiny.make_setup(num_tasks=2, seed=6)
    expected = tiny.task_gradients(setup.params, setup)
    problem = ArrayProblem(setup, loss_scale=4.0)
    losses, shared, heads, _, _ = problem.objective_gradients(lambda L: (2.0 * L[0] + L[1] ** 2, None))
    values = tiny.losses(setup.params, setup)
    weights = 4.0 * np.array([2.0, 2.0 * values[1]])  # d(S objective)/dL_t
    want_W = sum(w * expected[t]["W"] for w, t in zip(weights, setup.tasks))
    np.testing.assert_allclose(numpy(shared[0]), want_W, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(numpy(heads["b"][0]), weights[1] * expected["b"]["V"], rtol=TOLERANCE, atol=TOLERANCE)
    # value_and_gradients at moved shared weights: the gradient of L_a there, against the closed form.
    moved = {**setup.params, "W": setup.params["W"] + 0.25}

    def loss_a(point):
        _, (loss,) = problem.heads_with(problem.encode_with(point), tasks=["a"])
        return loss, loss

    (value, _), grads = problem.value_and_gradients(
        loss_a, [keras.ops.convert_to_tensor(moved["W"].astype("float32")),
                 keras.ops.convert_to_tensor(moved["b"].astype("float32"))])
    np.testing.assert_allclose(numpy(value), tiny.losses(moved, setup)[0], rtol=TOLERANCE)
    np.testing.assert_allclose(numpy(grads[0]), tiny.task_gradients(moved, setup)["a"]["W"], atol=TOLERANCE)


@pytest.mark.skipif(backends.keras_backend() != "tensorflow", reason="compares with the TensorFlow engine's fit step")
@pytest.mark.parametrize("name, options, num_tasks", [
    ("mgda", {}, 3), ("mgda_ub", {}, 3), ("pcgrad", {}, 2), ("cagrad", {}, 3), ("nash_mtl", {}, 3),
    ("uncertainty", {"task_types": {"a": "regression", "b": "regression"}}, 2), ("single_step", {}, 2),
    ("gradnorm", {}, 3), ("dwa", {}, 3),
])
def test_one_harness_step_equals_one_fit_step_of_the_tensorflow_engine(name, options, num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=7)
    model, _ = tiny.run(setup, name, options)
    method = balancers.get(name, **options)
    method.build_for_tasks(setup.tasks, losses={t: keras.losses.MeanSquaredError() for t in setup.tasks})
    variables = make_variables(setup)
    problem = ArrayProblem(setup, method, variables=variables)
    sgd_step(problem, method.compute_update(problem), method)
    fitted = tiny.model_params(model)
    np.testing.assert_allclose(numpy(variables["W"]), fitted["W"], rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(numpy(variables["b"]), fitted["b"], rtol=TOLERANCE, atol=TOLERANCE)
    for t in setup.tasks:
        np.testing.assert_allclose(numpy(variables["V"][t]), fitted["V"][t], rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(numpy(variables["c"][t]), fitted["c"][t], rtol=TOLERANCE, atol=TOLERANCE)
