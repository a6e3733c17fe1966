"""`static` (fixed user weights, Sener & Koltun's grid baseline; Lee & Son's "ordinary" is all ones)."""

import numpy as np
import pytest

from tests.balancers import properties, tiny


@pytest.mark.parametrize(
    "weights",
    [[0.3, 1.7], {"b": 2.0, "a": 0.25}, [0.0, 1.0]],
    ids=["list", "dict", "one_task_off"],
)
def test_step_matches_hand_computed_update(weights):
    setup = tiny.make_setup(num_tasks=2, seed=5)
    vector = [weights[t] for t in setup.tasks] if isinstance(weights, dict) else weights
    model, logs = tiny.run(setup, "static", {"weights": weights})
    # Weights are used as given, not renormalised.
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, vector))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), vector, rtol=1e-7)


def test_three_tasks_two_steps():
    setup = tiny.make_setup(num_tasks=3, seed=6)
    weights = [0.2, 0.5, 0.3]
    model, logs = tiny.run(setup, "static", {"weights": weights}, epochs=2)
    expected = tiny.weighted_step(tiny.weighted_step(setup.params, setup, weights), setup, weights)
    tiny.assert_params_close(model, expected)
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=7)
    options = {"weights": {"a": 0.7, "b": 0.1, "c": 1.3}}
    logs = properties.check_permutation_equivariant(setup, "static", options, permutation=[1, 2, 0])
    properties.check_weights(logs, setup.tasks)
