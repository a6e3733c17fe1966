"""Loss and metric identifiers resolved as Keras' compile resolves them (issue 22).

The whole-name parity with Keras is `tests/test_keras_parity.py`; here are the
rules one at a time, each against numpy or Keras' own objects.
"""

import json

import keras
import numpy as np
import pytest

import mtl_tf.model
from mtl_tf import compile_utils

# `mtl_tf.model.FunctionLoss(keras.losses.mean_squared_error)` as the model saved it before issue 22.
OLD_CONFIG = json.loads(
    '{"module": "mtl_tf.model", "class_name": "FunctionLoss", "config": {"name": "mean_squared_error", '
    '"reduction": "sum_over_batch_size", "fn": {"module": "builtins", "class_name": "function", '
    '"config": "mean_squared_error", "registered_name": "function"}}, "registered_name": "mtl_tf>FunctionLoss"}'
)


def test_a_function_loss_saved_before_loads_and_aligns_ranks():
    loss = keras.saving.deserialize_keras_object(OLD_CONFIG)
    assert isinstance(loss, mtl_tf.model.FunctionLoss) and loss.name == "mean_squared_error"
    y_true, y_pred = np.array([1.0, 2.0], "float32"), np.array([[0.0], [4.0]], "float32")
    np.testing.assert_allclose(float(loss(y_true, y_pred)), (1.0 + 4.0) / 2)  # (N,) against (N, 1)
    assert mtl_tf.model.FunctionLoss is compile_utils.FunctionLoss


def test_function_loss_round_trips_with_its_keyword_arguments():
    loss = compile_utils.FunctionLoss(keras.losses.huber, delta=0.5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert clone.name == "huber" and clone._fn_kwargs == {"delta": 0.5}
    y_true, y_pred = np.array([0.0], "float32"), np.array([[2.0]], "float32")
    np.testing.assert_allclose(float(clone(y_true, y_pred)), 0.5 * 2.0 - 0.5 * 0.5**2)  # linear part of Huber


@pytest.mark.parametrize("shapes", [((4,), (4, 1)), ((4, 1), (4,)), ((4, 1), (4, 1)), ((4, 3, 1), (4, 3))])
def test_function_loss_aligns_ranks_as_keras(shapes):
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.random(shapes[0]).astype("float32"), rng.random(shapes[1]).astype("float32")
    ours = compile_utils.as_loss("mse")
    theirs = keras.losses.MeanSquaredError()  # Keras' LossFunctionWrapper
    np.testing.assert_allclose(float(ours(y_true, y_pred)), float(theirs(y_true, y_pred)), rtol=1e-6)
    assert ours.name == "mse" and ours.reduction == "sum_over_batch_size" and ours.dtype == "float32"


def test_crossentropy_by_shapes_and_its_config():
    loss = compile_utils.as_loss("CE")
    assert isinstance(loss, compile_utils.ShapeResolvedCrossentropy) and loss.name == "CE"
    y_true, y_pred = np.array([0, 2]), np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], "float32")
    np.testing.assert_allclose(float(loss(y_true, y_pred)), -np.mean(np.log([0.2, 0.8])), rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(clone) is compile_utils.ShapeResolvedCrossentropy and clone.name == "CE"


def test_metric_names_follow_keras():
    metrics = compile_utils.task_metrics(
        {"b": ["mae", keras.metrics.mean_absolute_error, keras.metrics.MeanAbsoluteError(), "mae",
               keras.metrics.MeanAbsoluteError(name="err")]}, ["a", "b"])
    assert [m.name for m in metrics["b"]] == ["b_mae", "b_mean_absolute_error", "b_mean_absolute_error_1", "b_mae_1",
                                             "b_err"]
    assert metrics["a"] == []


def test_a_metric_object_is_copied_per_task():
    shared = keras.metrics.MeanAbsoluteError(name="err")
    metrics = compile_utils.task_metrics({"a": [shared], "b": [shared]}, ["a", "b"])
    assert metrics["a"][0] is not metrics["b"][0] and shared.name == "err"
    assert [metrics[t][0].name for t in "ab"] == ["a_err", "b_err"]


@pytest.mark.parametrize("identifier", ["nonsense", None])
def test_unknown_identifiers_are_named(identifier):
    with pytest.raises(ValueError, match="loss"):
        compile_utils.as_loss(identifier)
    with pytest.raises(ValueError, match="metric"):
        compile_utils.task_metric(identifier, "t")
