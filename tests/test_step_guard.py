"""A step that would leave a variable non-finite is not applied, and the error names the variable and the task.

The issue's input: `imtl` (and `uncertainty`) with one task's loss 1e30 under
Adam. The gradients are finite, but Adam's second moment g^2 overflows float32
(1e60 > 3.4e38), so the optimizer would write inf (and at the next step NaN)
into its slots and the method's log-scales. References: the values read
before the batch (the model must equal them exactly) and the skip logs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf import step_guard

BIG = 1e15  # mse against a target of 1e15: a loss of 1e30, finite in float32


def _model(method, options=None, optimizer=None, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    encoder = keras.layers.Dense(2, kernel_initializer="ones", name="encoder")
    heads = {"a": keras.layers.Dense(1, name="head_a"), "b": keras.layers.Dense(1, name="head_b")}
    model = mtl_tf.MultiTaskModel(encoder, heads, {"a": "mse", "b": "mse"}, balancer=method, balancer_options=options)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    return model


def _data(num=8, big_from=None):
    """Targets of `b` jump to 1e15 from example `big_from` on (None: never)."""
    x = np.ones((num, 3), "float32")
    y = {"a": np.zeros((num, 1), "float32"), "b": np.zeros((num, 1), "float32")}
    if big_from is not None:
        y["b"][big_from:] = BIG
    return x, y


class _Before(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.before, self.logs = {}, []

    def on_train_batch_begin(self, batch, logs=None):
        self.before[batch] = [np.array(v) for v in step_guard.guarded_variables(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(np.asarray(v)) for k, v in logs.items()})


@pytest.mark.parametrize("method, options, state", [
    ("imtl", None, "log_scales"),
    ("imtl", {"variant": "loss"}, "log_scales"),
    ("uncertainty", {"task_types": "regression"}, "log_variances"),
])
def test_optimizer_overflow_on_finite_gradients_is_not_applied_and_named(method, options, state):
    model = _model(method, options)
    x, y = _data(big_from=4)  # batch 1 ordinary, batch 2 has b's loss ~1e30
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError) as error:
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    message = str(error.value)
    logs = recorder.logs[-1]
    assert len(recorder.logs) == 2 and recorder.logs[0]["skip_cause"] == 0.0
    assert logs["skip_cause"] == step_guard.STATE_NOT_FINITE and logs["skipped_update"] == 1.0
    assert logs["skip_task"] == 1.0  # task b
    variables = step_guard.guarded_variables(model)
    name = variables[int(logs["skip_value"])].path
    assert f"would leave variable {name!r}" in message and "task 'b'" in message, message
    assert f"method {model.balancer.name!r}" in message and "epoch 1, batch 2" in message
    assert "learning rate" in message and "clipnorm" in message
    # Exactly the values from before the batch: weights, balancer state, every Adam slot, the step count.
    for variable, before in zip(variables, recorder.before[1], strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)
        assert np.all(np.isfinite(np.asarray(variable, np.float64))), variable.path
    assert any(state in v.path for v in model.balancer.weights)


def test_the_batch_before_was_applied():
    """The guard is no blanket skip: the ordinary batch before the bad one moved the model."""
    model = _model("imtl")
    x, y = _data(big_from=4)
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    assert any(not np.array_equal(a, b) for a, b in zip(recorder.before[0], recorder.before[1]))


# The finiteness probe is sum(x * 0): XLA must not fold it to 0 (it keeps IEEE semantics), so both are run.
@pytest.mark.parametrize("jit_compile", [False, True])
def test_shared_variable_is_attributed_to_the_task_with_the_largest_loss(jit_compile):
    # SGD(1e36) on finite gradients (~1e3): the encoder's kernel, first in the list, overflows (a shared variable).
    model = _model("uniform", optimizer=keras.optimizers.SGD(1e36), jit_compile=jit_compile)
    x, y = _data()
    y["a"][:] = 1e3
    y["b"][:] = 1.0
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError) as error:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[recorder])
    logs = recorder.logs[-1]
    assert logs["skip_cause"] == step_guard.STATE_NOT_FINITE and logs["skip_task"] == 0.0
    assert "task 'a' has the largest loss on this batch" in str(error.value)
    for variable, before in zip(step_guard.guarded_variables(model), recorder.before[0], strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)


def test_two_phase_head_optimizer_slots_are_guarded():
    """`single_step` steps the heads with its own optimizer; its slots are guarded too."""
    model = _model("single_step", optimizer=keras.optimizers.Adam(1e-3))
    x, y = _data(big_from=0)
    y["b"][:] = 1e19  # a head gradient of ~1e19: Adam's g^2 overflows in both optimizers
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[recorder])
    assert model.head_optimizer is not None
    variables = step_guard.guarded_variables(model)
    assert set(map(id, model.head_optimizer.variables)) <= set(map(id, variables))
    for variable, before in zip(variables, recorder.before[0], strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)


def test_skip_logs_of_a_nan_loss_name_the_task():
    model = _model("uniform")
    x, y = _data()
    y["b"][2] = np.nan
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError, match="loss of task 'b' is nan"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[recorder])
    logs = recorder.logs[-1]
    assert (logs["skip_cause"], logs["skip_task"], logs["skip_value"]) == (1.0, 1.0, 0.0)


def test_applied_step_logs_cause_zero():
    model = _model("imtl")
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for key in ("skip_cause", "skip_value", "skipped_update"):
        assert history.history[key] == [0.0, 0.0], key
    assert history.history["skip_task"] == [-1.0, -1.0]


def test_guard_and_error_are_importable_from_the_old_places():
    assert mtl_tf.model.NonFiniteLossGuard is step_guard.NonFiniteLossGuard is mtl_tf.NonFiniteLossGuard
    assert mtl_tf.model.NonFiniteLossError is step_guard.NonFiniteLossError is mtl_tf.NonFiniteLossError


def test_skip_and_rollback_agree_on_two_replicas(mirrored_strategy):
    with mirrored_strategy.scope():
        model = _model("imtl")
    x, y = _data(big_from=4)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    recorder = _Before()
    with pytest.raises(mtl_tf.NonFiniteLossError, match="task 'b'"):
        model.fit(dataset, epochs=1, verbose=0, callbacks=[recorder])
    for variable, before in zip(step_guard.guarded_variables(model), recorder.before[1], strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)
