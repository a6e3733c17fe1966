"""`db_mtl` (Lin et al., arXiv 2308.12029) against its rules written out in NumPy.

Reference (float64), per step k = 1, 2, ...: g_t = grad_sh L_t / (L_t + 1e-8)
(the log loss), g_hat_t = beta_k g_hat_t + (1 - beta_k) g_t from g_hat_t = 0
with beta_k = beta / k^sigma, the shared update sum_t (max_s ||g_hat_s|| /
||g_hat_t||) g_hat_t, and each head descends grad log(L_t + 1e-8).
"""

import numpy as np
import pytest

from mtl_tf import balancers
from tests.balancers import tiny


def reference_run(setup, steps, beta=0.9, sigma=0.0, epsilon=1e-8):
    params = setup.params
    ema = np.zeros((setup.num_tasks, params["W"].size + params["b"].size))
    factors = []
    for k in range(1, steps + 1):
        grads = tiny.task_gradients(params, setup)
        losses = tiny.losses(params, setup)
        g = np.array([tiny.shared_vector(grads[t]) / (losses[i] + epsilon) for i, t in enumerate(setup.tasks)])
        beta_k = beta / k**sigma
        ema = beta_k * ema + (1.0 - beta_k) * g
        norms = np.linalg.norm(ema, axis=1)
        factor = norms.max() / norms
        factors.append(factor)
        direction = factor @ ema
        size = params["W"].size
        new = tiny.shared_step(params, direction[:size].reshape(params["W"].shape), direction[size:])
        for i, t in enumerate(setup.tasks):
            scale = 1.0 / (losses[i] + epsilon)
            tiny.head_step(new, t, scale * grads[t]["V"], scale * grads[t]["c"])
        params = new
    return params, ema, factors


@pytest.mark.parametrize("num_tasks,options", [
    (2, {}),
    (3, {"beta": 0.5, "beta_sigma": 0.5}),
])
def test_three_steps_follow_the_rules(num_tasks, options):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=5, target_scales=[1.0, 4.0, 0.3][:num_tasks])
    model, logs = tiny.run(setup, "db_mtl", options, epochs=3)
    params, ema, factors = reference_run(setup, 3, options.get("beta", 0.9), options.get("beta_sigma", 0.0))
    tiny.assert_params_close(model, params)
    for step in range(3):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), factors[step], rtol=1e-5)
    tracked = np.concatenate([np.asarray(y).reshape(num_tasks, -1) for y in model.balancer.tracked], axis=1)
    np.testing.assert_allclose(tracked, ema, rtol=1e-5, atol=1e-7)
    assert float(model.balancer.steps) == 3.0
    # Guard: the losses differ in scale, so the factors are not all 1.
    assert np.ptp(factors[0]) > 0.1


def test_state_is_one_gradient_copy_per_task():
    setup = tiny.make_setup(num_tasks=3, seed=5)
    model, _ = tiny.run(setup, "db_mtl", {}, epochs=1)
    shapes = [tuple(v.shape) for v in model.balancer.tracked]
    assert shapes == [(3, *v.shape) for v in model.encoder.trainable_variables]
    paths = [v.path for v in model.balancer.variables]
    assert len(paths) == len(set(paths)) == 1 + len(shapes)


def test_built_for_shared_variables_before_the_first_step():
    balancer = balancers.get("db_mtl")
    balancer.build_for_tasks(("a", "b"))
    import keras

    variables = [keras.Variable(np.zeros((3, 2), "float32")), keras.Variable(np.zeros(2, "float32"))]
    balancer.build_for_shared_variables(variables)
    assert [tuple(v.shape) for v in balancer.tracked] == [(2, 3, 2), (2, 2)]


@pytest.mark.parametrize("options,message", [
    ({"beta": 1.0}, r"db_mtl beta must be a number in \[0, 1\); got 1.0"),
    ({"beta_sigma": -1.0}, r"db_mtl beta_sigma must be a finite number >= 0; got -1.0"),
    ({"epsilon": float("nan")}, r"db_mtl epsilon must be a finite number >= 0"),
])
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("db_mtl", **options)


def test_resetting_the_build_time_state_resets_the_tracked_gradients():
    # tiny.run reuses a compiled model and resets the variables that existed
    # when it was built (the step count, not the lazily created EMAs).
    setup = tiny.make_setup(num_tasks=2, seed=9)
    first = tiny.model_params(tiny.run(setup, "db_mtl", {"beta_sigma": 1.0}, epochs=2)[0])
    again, _ = tiny.run(setup, "db_mtl", {"beta_sigma": 1.0}, epochs=2)
    # The same compiled steps on the same inputs and seeds: equal bit for bit.
    tiny.assert_params_close(again, first, atol=0, rtol=0)
    tiny.assert_params_close(again, reference_run(setup, 2, 0.9, 1.0)[0])
