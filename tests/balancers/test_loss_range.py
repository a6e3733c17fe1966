"""The loss-range rule (`mtl_tf.balancers.loss_range`): the step's check, user methods, the refusal message.

Every registered method is checked on issue 22's small input by the property
suite (`test_properties.py`, section (e)); this module checks the rule itself.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf import balancers
from mtl_tf.balancers import loss_range
from mtl_tf.balancers.base import LossWeightingBalancer
from tests.balancers import properties


class PlainSum(LossWeightingBalancer):
    """A user's method written before the rule: no loss range declared (the default, any real loss)."""

    def objective(self, problem, losses):
        weights = tf.cast(problem.task_mask, tf.float32)
        return tf.reduce_sum(weights * losses), weights


class PositiveSum(PlainSum):
    """A user's method that cannot take a loss of exactly 0."""

    loss_range = "positive"


class NonNegativeSum(PlainSum):
    loss_range = "non_negative"


class BogusSum(PlainSum):
    loss_range = "at_least_one"


def _zero_loss_fit(balancer):
    """One step on tasks `a` (MSE at exactly 0: prediction 4, target 4) and `b` (MSE 16); the step logs."""
    encoder = keras.layers.Dense(2, kernel_initializer="ones")
    heads = {t: keras.layers.Dense(1, kernel_initializer="ones") for t in ("a", "b")}
    model = mtl_tf.MultiTaskModel(encoder, heads, {"a": "mse", "b": "mse"}, balancer=balancer)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    x = np.ones((4, 2), "float32")
    y = {"a": np.full((4, 1), 4.0, "float32"), "b": np.zeros((4, 1), "float32")}
    recorder = properties.tiny.StepLogs()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    return recorder.steps[0]


def test_a_user_method_without_a_declaration_takes_any_loss():
    assert loss_range.needed(PlainSum()) == "any"
    properties.check_takes_negative_loss(PlainSum())


def test_positive_refuses_a_loss_of_exactly_zero_and_non_negative_takes_it():
    step = _zero_loss_fit(NonNegativeSum())
    assert step["skipped_update"] == 0.0 and step["a_loss"] == 0.0
    with pytest.raises(mtl_tf.LossRangeError, match=r"takes positive losses \(above 0\), but task 'a' has loss 0 "):
        _zero_loss_fit(PositiveSum())


def test_an_unknown_declaration_is_refused_by_name():
    with pytest.raises(ValueError, match=r"declares loss range 'at_least_one'; expected one of \['any', "):
        _zero_loss_fit(BogusSum())


def test_check_flags_the_first_labelled_finite_loss_out_of_range():
    losses = tf.constant([2.0, -0.5, float("nan"), -3.0, 0.0])
    every = tf.constant([True] * 5)
    ok, task, value = loss_range.check(NonNegativeSum(), losses, every)
    assert (bool(ok), int(task), float(value)) == (False, 1, -0.5)
    # Unlabelled tasks are not checked; a NaN loss is cause 1's, not this check's.
    ok, task, value = loss_range.check(NonNegativeSum(), losses, tf.constant([True, False, True, False, True]))
    assert (bool(ok), int(task), float(value)) == (True, -1, 0.0)
    ok, task, value = loss_range.check(PositiveSum(), losses, tf.constant([True, False, True, False, True]))
    assert (bool(ok), int(task), float(value)) == (False, 4, 0.0)
    ok, task, _ = loss_range.check(PlainSum(), losses, every)
    assert (bool(ok), int(task)) == (True, -1)


class UnlabelledCosine(keras.losses.CosineSimilarity):
    """CosineSimilarity whose every target counts as unlabelled (`labelled_count` 0)."""

    def labelled_count(self, y_true, sample_weight=None):
        return tf.zeros([])


def test_an_unlabelled_task_is_not_checked():
    model = properties.negative_loss_model("famo")
    model.task_losses["n"] = UnlabelledCosine()
    _, _, data = properties.negative_loss_data()
    recorder = properties.tiny.StepLogs()
    model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    step = recorder.steps[0]
    assert step["skipped_update"] == 0.0 and step["n_weight"] == 0.0 and step["labelled_tasks"] == 1.0
    np.testing.assert_allclose(step["n_loss"], properties.NEGATIVE_LOSSES["n"], rtol=1e-6)


def test_evaluate_refuses_nothing():
    model = properties.negative_loss_model("famo")
    x, y, _ = properties.negative_loss_data()
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["n_loss"], properties.NEGATIVE_LOSSES["n"], rtol=1e-6)


def test_the_message_names_task_method_value_and_fix():
    message = properties.check_refuses_negative_loss("famo")
    assert message.startswith(
        "balancer 'famo' takes non-negative losses (at or above min_losses = 0), but task 'n' has loss -0.707107 "
        "at epoch 1, batch 1 (loss CosineSimilarity)."
    )
    assert "FAMO descends log(L_t - min_t + epsilon)" in message  # the docstring's reason
    assert "That batch was not applied" in message
    assert "NormalCosineLoss(invalid_value=None)" in message and "min_losses={'n': -1.0}" in message
    takes_any = message.split("a method that takes any real loss: ")[1].rstrip(".").split(", ")
    assert takes_any == [m for m in balancers.available() if balancers.registry._REGISTRY[m].loss_range == "any"]
    assert "uniform" in takes_any and "mgda" in takes_any and "famo" not in takes_any


def test_refused_the_same_way_on_two_replicas(mirrored_strategy):
    with mirrored_strategy.scope():
        model = properties.negative_loss_model("db_mtl")
    _, _, data = properties.negative_loss_data(steps=2)
    start = [np.array(v.numpy()) for v in model.weights]
    with pytest.raises(mtl_tf.LossRangeError, match="task 'n' has loss -0.707107"):
        model.fit(data, epochs=1, shuffle=False, verbose=0)
    for v, before in zip(model.weights, start):
        np.testing.assert_array_equal(np.asarray(v.numpy()), before, err_msg=v.path)
    assert int(model.optimizer.iterations.numpy()) == 0
