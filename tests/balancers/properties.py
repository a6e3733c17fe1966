"""Property checks shared by every method that produces task weights.

Each method's test module parametrises these over its method and options:

* `check_weights` - the logged `{task}_weight` of every step are finite and,
  where the method promises it, on the simplex (MGDA's alpha) or on a scaled
  simplex / L1 sphere (Pareto MTL's weights are rescaled to sum |w_t| = T).
* `check_permutation_equivariant` - listing the heads in another order
  permutes the weights and changes nothing else: after the same steps every
  variable (shared and per head) and every per-task log agree by task name.
* `check_common_descent` - MGDA's combined direction d = sum_t alpha_t g_t
  satisfies g_t . d >= -tol for every task t (it is a descent direction for
  every task), unless the point is Pareto-stationary (||d|| ~ 0).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import mtl_tf
from tests.balancers import tiny


def weight_history(step_logs, tasks):
    """[steps, T] logged task weights, in the order of `tasks`."""
    return np.array([tiny.logged_weights(s, tasks) for s in step_logs])


def check_weights(step_logs, tasks, simplex_total=None, abs_total=None, atol=1e-5):
    """Finite weights at every step; optionally w >= 0 with sum w = simplex_total,
    or sum |w| = abs_total."""
    weights = weight_history(step_logs, tasks)
    assert weights.shape == (len(step_logs), len(tasks))
    assert np.all(np.isfinite(weights)), f"non-finite task weights {weights}"
    if simplex_total is not None:
        assert np.all(weights >= -atol), f"negative weights {weights}, expected w >= 0"
        np.testing.assert_allclose(weights.sum(axis=1), simplex_total, atol=atol * simplex_total,
                                   err_msg=f"weights {weights} should sum to {simplex_total}")
    if abs_total is not None:
        np.testing.assert_allclose(np.abs(weights).sum(axis=1), abs_total, atol=atol * abs_total,
                                   err_msg=f"weights {weights} should have sum |w| = {abs_total}")
    return weights


def check_permutation_equivariant(setup, method, options=None, permutation=None, epochs=2, atol=1e-5):
    """Training with the heads listed in a permuted order gives the same model, task by task.

    Compares the logged weights (by task name, so the permuted run's head-order
    weight vector must be the permutation of the original one), the per-task
    losses and every variable after `epochs` steps. Options must be given per
    task by name (dicts), not as lists in head order.
    """
    tasks = setup.tasks
    permutation = permutation or list(reversed(range(len(tasks))))
    permuted = tuple(tasks[i] for i in permutation)
    assert permuted != tasks, "choose a permutation that changes the order"
    model, logs = tiny.run(setup, method, options, epochs=epochs)
    model_p, logs_p = tiny.run(setup, method, options, epochs=epochs, tasks=permuted)
    assert model_p.task_names == permuted
    for step, (original, other) in enumerate(zip(logs, logs_p)):
        np.testing.assert_allclose(
            tiny.logged_weights(other, permuted),
            tiny.logged_weights(original, tasks)[permutation],
            atol=atol, rtol=atol, err_msg=f"{method}: weights of step {step + 1} are not permuted with the heads",
        )
        for key in original:
            if key.endswith("_loss") or key.endswith("_inner_loss"):
                np.testing.assert_allclose(other[key], original[key], atol=atol, rtol=atol, err_msg=key)
    tiny.assert_params_close(model_p, tiny.model_params(model), atol=atol, rtol=atol)
    return logs


def check_common_descent(task_gradients, alpha, tol=1e-6, stationary_tol=1e-4):
    """g_t . d >= -tol * max ||g||^2 for d = sum alpha_t g_t, or ||d|| ~ 0 (Pareto-stationary).

    task_gradients: [T, n] (one flattened gradient per task). Returns True when
    the point was judged Pareto-stationary.
    """
    g = np.asarray(task_gradients, np.float64)
    alpha = np.asarray(alpha, np.float64)
    scale = np.max(np.sum(g**2, axis=1))
    d = alpha @ g
    if np.linalg.norm(d) <= stationary_tol * np.sqrt(scale):
        return True
    products = g @ d
    assert np.all(products >= -tol * scale), (
        f"d = sum alpha_t g_t is not a descent direction for every task: g_t . d = {products}, alpha = {alpha}"
    )
    return False


# -- loss ranges: the small input with a negative loss (issue 22) ---------------------------------------

NEGATIVE_TASKS = ("a", "n")


def negative_loss_model(method, options=None):
    """The small input's model: task `a` (MSE, loss 16) and task `n` (CosineSimilarity, loss -1/sqrt(2)).

    x = ones((4, 2)); encoder Dense(2, kernel ones): z = (2, 2); head `a`
    Dense(1, kernel ones) predicts 4 against 0; head `n` Dense(2, kernel
    [[.5, 0], [0, .5]]) predicts (1, 1) against (1, 0). SGD(1e-3).
    """
    encoder = keras.layers.Dense(2, kernel_initializer="ones", name="encoder")
    heads = {
        "a": keras.layers.Dense(1, kernel_initializer="ones", name="head_a"),
        "n": keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant([[0.5, 0.0], [0.0, 0.5]]),
                                name="head_n"),
    }
    losses = {"a": "mse", "n": keras.losses.CosineSimilarity()}
    model = mtl_tf.MultiTaskModel(encoder, heads, losses, balancer=method, balancer_options=options or {})
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    return model


def negative_loss_data(steps=1):
    """(x, y) of the small input, `steps` identical batches of 4 as a dataset."""
    x = np.ones((4, 2), "float32")
    y = {"a": np.zeros((4, 1), "float32"), "n": np.tile(np.array([[1.0, 0.0]], "float32"), (4, 1))}
    return x, y, tf.data.Dataset.from_tensors((x, y)).repeat(steps)


# The small input's losses before any step, from NumPy: 4^2 and -cos(45 degrees).
NEGATIVE_LOSSES = {"a": 16.0, "n": -1.0 / np.sqrt(2.0)}


class BatchStart(keras.callbacks.Callback):
    """Keeps every variable of the model (and the optimizer's step count) at the start of the first batch."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.weights = {v.path: np.array(v.numpy()) for v in self.model.weights}
            self.balancer = {v.path: np.array(v.numpy()) for v in self.model.balancer.weights}
            self.iterations = int(self.model.optimizer.iterations.numpy())


def check_takes_negative_loss(method, options=None):
    """A method that takes any real loss takes one step on the small input, and both losses fall.

    The step is applied (no skip), every variable stays finite, and both task
    losses on the same batch are strictly lower after it: the update descends
    each task to first order (with SGD(1e-3)). Returns (step logs, losses after).
    """
    model = negative_loss_model(method, options)
    x, y, data = negative_loss_data()
    recorder = tiny.StepLogs()
    model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    step = recorder.steps[0]
    assert step["skipped_update"] == 0.0 and step["skip_cause"] == 0.0, f"{method}: the step was not applied: {step}"
    for v in model.weights:
        assert np.all(np.isfinite(np.asarray(v.numpy()))), f"{method}: {v.path} is not finite after the step"
    for t in NEGATIVE_TASKS:
        np.testing.assert_allclose(step[f"{t}_loss"], NEGATIVE_LOSSES[t], rtol=1e-6)
        assert np.isfinite(step[f"{t}_weight"]), f"{method}: weight of {t} is {step[f'{t}_weight']}"
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    for t in NEGATIVE_TASKS:
        assert after[f"{t}_loss"] < NEGATIVE_LOSSES[t], (
            f"{method}: the loss of task {t!r} went from {NEGATIVE_LOSSES[t]:.7g} to {after[f'{t}_loss']:.7g}; "
            f"expected a descent step for every task (weights a {step['a_weight']:.3g}, n {step['n_weight']:.3g})"
        )
    return step, after


def check_refuses_negative_loss(method, options=None):
    """A method that needs non-negative losses refuses the small input before any update.

    `fit` raises `mtl_tf.LossRangeError` at the end of the first of three
    batches; the message names the task, the method, the value and the fix;
    every variable of the model (balancer state included) and the optimizer's
    step count are those from the start of the batch; the step's logs say
    skip cause 3, task `n` (index 1) and its loss. Returns the message.
    """
    model = negative_loss_model(method, options)
    _, _, data = negative_loss_data(steps=3)
    start, recorder = BatchStart(), tiny.StepLogs()
    try:
        model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[start, recorder])
    except mtl_tf.LossRangeError as error:
        message = str(error)
    else:
        raise AssertionError(f"{method}: a negative loss was taken without an error: {recorder.steps}")
    assert len(recorder.steps) == 1, f"{method}: fit went on after the refused batch"
    step = recorder.steps[0]
    assert (step["skipped_update"], step["skip_cause"], step["skip_task"]) == (1.0, 3.0, 1.0), step
    np.testing.assert_allclose(step["skip_value"], NEGATIVE_LOSSES["n"], rtol=1e-6)
    for v in model.weights:
        np.testing.assert_array_equal(np.asarray(v.numpy()), start.weights[v.path], err_msg=f"{method}: {v.path} moved")
    for v in model.balancer.weights:
        np.testing.assert_array_equal(np.asarray(v.numpy()), start.balancer[v.path], err_msg=f"{method}: {v.path}")
    assert int(model.optimizer.iterations.numpy()) == start.iterations == 0
    for part in ("task 'n'", f"balancer {method!r}", "-0.707107", "non-negative", "Fix:", "uniform"):
        assert part in message, f"{method}: {part!r} missing from the message: {message}"
    return message
