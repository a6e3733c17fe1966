"""Skipping a bad batch: why a step is not applied, the rollback, and the callback that stops `fit`.

`MultiTaskModel.train_step` applies a batch only when it is sound, and says
why not through three scalar logs, computed in the step (no host round trip,
the same on every replica, XLA-compilable):

skip_cause
    - 0 = applied (or a benign skip: no task has a labelled example; under a
      loss-scaling optimizer, an overflow of the scaled gradients, which the
      optimizer skips while lowering its scale)
    - 1 = a task loss is not finite
    - 2 = the gradients are not finite although every task loss is
    - 3 = a task loss is outside the range the method takes
    - 4 = applying the update would leave a variable non-finite (an optimizer
      overflow on finite gradients, e.g. Adam's second moment of a gradient
      of 1e20)
skip_task
    the index in `model.task_names` of the task concerned, -1 when none is
    known. For a variable (causes 2 and 4): a head's variable is its task's; a
    row of per-task method state (a log-variance, a tracked gradient) is that
    row's task; a shared variable is attributed to the task with the largest
    loss on the batch (the message says so).
skip_value
    cause 3: that task's loss on the batch; cause 4: the index of the
    offending variable in `guarded_variables(model)`; otherwise 0.

Rule: the first cause that holds in the order 1, 3, 2, 4 is reported (a loss
out of range can make the gradients non-finite: the range is then the cause
to name). A batch that is not
applied leaves every variable of `guarded_variables(model)` (the model's
weights, trainable or not, which include the balancer's state; the
optimizer's variables; the head optimizer's of two-phase methods) as it was
before the batch, except for a loss-scale overflow, where the optimizer's own
skip (and its lower scale) stands. How: the values are kept before the step,
the update is applied in place (Keras optimizers have no dry run), every
guarded variable is tested, and the kept values are written back when the
batch is not applied.

`NonFiniteLossGuard` (added by `MultiTaskModel.fit`) turns a skip of cause
1, 2 or 4 into a `NonFiniteLossError`, and of cause 3 into a
`mtl_tf.balancers.loss_range.LossRangeError` (a ValueError), at the end of
that batch, naming the task, the method, the value and the fix.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from mtl_tf.balancers import loss_range

APPLIED, LOSS_NOT_FINITE, GRADIENTS_NOT_FINITE, LOSS_OUT_OF_RANGE, STATE_NOT_FINITE = 0, 1, 2, 3, 4


class NonFiniteLossError(FloatingPointError):
    """Training stopped at a batch that was not applied: a non-finite loss, gradient or variable."""


def guarded_variables(model) -> list:
    """Every variable a step may write, in the order `skip_value` indexes (cause 4).

    `model.weights` (encoder, heads and balancer, trainable or not), then
    `model.optimizer.variables`, then the head optimizer's variables (methods
    that step the heads on their own).
    """
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    if getattr(model, "head_optimizer", None) is not None:
        variables += list(model.head_optimizer.variables)
    return variables


def _owners(model, variables):
    """Per variable: a task index (a head's variable), "rows" (per-task method state) or None (shared)."""
    num_tasks = len(model.task_names)
    owner = {}
    for i, t in enumerate(model.task_names):
        for v in model.heads[t].weights:
            owner[id(v)] = i
    for v in model.balancer.weights:
        if len(v.shape) >= 1 and v.shape[0] == num_tasks:
            owner[id(v)] = "rows"
    # Optimizer slots are named after their variable's path (Keras' add_variable_from_reference).
    prefixes = sorted(((v.path.replace("/", "_") + "_", owner[id(v)]) for v in model.weights if id(v) in owner),
                      key=lambda p: -len(p[0]))
    result = []
    for v in variables:
        if id(v) in owner:
            result.append(owner[id(v)])
            continue
        match = next((o for prefix, o in prefixes if v.name.startswith(prefix)), None)
        result.append(match)
    return result


class StepGuard:
    """The values before a step, the finiteness tests after it, and the rollback (one per traced step)."""

    def __init__(self, model):
        self.model = model
        self.variables = guarded_variables(model)
        self.owners = _owners(model, self.variables)
        # `v.value` is the variable itself; tf.identity reads it (a snapshot: an in-place update copies first).
        self.before = [tf.identity(v.value) for v in self.variables]

    def finite_state(self, problem):
        """(ok, probes) over the guarded variables after the update, agreed on by every replica (`finite_probes`)."""
        return finite_probes(problem, [v.value for v in self.variables])

    def restore_if(self, restore_model, restore_optimizers):
        """Writes the kept values back: the model's (weights and balancer state) and the optimizers'.

        Both flags are the same on every replica. They differ on a loss-scale
        overflow, whose optimizer step (a lower scale) stands.
        """
        count = len(self.model.weights)
        groups = [(restore_model, slice(0, count)), (restore_optimizers, slice(count, None))]
        for restore, part in groups:
            pairs = list(zip(self.variables[part], self.before[part]))
            if not pairs:
                continue
            if not tf.distribute.has_strategy():
                def write_back(pairs=pairs):
                    for variable, before in pairs:
                        variable.assign(before)
                    return tf.constant(True)

                tf.cond(restore, write_back, lambda: tf.constant(False))
            else:
                # No cond under a strategy (see `apply_if`); every replica writes
                # the same values, so mirrored variables stay in sync.
                for variable, before in pairs:
                    variable.assign(tf.where(restore, before, tf.identity(variable.value)))

    def skip_logs(self, problem, global_losses, go, gradients, variables, gradients_finite, gradient_probes,
                  state_finite, state_probes, applied, loss_scaled, range_check):
        """`skipped_update`, `skip_cause`, `skip_task`, `skip_value` of the step (module docstring).

        `variables` are those of `gradients`; `range_check` is (in range, task,
        loss) of `mtl_tf.balancers.loss_range.check`. Read before `restore_if`.
        """
        bad_losses = tf.logical_not(tf.math.is_finite(global_losses))
        finite_losses = tf.where(bad_losses, tf.fill(tf.shape(global_losses), -np.inf), global_losses)
        largest = tf.cast(tf.argmax(finite_losses), tf.int32)
        _, gradient_task = locate(gradients_finite, gradient_probes, _owners(self.model, variables),
                                  lambda: gradients, tf.constant(-1))
        bad_variable, state_task = locate(state_finite, state_probes, self.owners,
                                          lambda: [v.value for v in self.variables], largest)
        gradients_bad = tf.logical_not(gradients_finite)
        if loss_scaled:  # an overflow of the scaled gradients is the optimizer's to handle
            gradients_bad = tf.logical_and(gradients_bad, tf.logical_not(go))
        zero = tf.constant(0.0)
        cause, task, value = first_cause([
            (tf.reduce_any(bad_losses), LOSS_NOT_FINITE, tf.argmax(tf.cast(bad_losses, tf.int32)), zero),
            # Before cause 2: a loss out of range can make the gradients non-finite (a log of it).
            (tf.logical_not(range_check[0]), LOSS_OUT_OF_RANGE, range_check[1], range_check[2]),
            (gradients_bad, GRADIENTS_NOT_FINITE, gradient_task, zero),
            # Only an update that would otherwise be applied: method state a skipped step wrote is put back anyway.
            (tf.logical_and(applied, tf.logical_not(state_finite)), STATE_NOT_FINITE, state_task,
             tf.cast(bad_variable, tf.float32)),
        ])
        return {
            "skipped_update": 1.0 - tf.cast(tf.logical_and(applied, state_finite), tf.float32),
            "skip_cause": tf.cast(cause, tf.float32),
            "skip_task": tf.cast(task, tf.float32),
            "skip_value": value,
        }


def finite_probes(problem, tensors):
    """(all finite, probes): one probe per tensor, sum(x * 0), summed over replicas.

    x * 0 is 0 for a finite x and NaN for an infinite or NaN one, so the probe
    is finite exactly when the tensor is (a plain sum could overflow on finite
    values). Two cheap ops per tensor; which tensor failed is worked out only
    on failure (`locate`).
    """
    if not tensors:
        return tf.constant(True), tf.zeros([0])
    probes = tf.stack([tf.cast(tf.reduce_sum(t * tf.zeros([], t.dtype)), tf.float32) for t in tensors])
    probes = problem.all_reduce_sum(probes)
    return tf.reduce_all(tf.math.is_finite(probes)), probes


def locate(ok, probes, owners, tensors, shared):
    """(index of the first non-finite tensor, its task) as int32; (0, -1) when `ok`.

    `owners` per tensor as `_owners` (a task index, "rows" for per-task state,
    None for a shared tensor, which gets the task `shared`); `tensors` is a
    callable returning them, read only on failure. The same on every replica.
    """
    # Only per-task state rows are read inside the branch: a cond branch that
    # captured every tensor (hundreds of variables on a SegNet) costs seconds of tracing.
    rows_at = [i for i, owner in enumerate(owners) if owner == "rows"]
    row_tensors = [tensors()[i] for i in rows_at] if rows_at else []

    def found():
        bad = tf.logical_not(tf.math.is_finite(probes))
        index = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.int32)
        row_tasks = {}
        for i, tensor in zip(rows_at, row_tensors):
            rows = tf.reshape(tensor, [tensor.shape[0], -1])
            bad_rows = tf.logical_not(tf.reduce_all(tf.math.is_finite(rows), axis=1))
            row_tasks[i] = tf.cast(tf.argmax(tf.cast(bad_rows, tf.int32)), tf.int32)
        tasks = []
        for i, owner in enumerate(owners):
            if owner == "rows":
                tasks.append(row_tasks[i])
            elif owner is None:
                tasks.append(tf.cast(shared, tf.int32))
            else:
                tasks.append(tf.constant(owner, tf.int32))
        return index, tf.gather(tf.stack(tasks), index)

    if not owners:
        return tf.constant(0, tf.int32), tf.constant(-1, tf.int32)
    return tf.cond(ok, lambda: (tf.constant(0, tf.int32), tf.constant(-1, tf.int32)), found)


def apply_if(go, gradients, variables, optimizer):
    """Applies the update only when `go` (the same on every replica).

    On one replica the optimizer runs under a `tf.cond`, so a skipped batch
    leaves weights and optimizer state untouched. With several replicas a
    cond around the optimizer would put its all-reduce inside a branch
    function, where collectives lose their program order and replicas can
    pair up the wrong tensors; there the gradients of a skipped batch are
    zeroed instead, and `StepGuard.restore_if` puts the optimizer's moments
    back. Under a loss-scaling optimizer non-finite gradients of a batch that
    is not skipped pass through unchanged: the optimizer detects the
    overflow, skips and lowers the scale.
    """
    # Any strategy's optimizer all-reduces (a merge_call), which cannot sit in a
    # cond branch, even with a single replica (MirroredStrategy on one device).
    if not tf.distribute.has_strategy():
        tf.cond(go, lambda: optimizer.apply(gradients, variables), lambda: None)
    else:
        optimizer.apply([tf.where(go, g, tf.zeros_like(g)) for g in gradients], variables)


def first_cause(reasons):
    """(cause, task, value) of the first reason that holds; (0, -1, 0) if none.

    `reasons` is an ordered list of (holds: bool tensor, cause: int, task:
    int32 tensor, value: float32 tensor).
    """
    cause, task, value = tf.constant(APPLIED, tf.int32), tf.constant(-1, tf.int32), tf.constant(0.0)
    for holds, code, reason_task, reason_value in reversed(reasons):
        cause = tf.where(holds, tf.constant(code, tf.int32), cause)
        task = tf.where(holds, tf.cast(reason_task, tf.int32), task)
        value = tf.where(holds, tf.cast(reason_value, tf.float32), value)
    return cause, task, value


# -- the callback ------------------------------------------------------------------------------------


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` with a `NonFiniteLossError` at the end of a batch the model did not apply.

    `MultiTaskModel.fit` adds it unless one is given. It reads the step's
    `skip_cause`, `skip_task` and `skip_value` logs (module docstring); the
    model has already put every guarded variable back, so the weights are
    those before the bad batch. Benign skips (cause 0) pass.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if "skip_cause" not in logs:
            return
        cause = int(round(_value(logs, "skip_cause")))
        if cause == APPLIED:
            return
        model = self.model
        names = tuple(getattr(model, "task_names", ()))
        index = int(round(_value(logs, "skip_task", -1.0)))
        task = names[index] if 0 <= index < len(names) else None
        where = f"epoch {getattr(self, '_epoch', 0) + 1}, batch {batch + 1}"
        method = getattr(getattr(model, "balancer", None), "name", "?")
        kept = "That batch was not applied, so the model keeps the weights from before it."
        message = _MESSAGES.get(cause, _unknown)(self, logs, task, where, method, kept)
        raise (loss_range.LossRangeError if cause == LOSS_OUT_OF_RANGE else NonFiniteLossError)(message)


def _value(logs, key, default=0.0):
    return float(np.asarray(logs.get(key, default)))


def _loss_not_finite(guard, logs, task, where, method, kept):
    loss = _value(logs, f"{task}_loss", math.nan) if task is not None else math.nan
    return (
        f"the loss of task {task!r} is {loss} at {where}; expected a finite value (method {method!r}). {kept} "
        "Check the inputs and targets of this task and the learning rate."
    )


def _gradients_not_finite(guard, logs, task, where, method, kept):
    concerned = f" (first non-finite: a variable of task {task!r})" if task is not None else ""
    return (
        f"the gradients of {where} are not finite although every task loss is{concerned}; expected finite "
        f"gradients (method {method!r}). {kept} Check the inputs of this batch for NaN or inf."
    )


def _state_not_finite(guard, logs, task, where, method, kept):
    variables = guarded_variables(guard.model)
    index = int(round(_value(logs, "skip_value", -1.0)))
    name = variables[index].path if 0 <= index < len(variables) else f"#{index}"
    owners = _owners(guard.model, variables)
    owner = owners[index] if 0 <= index < len(owners) else None
    if owner is None:
        concerned = f"a shared variable; task {task!r} has the largest loss on this batch"
    elif owner == "rows":
        concerned = f"its entry of task {task!r}"
    else:
        concerned = f"a variable of task {task!r}"
    losses = ", ".join(f"{t}: {_value(logs, f'{t}_loss', math.nan):.4g}" for t in guard.model.task_names)
    return (
        f"applying the update of {where} would leave variable {name!r} ({concerned}) non-finite, with "
        f"method {method!r}; expected every weight, optimizer slot and method state to stay finite. "
        f"The task losses are running means ({losses}). Every variable was put back as it was before this "
        "batch (the batch was not applied). The losses and gradients were finite, so the update's own "
        "arithmetic overflowed (an optimizer moment such as Adam's squared gradient, or the method's "
        f"state): lower the learning rate, clip the gradients (optimizer clipnorm=...), or bring task "
        f"{task!r}'s loss to a smaller scale."
    )


def _unknown(guard, logs, task, where, method, kept):
    return (
        f"the batch at {where} was not applied (skip_cause {_value(logs, 'skip_cause')}, task {task!r}, "
        f"value {_value(logs, 'skip_value')}) with method {method!r}. {kept}"
    )


def _loss_out_of_range(guard, logs, task, where, method, kept):
    model = guard.model
    value = _value(logs, "skip_value", math.nan)
    loss = getattr(model, "task_losses", {}).get(task)
    return loss_range.refusal_message(model.balancer, task, value, loss=loss, where=where)


# Cause -> message; cause 3's text comes from `mtl_tf.balancers.loss_range`.
_MESSAGES = {
    LOSS_NOT_FINITE: _loss_not_finite,
    LOSS_OUT_OF_RANGE: _loss_out_of_range,
    GRADIENTS_NOT_FINITE: _gradients_not_finite,
    STATE_NOT_FINITE: _state_not_finite,
}
