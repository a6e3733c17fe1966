"""`gradvac` (Wang et al., ICLR 2021) against Algorithm 1 written out on explicit vectors.

Reference (float64): targets phi_hat start at 0; each step, for every task i
and every j != i in row i's order, phi = cos(g_i', g_j); if phi < phi_hat_ij,
g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) /
(||g_j|| sqrt(1 - phi_hat^2)) g_j; then phi_hat_ij = (1 - beta) phi_hat_ij +
beta phi. The shared update is sum_i g_i'; each head descends its own
gradient. Row i's order is the documented stream: j != i sorted by the Philox
words of a [T, T] draw keyed by (seed, step).
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from tests.balancers import tiny


def orders(seed, step, num_tasks):
    words = tf.random.stateless_uniform([num_tasks, num_tasks], seed=[seed, step], minval=None, maxval=None,
                                        dtype=tf.uint32, alg="philox").numpy().astype(np.int64)
    np.fill_diagonal(words, 2**32)
    return np.argsort(words, axis=1, kind="stable")[:, : num_tasks - 1]


def vaccine(vectors, targets, order, beta):
    """Algorithm 1 on [T, n] vectors; returns (sum_i g_i', new targets, [T] coefficient of g_t)."""
    targets = targets.copy()
    adjusted, coefficients = [], np.eye(len(vectors))
    for i, g in enumerate(vectors):
        g = g.copy()
        for j in order[i]:
            g_j = vectors[j]
            phi = g @ g_j / (np.linalg.norm(g) * np.linalg.norm(g_j))
            target = targets[i, j]
            if phi < target:
                w = np.linalg.norm(g) * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2)) / (
                    np.linalg.norm(g_j) * np.sqrt(1 - target**2))
                g = g + w * g_j
                coefficients[i, j] += w
                # Guard on the reference: the adjusted cosine is the target.
                np.testing.assert_allclose(g @ g_j / (np.linalg.norm(g) * np.linalg.norm(g_j)), target, atol=1e-9)
            targets[i, j] = (1 - beta) * target + beta * phi
        adjusted.append(g)
    return np.sum(adjusted, axis=0), targets, coefficients.sum(axis=0)


def reference_run(setup, seed, beta, steps, gradient_at="shared_parameters"):
    params, targets = setup.params, np.zeros((setup.num_tasks, setup.num_tasks))
    weights = []
    for step in range(steps):
        grads = tiny.task_gradients(params, setup)
        order = orders(seed, step, setup.num_tasks)
        if gradient_at == "shared_parameters":
            vectors = np.array([tiny.shared_vector(grads[t]) for t in setup.tasks])
            direction, targets, c = vaccine(vectors, targets, order, beta)
            size = params["W"].size
            d_W, d_b = direction[:size].reshape(params["W"].shape), direction[size:]
        else:
            vectors = np.array([grads[t]["z"].ravel() for t in setup.tasks])
            direction, targets, c = vaccine(vectors, targets, order, beta)
            d_z = direction.reshape(grads[setup.tasks[0]]["z"].shape)
            d_W, d_b = setup.x.T @ d_z, d_z.sum(axis=0)
        weights.append(c)
        new = tiny.shared_step(params, d_W, d_b)
        for t in setup.tasks:
            tiny.head_step(new, t, grads[t]["V"], grads[t]["c"])
        params = new
    return params, targets, weights


def conflicting_setup(num_tasks):
    for seed in itertools.count():
        setup = tiny.make_setup(num_tasks=num_tasks, seed=seed)
        grads = tiny.task_gradients(setup.params, setup)
        vectors = np.array([tiny.shared_vector(grads[t]) for t in setup.tasks])
        gram = vectors @ vectors.T
        if np.min(gram) < -0.05 * np.max(np.diag(gram)):
            return setup


@pytest.mark.parametrize("num_tasks,gradient_at", [(2, "shared_parameters"), (3, "shared_parameters"),
                                                   (2, "representation")])
def test_three_steps_follow_algorithm_1(num_tasks, gradient_at):
    setup = conflicting_setup(num_tasks)
    options = {"beta": 0.5, "seed": 7, "gradient_at": gradient_at}
    model, logs = tiny.run(setup, "gradvac", options, epochs=3)
    params, targets, weights = reference_run(setup, 7, 0.5, 3, gradient_at)
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(np.asarray(model.balancer.targets), targets, atol=1e-5)
    for step in range(3):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], atol=1e-5)
    # Guard: the targets moved away from 0, so later steps are not PCGrad's.
    assert np.max(np.abs(targets)) > 0.05


def test_first_step_is_pcgrads():
    # Targets start at 0: the adjustment is the projection onto g_j's normal plane.
    setup = conflicting_setup(2)
    model, _ = tiny.run(setup, "gradvac", {"seed": 1})
    pcgrad, _ = tiny.run(setup, "pcgrad", {"seed": 1})
    tiny.assert_params_close(model, tiny.model_params(pcgrad), atol=1e-6)


def _fit_steps(setup, jit_compile, seed, steps=3):
    model = tiny.build_model(setup, "gradvac", {"seed": seed, "beta": 0.5})
    model.compile(optimizer=keras.optimizers.SGD(tiny.LEARNING_RATE), jit_compile=jit_compile)
    tiny.fit(model, setup, epochs=steps)
    return tiny.model_params(model)


def test_a_seed_repeats_its_run_with_and_without_xla():
    setup = conflicting_setup(3)
    eager = _fit_steps(setup, False, 11)
    compiled = _fit_steps(setup, True, 11)
    for name in ("W", "b"):
        np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-5, atol=1e-6)
    params, _, _ = reference_run(setup, 11, 0.5, 3)
    np.testing.assert_allclose(eager["W"], params["W"], atol=1e-5)


def test_seed_is_drawn_from_pythons_random_and_kept_in_the_config():
    keras.utils.set_random_seed(5)
    a = balancers.get("gradvac")
    keras.utils.set_random_seed(5)
    assert balancers.get("gradvac").seed == a.seed
    assert a.get_config()["beta"] == 0.01


@pytest.mark.parametrize("options,message", [
    ({"seed": "x"}, "gradvac seed must be an integer"),
    ({"beta": 0.0}, r"gradvac beta must be a number in \(0, 1\]; got 0.0"),
    ({"beta": 1.5}, r"got 1.5"),
])
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("gradvac", **options)
