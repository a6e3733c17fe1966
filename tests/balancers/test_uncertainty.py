"""`uncertainty` (Kendall, Gal & Cipolla, CVPR 2018) against a NumPy step.

Reference, with s_t = log sigma_t^2 (initialised at 0) trained by the same SGD
as the network:
  regression (eq. 7):      1/(2 sigma_t^2) L_t + log sigma_t
  classification (eq. 10): 1/sigma_t^2 L_t + log sigma_t
so with k_t = 1/2 or 1 the objective is sum_t k_t e^{-s_t} L_t + s_t / 2,
dJ/dtheta = sum_t k_t e^{-s_t} grad L_t and dJ/ds_t = -k_t e^{-s_t} L_t + 1/2.
The logged task weights are k_t e^{-s_t} (before the step).
"""

import numpy as np
import pytest

from tests.balancers import properties, tiny

LR = tiny.LEARNING_RATE
SCALE = {"regression": 0.5, "classification": 1.0}


def reference_steps(setup, kinds, steps):
    """Returns (params, s, [weights per step]) after `steps` SGD steps."""
    params, s, history = setup.params, np.zeros(setup.num_tasks), []
    k = np.array([SCALE[kind] for kind in kinds])
    for _ in range(steps):
        sigma_squared = np.exp(s)
        weights = k / sigma_squared
        task_losses = tiny.losses(params, setup)
        grad_s = -k * task_losses / sigma_squared + 0.5  # d/ds of k e^{-s} L + log sigma
        params = tiny.weighted_step(params, setup, weights)
        s = s - LR * grad_s
        history.append(weights)
    return params, s, history


def _log_variances(model):
    return np.asarray(model.balancer.log_variances.numpy(), np.float64)


@pytest.mark.parametrize(
    "task_types,kinds",
    [
        ("regression", ["regression"] * 2),
        ("classification", ["classification"] * 2),
        ({"b": "regression", "a": "classification"}, ["classification", "regression"]),
    ],
    ids=["regression", "classification", "mixed"],
)
def test_three_steps_match_hand_computed_updates(task_types, kinds):
    setup = tiny.make_setup(num_tasks=2, seed=41, target_scales=[3.0, 0.5])
    model, logs = tiny.run(setup, "uncertainty", {"task_types": task_types}, epochs=3)
    params, s, weights = reference_steps(setup, kinds, 3)
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(_log_variances(model), s, atol=1e-5)
    for step in range(3):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], rtol=1e-5)
    # The unbalanced targets must move the two log-variances apart.
    assert abs(s[0] - s[1]) > 0.1


def test_three_tasks_one_step():
    setup = tiny.make_setup(num_tasks=3, seed=42)
    model, logs = tiny.run(setup, "uncertainty", {"task_types": "regression"})
    params, s, weights = reference_steps(setup, ["regression"] * 3, 1)
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(_log_variances(model), s, atol=1e-6)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [0.5, 0.5, 0.5], rtol=1e-7)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=43, target_scales=[2.0, 1.0, 0.3])
    options = {"task_types": {"a": "regression", "b": "classification", "c": "regression"}}
    logs = properties.check_permutation_equivariant(setup, "uncertainty", options, permutation=[2, 0, 1], epochs=3)
    weights = properties.check_weights(logs, setup.tasks)
    assert np.all(weights > 0)


# -- each task's form from its loss --------------------------------------------------------------


def _first_weights(losses, task_types=None):
    import keras

    import mtl_tf

    heads = {t: keras.layers.Dense(2) for t in losses}
    options = None if task_types is None else {"task_types": task_types}
    model = mtl_tf.MultiTaskModel(keras.layers.Dense(3), heads, losses, balancer="uncertainty", balancer_options=options)
    model.build((None, 4))
    return [float(w) for w in np.asarray(model.balancer._likelihood_scale)]


def test_task_form_is_inferred_from_the_loss():
    import keras

    losses = {
        "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "bin": "binary_crossentropy",
        "reg": "mse",
        "l1": keras.losses.MeanAbsoluteError(),
    }
    # Kendall eq. 10 (classification, 1/sigma^2) and eq. 7 (regression, 1/(2 sigma^2)).
    assert _first_weights(losses) == [1.0, 1.0, 0.5, 0.5]


def test_masked_losses_of_the_scene_benchmarks_are_regression_and_classification():
    from mtl_tf import losses as mtl_losses

    losses = {"seg": mtl_losses.MaskedSparseCategoricalCrossentropy(), "depth": mtl_losses.MaskedL1(),
              "normal": mtl_losses.NormalCosineLoss()}
    assert _first_weights(losses) == [1.0, 0.5, 0.5]


def test_task_types_override_the_inference():
    assert _first_weights({"a": "mse", "b": "mse"}, {"a": "classification", "b": "regression"}) == [1.0, 0.5]


def test_unknown_loss_without_task_types_names_the_task():
    import keras

    with pytest.raises(ValueError, match=r"task 'odd' \(loss .*KL.*\).*task_types"):
        _first_weights({"ok": "mse", "odd": keras.losses.KLDivergence()})


def test_a_loss_at_exactly_zero_keeps_its_log_variance_at_the_bound():
    """d/ds_t = 1/2 - c_t e^{-s_t} L_t = 1/2 at L_t = 0: the paper's s_t falls to exp's overflow; here it stops at -10."""
    import keras
    import tensorflow as tf

    from mtl_tf.balancers.log_scales import LOG_SCALE_BOUND

    steps = 400  # SGD(1.0): s_b falls by 1/2 a step, to -10 at step 20; the paper's overflows e^{-s} at step 178
    model, (x, y) = tiny.zero_loss_model("uncertainty", {"task_types": "regression"},
                                         optimizer=keras.optimizers.SGD(1.0), steps_per_execution=steps)
    recorder = tiny.StepLogs()
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(steps), epochs=1, verbose=0, callbacks=[recorder])
    assert int(model.optimizer.iterations) == steps
    s = np.asarray(model.balancer.log_variances)
    assert s[1] == np.float32(-LOG_SCALE_BOUND), s
    assert s[0] > -LOG_SCALE_BOUND  # task a (loss >= 1): its fixed point s = log(2 c L) >= 0 is far from the bound
    np.testing.assert_allclose(recorder.steps[-1]["b_weight"], 0.5 * np.exp(LOG_SCALE_BOUND), rtol=1e-6)
