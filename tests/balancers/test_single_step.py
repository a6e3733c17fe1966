"""`single_step` and `split_only` (Lee & Son, Algorithm 1, eqs. 2-4) against a NumPy step.

Reference, with a = the inner step size and b = the SGD learning rate, on one
batch, first order:
  eq. 2:  theta_s^i = theta_s - a grad_{theta_s} L_i(theta_s, theta_t^i)
  eq. 3:  theta_s' = theta_s - b sum_i grad L_i evaluated at (theta_s^i, theta_t^i)
  eq. 4:  theta_t^i <- theta_t^i - b grad_{theta_t^i} L_i(theta_s', theta_t^i)
          (theta_s' the updated shared layers, `head_gradients_at="updated"`,
          or theta_s, `"original"`).
Heads take the optimizer's step b (the module's documented choice; the paper
writes a, and a = b by default). split_only is eq. 3 with the gradient of
sum_i L_i at theta_s itself (no eq. 2), then eq. 4.
"""

import numpy as np
import pytest

from tests.balancers import properties, tiny

LR = tiny.LEARNING_RATE


def reference_step(setup, method, inner_learning_rate=None, head_gradients_at="updated", params=None):
    """One step in float64; returns (new params, [T] losses at theta_s^i or None)."""
    params = params or setup.params
    a = LR if inner_learning_rate is None else inner_learning_rate
    grads = tiny.task_gradients(params, setup)
    has_bias = params["b"] is not None
    outer_W, outer_b, inner_losses = 0.0, 0.0, None
    if method == "single_step":
        inner_losses = []
        for i, t in enumerate(setup.tasks):
            moved = tiny.shared_step(params, grads[t]["W"], grads[t]["b"], lr=a)  # eq. 2
            at_moved = tiny.task_gradients(moved, setup)[t]
            outer_W = outer_W + at_moved["W"]
            outer_b = outer_b + at_moved["b"] if has_bias else None
            inner_losses.append(tiny.losses(moved, setup)[i])
    else:
        for t in setup.tasks:
            outer_W = outer_W + grads[t]["W"]
            outer_b = outer_b + grads[t]["b"] if has_bias else None
    new = tiny.shared_step(params, outer_W, outer_b, lr=LR)  # eq. 3
    head_point = new if head_gradients_at == "updated" else params
    head_grads = tiny.task_gradients(head_point, setup)  # head_point still has the old heads
    for t in setup.tasks:  # eq. 4
        tiny.head_step(new, t, head_grads[t]["V"], head_grads[t]["c"], lr=LR)
    return new, inner_losses


CASES = [
    ("single_step", {"inner_learning_rate": None, "head_gradients_at": "updated"}, 2),
    ("single_step", {"inner_learning_rate": None, "head_gradients_at": "updated"}, 3),
    ("single_step", {"inner_learning_rate": 0.5, "head_gradients_at": "updated"}, 2),
    ("single_step", {"inner_learning_rate": 0.5, "head_gradients_at": "original"}, 2),
    ("split_only", {"head_gradients_at": "updated"}, 2),
    ("split_only", {"head_gradients_at": "updated"}, 3),
    ("split_only", {"head_gradients_at": "original"}, 2),
]


@pytest.mark.parametrize("method,options,num_tasks", CASES)
def test_step_matches_hand_computed_update(method, options, num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=31, target_scales=[2.0, 0.5, 1.0][:num_tasks])
    model, logs = tiny.run(setup, method, options)
    expected, inner_losses = reference_step(setup, method, **options)
    tiny.assert_params_close(model, expected)
    np.testing.assert_array_equal(tiny.logged_weights(logs[0], setup.tasks), np.ones(num_tasks))
    for t, value in zip(setup.tasks, tiny.losses(setup.params, setup)):
        np.testing.assert_allclose(logs[0][f"{t}_loss"], value, rtol=1e-5)
    if method == "single_step":
        # The paper's Fig. 3 curve: each task's loss after its own inner step.
        for t, value in zip(setup.tasks, inner_losses):
            np.testing.assert_allclose(logs[0][f"{t}_inner_loss"], value, rtol=1e-5)
        assert np.all(np.array(inner_losses) < tiny.losses(setup.params, setup))
    else:
        assert not any(k.endswith("_inner_loss") for k in logs[0])


@pytest.mark.parametrize("method,options", [(m, o) for m, o, n in CASES if n == 2])
def test_two_steps_match(method, options):
    setup = tiny.make_setup(num_tasks=2, seed=32, bias=True)
    model, _ = tiny.run(setup, method, options, epochs=2)
    params, _ = reference_step(setup, method, **options)
    params, _ = reference_step(setup, method, **options, params=params)
    tiny.assert_params_close(model, params)


def test_the_variants_differ():
    # Guards the cases above: the inner step, its size and where the heads'
    # gradients are taken must each change the update on this problem.
    setup = tiny.make_setup(num_tasks=2, seed=31, target_scales=[2.0, 0.5])
    updates = [reference_step(setup, m, **o)[0] for m, o, n in CASES if n == 2]
    for i, first in enumerate(updates):
        for second in updates[i + 1:]:
            difference = max(np.max(np.abs(first["W"] - second["W"])),
                             max(np.max(np.abs(first["V"][t] - second["V"][t])) for t in setup.tasks))
            assert difference > 1e-4


def test_split_only_at_original_point_is_plain_sum_of_losses():
    """The module docstring's remark: without the alternation split_only is sum-of-losses training."""
    setup = tiny.make_setup(num_tasks=2, seed=33)
    model, _ = tiny.run(setup, "split_only", {"head_gradients_at": "original"})
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [1.0, 1.0]))


@pytest.mark.parametrize("method,options", [CASES[1][:2], CASES[5][:2]])
def test_properties(method, options):
    setup = tiny.make_setup(num_tasks=3, seed=31, target_scales=[2.0, 0.5, 1.0])
    logs = properties.check_permutation_equivariant(setup, method, options, permutation=[1, 2, 0])
    properties.check_weights(logs, setup.tasks)
