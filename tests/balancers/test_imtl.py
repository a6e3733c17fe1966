"""`imtl` (Liu et al., ICLR 2021) against the paper's closed form and Algorithm 1 on explicit vectors.

IMTL-G reference (eq. 9): D rows g_1 - g_t, U rows u_1 - u_t (u = g / ||g||),
alpha_{2:T} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum; d = sum alpha_t g_t.
Hybrid reference (Algorithm 1): the gradients are those of e^{s_t} L_t, the
heads descend them, s_t <- s_t - lr (e^{s_t} L_t - 1); s starts at 0.
IMTL-L reference: one SGD step on sum_t e^{s_t} L_t - s_t.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers.imtl import imtl_g_weights
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny


def closed_form(vectors):
    """alpha of eq. 9 on explicit vectors [T, n]."""
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    D = vectors[:1] - vectors[1:]
    U = units[:1] - units[1:]
    rest = vectors[0] @ U.T @ np.linalg.inv(D @ U.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


@pytest.mark.parametrize("num_tasks,gradient_at", [(2, "shared_parameters"), (3, "shared_parameters"),
                                                   (3, "representation")])
def test_imtl_g_is_the_closed_form(num_tasks, gradient_at):
    setup = ref.conflicting_setup(num_tasks, gradient_at=gradient_at)
    vectors = ref.task_vectors(setup, gradient_at)
    alpha = closed_form(vectors)
    model, logs = tiny.run(setup, "imtl", {"variant": "gradient", "gradient_at": gradient_at})
    tiny.assert_params_close(model, ref.step(setup, alpha @ vectors, gradient_at))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, rtol=1e-4, atol=1e-5)
    # The defining property: equal projections of d onto every unit gradient.
    d = alpha @ vectors
    projections = vectors @ d / np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-9)


def test_hybrid_follows_algorithm_1_over_two_steps():
    setup = ref.conflicting_setup(3, gradient_at="representation")
    model, logs = tiny.run(setup, "imtl", {}, epochs=2)  # defaults: hybrid, on the representation
    log_scales = np.zeros(3)
    current = setup
    for step in range(2):
        scales = np.exp(log_scales)
        vectors = ref.task_vectors(current, "representation")
        alpha = closed_form(scales[:, None] * vectors)
        expected = ref.step(current, alpha @ (scales[:, None] * vectors), "representation", head_scales=scales)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha * scales, rtol=1e-4, atol=1e-5)
        log_scales = log_scales - tiny.LEARNING_RATE * (scales * tiny.losses(current.params, current) - 1.0)
        current = dataclasses.replace(current, params=expected)
    tiny.assert_params_close(model, current.params, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(model.balancer.log_scales.numpy(), log_scales, rtol=1e-5, atol=1e-6)


def test_imtl_l_alone_is_one_step_on_the_scaled_losses():
    setup = tiny.make_setup(num_tasks=2, seed=1, target_scales=[1.0, 4.0])
    model, _ = tiny.run(setup, "imtl", {"variant": "loss"}, epochs=2)
    params, log_scales = setup.params, np.zeros(2)
    for _ in range(2):
        current = dataclasses.replace(setup, params=params)
        new = tiny.weighted_step(params, current, np.exp(log_scales))
        log_scales = log_scales - tiny.LEARNING_RATE * (np.exp(log_scales) * tiny.losses(params, current) - 1.0)
        params = new
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(model.balancer.log_scales.numpy(), log_scales, rtol=1e-5, atol=1e-6)


def test_gramian_solution_is_the_closed_form_and_skips_unlabelled_tasks():
    rng = np.random.default_rng(0)
    for num_tasks in (2, 3, 5, 10):
        gram, vectors = ref.random_gram(rng, num_tasks)
        alpha = imtl_g_weights(tf.constant(gram), tf.ones([num_tasks], tf.bool)).numpy()
        expected = closed_form(vectors)
        # A T x T solve on the Gram matrix against the closed form on the vectors: 8 T cond(gram) eps.
        atol = 8 * num_tasks * np.linalg.cond(gram) * np.finfo(float).eps * np.abs(expected).max()
        np.testing.assert_allclose(alpha, expected, rtol=0, atol=atol)
    mask = np.array([True, True, False, True, True])
    alpha = imtl_g_weights(tf.constant(gram[:5, :5]), tf.constant(mask)).numpy()
    assert alpha[2] == 0.0
    expected = closed_form(vectors[:5][mask])
    atol = 8 * 4 * np.linalg.cond(gram[:5, :5][np.ix_(mask, mask)]) * np.finfo(float).eps * np.abs(expected).max()
    np.testing.assert_allclose(alpha[mask], expected, rtol=0, atol=atol)


def test_singular_systems_fall_back_to_uniform():
    parallel = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    alpha = imtl_g_weights(tf.constant(parallel @ parallel.T), tf.ones([3], tf.bool)).numpy()
    np.testing.assert_allclose(alpha, [1 / 3] * 3)
    zero = np.zeros((2, 2))
    np.testing.assert_allclose(imtl_g_weights(tf.constant(zero), tf.ones([2], tf.bool)).numpy(), [0.5, 0.5])


def test_invalid_variant():
    with pytest.raises(ValueError, match=r"imtl variant='both' is not valid; expected one of \['gradient', 'hybrid', 'loss'\]"):
        balancers.get("imtl", variant="both")


@pytest.mark.parametrize("variant", ["hybrid", "loss"])
def test_a_loss_at_exactly_zero_keeps_its_log_scale_at_the_bound(variant):
    """IMTL-L's s_t steps by e^{s_t} L_t - 1 = -1 with L_t = 0: unbounded it overflows; here it stops at 10."""
    import keras

    from mtl_tf.balancers.log_scales import LOG_SCALE_BOUND

    steps = 200  # SGD(1.0): s_b = 1, 2, ... reaches 10 at step 10; the paper's overflows e^s at step 89
    model, (x, y) = tiny.zero_loss_model("imtl", {"variant": variant}, optimizer=keras.optimizers.SGD(1.0),
                                         steps_per_execution=steps)
    recorder = tiny.StepLogs()
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(steps), epochs=1, verbose=0, callbacks=[recorder])
    assert int(model.optimizer.iterations) == steps
    s = np.asarray(model.balancer.log_scales)
    assert s[1] == np.float32(LOG_SCALE_BOUND), s
    assert s[0] < LOG_SCALE_BOUND  # task a (loss >= 1): e^{s_a} L_a - 1 >= 0 pulls s_a down, never to the bound
    np.testing.assert_allclose(recorder.steps[-1]["b_loss_scale"], np.exp(LOG_SCALE_BOUND), rtol=1e-6)
