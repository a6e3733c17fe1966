"""`moco` (Fernando et al., ICLR 2023) against Algorithm 1 written out in NumPy.

Reference (float64), per step k = 1, 2, ...: h_t = the shared-parameter gradient
of L_t (or L_t h_t / ||h_t|| with the loss normalisation), y_t -= beta_k (y_t -
h_t), lambda = Proj_simplex(lambda - gamma_k (Y^T Y + rho I) lambda) (or the
softmax of that vector), the shared update sum_t lambda_t y_t, each head on
its own gradient; y = 0 and lambda = 1/T at the start, beta_k = beta /
k^beta_sigma, gamma_k = gamma / k^gamma_sigma. The projection here is found
by bisection on the threshold (an algorithm other than the module's sort).
"""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers import moco
from tests.balancers import tiny
from tests.balancers.simplex_reference import bisection_projection, projection_tolerance


def simplex_projection(v):
    """argmin_{w in simplex} ||w - v||: w = max(v - theta, 0) with sum w = 1, theta by bisection."""
    low, high = v.min() - 1.0, v.max()
    for _ in range(200):
        theta = 0.5 * (low + high)
        if np.maximum(v - theta, 0.0).sum() > 1.0:
            low = theta
        else:
            high = theta
    return np.maximum(v - 0.5 * (low + high), 0.0)


def reference_run(setup, steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0,
                  normalization="none", update="projection"):
    params = setup.params
    T = setup.num_tasks
    y = np.zeros((T, params["W"].size + params["b"].size))
    lam = np.full(T, 1.0 / T)
    history = []
    for k in range(1, steps + 1):
        grads = tiny.task_gradients(params, setup)
        h = np.array([tiny.shared_vector(grads[t]) for t in setup.tasks])
        if normalization == "loss":
            h = h / np.linalg.norm(h, axis=1, keepdims=True) * tiny.losses(params, setup)[:, None]
        y = y - beta / k**beta_sigma * (y - h)
        stepped = lam - gamma / k**gamma_sigma * (y @ y.T + rho * np.eye(T)) @ lam
        if update == "projection":
            lam = simplex_projection(stepped)
        else:
            lam = np.exp(stepped - stepped.max()) / np.exp(stepped - stepped.max()).sum()
        history.append(lam)
        direction = lam @ y
        size = params["W"].size
        new = tiny.shared_step(params, direction[:size].reshape(params["W"].shape), direction[size:])
        for t in setup.tasks:
            tiny.head_step(new, t, grads[t]["V"], grads[t]["c"])
        params = new
    return params, y, history


CASES = [
    (2, {}),
    (3, {"gamma": 2.0, "rho": 0.1}),
    (3, {"gradient_normalization": "loss", "lambda_update": "softmax", "beta": 0.8, "gamma_sigma": 0.0}),
]


@pytest.mark.parametrize("num_tasks,options", CASES)
def test_three_steps_follow_algorithm_1(num_tasks, options):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=8, target_scales=[1.0, 3.0, 0.5][:num_tasks])
    model, logs = tiny.run(setup, "moco", options, epochs=3)
    names = {"gradient_normalization": "normalization", "lambda_update": "update"}
    params, y, history = reference_run(setup, 3, **{names.get(k, k): v for k, v in options.items()})
    tiny.assert_params_close(model, params)
    for step in range(3):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), history[step], atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.balancer.lambdas), history[-1], atol=1e-5)
    tracked = np.concatenate([np.asarray(v).reshape(num_tasks, -1) for v in model.balancer.tracked], axis=1)
    np.testing.assert_allclose(tracked, y, rtol=1e-5, atol=1e-7)
    # Guard: lambda moved away from uniform.
    assert np.ptp(history[-1]) > 1e-3


def test_projection_onto_the_simplex():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.normal(size=5) * rng.choice([0.1, 1.0, 5.0])
        mask = rng.random(5) < 0.7
        got = moco.project_to_simplex(tf.constant(v, tf.float32), tf.constant(mask)).numpy()
        want = np.zeros(5)
        if mask.any():
            want[mask] = simplex_projection(v[mask])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_defaults_are_libmtls_and_the_papers():
    config = balancers.get("moco").get_config()
    assert {k: config[k] for k in ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho")} == {
        "beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0}
    assert config["gradient_normalization"] == "none" and config["lambda_update"] == "projection"


@pytest.mark.parametrize("options,message", [
    ({"beta": 0.0}, r"moco beta must be a number in \(0, 1\]; got 0.0"),
    ({"gamma": -1.0}, r"moco gamma must be a finite number >= 0; got -1.0"),
    ({"lambda_update": "mirror"}, r"lambda_update='mirror' is not valid"),
    ({"gradient_normalization": "l2"}, r"gradient_normalization='l2' is not valid"),
])
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("moco", **options)


def test_resetting_the_build_time_state_resets_the_tracked_gradients():
    setup = tiny.make_setup(num_tasks=2, seed=9)
    first = tiny.model_params(tiny.run(setup, "moco", {"rho": 0.5}, epochs=2)[0])
    again, _ = tiny.run(setup, "moco", {"rho": 0.5}, epochs=2)
    # The same compiled steps on the same inputs and seeds: equal bit for bit.
    tiny.assert_params_close(again, first, atol=0, rtol=0)
    tiny.assert_params_close(again, reference_run(setup, 2, rho=0.5)[0])


@pytest.mark.parametrize("scale", [10.0 ** k for k in range(-8, 13)])
def test_projection_is_exact_in_float32_at_every_scale(scale):
    rng = np.random.default_rng(int(np.log10(scale)) + 8)
    for num in (2, 3, 5):
        cases = [
            scale * rng.normal(size=num),  # spread at the scale: mostly a vertex or an edge
            scale + rng.uniform(-1.0, 1.0, size=num),  # differences of order 1 on top of the scale
            scale * (1.0 + 1e-7 * rng.normal(size=num)),  # a few float32 ulps apart
        ]
        for v in cases:
            v = np.asarray(v, np.float32)
            for mask in (np.ones(num, bool), rng.random(num) < 0.7):
                got = moco.project_to_simplex(tf.constant(v), tf.constant(mask)).numpy().astype(np.float64)
                want = np.zeros(num)
                if mask.any():
                    want[mask] = bisection_projection(v[mask])
                tol = projection_tolerance(num)
                np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"v={v!r} mask={mask}")
                if mask.any():
                    assert abs(got.sum() - 1.0) <= tol and np.all(got >= 0), got


def test_projection_of_the_issues_input():
    """[1e8, 1e8 + 100] in float32: the old sums lost the -1 and gave [0, 0], so the encoder never moved."""
    v = np.array([1e8, 1e8 + 100], np.float32)  # 1e8 + 100 rounds to 100000096 (ulp 8)
    got = moco.project_to_simplex(tf.constant(v), tf.constant([True, True])).numpy()
    np.testing.assert_array_equal(got, [0.0, 1.0])
    # Spread of exactly 1: the first entry is on the boundary of the active set.
    got = moco.project_to_simplex(tf.constant([1e3, 1e3 + 0.5], tf.float32), tf.constant([True, True])).numpy()
    np.testing.assert_allclose(got, [0.25, 0.75], atol=projection_tolerance(2))


def test_huge_gradients_still_move_the_encoder():
    """Targets of 1e12: lambda's projected step sees values near 1e23; the weights stay on the simplex."""
    import keras

    import mtl_tf

    keras.utils.set_random_seed(0)
    encoder = keras.layers.Dense(2, kernel_initializer="ones", name="encoder")
    heads = {"a": keras.layers.Dense(1, name="head_a"), "b": keras.layers.Dense(1, name="head_b")}
    model = mtl_tf.MultiTaskModel(encoder, heads, {"a": "mse", "b": "mse"}, balancer="moco")
    model.compile(optimizer=keras.optimizers.SGD(1e-14))  # gradients ~1e13: steps of order 0.1
    x = np.ones((4, 3), "float32")
    y = {"a": np.full((4, 1), 1e12, "float32"), "b": np.full((4, 1), -2e12, "float32")}
    model.build((None, 3))
    before = np.array(encoder.kernel)
    recorder = tiny.StepLogs()
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[recorder])
    for step in recorder.steps:
        weights = np.array([step["a_weight"], step["b_weight"]])
        assert np.all(weights >= 0) and abs(weights.sum() - 1.0) <= 1e-6, weights
    assert not np.array_equal(np.array(encoder.kernel), before), "the encoder never moved"
