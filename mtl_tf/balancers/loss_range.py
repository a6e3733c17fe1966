"""What a balancing method needs of a task loss, and the step's check of it.

Keras losses are not all non-negative: `keras.losses.CosineSimilarity` is
-cos(prediction, target), negative whenever a prediction points the right way
(the usual surface-normal loss); a log-likelihood with a learnt variance can be
negative too. Methods that take the log of a loss (famo, db_mtl, gls, stch),
ratios of losses (dwa, gradnorm, mgda's loss normalisation), or that learn a
scale against a loss (uncertainty, imtl's loss scales) are wrong there without
any NaN to show it. So every method declares its need, one of `LOSS_RANGES`:

  "any"           any real loss (the method reads gradients, or weights the
                  losses linearly);
  "non_negative"  L_t >= 0 (the method treats 0 as the best a loss can reach:
                  logs, ratios, geometric means; each documents the floor or
                  epsilon it uses at exactly 0, where it stays finite);
  "positive"      L_t > 0 (no registered method needs it; for a user's method
                  that cannot take a loss of exactly 0).

`Balancer.loss_range` is the class' declaration; `Balancer.loss_range_needed()`
the instance's (an option can change it: mgda's `normalization="loss"`); the
class docstring says why, in a paragraph beginning "Loss range:". A method may
measure its losses from per-task floors other than 0 by defining
`loss_range_floors()` -> [T] floats (famo: its `min_losses`); the need then
reads L_t - floor_t >= 0 (or > 0).

`MultiTaskModel.train_step` checks, on the device, every labelled task's
global-batch loss against the need (`check`). A batch with a finite loss out of
range is not applied (weights, optimizer state and balancer state stay as they
were) and reports skip cause 3 with the task and the value; the step guard then
stops `fit` at the end of that batch with a `LossRangeError` (`refusal_message`).
A task without labels in the batch is not checked; `evaluate` checks nothing.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
from keras import ops

from mtl_tf.backend.solver_ops import gather

from mtl_tf.balancers import registry

LOSS_RANGES = ("any", "non_negative", "positive")
# How each need reads in messages and in the method docstrings' "Loss range:" paragraph.
LABELS = {"any": "any", "non_negative": "non-negative", "positive": "positive"}


class LossRangeError(ValueError):
    """A task loss outside what the balancing method can take; the batch was not applied."""


def needed(balancer):
    """The loss range `balancer` needs ("any", "non_negative" or "positive"); ValueError for another value."""
    method = getattr(balancer, "loss_range_needed", None)
    need = method() if callable(method) else getattr(balancer, "loss_range", "any")
    if need not in LOSS_RANGES:
        raise ValueError(
            f"balancer {_name(balancer)!r} declares loss range {need!r}; expected one of {list(LOSS_RANGES)} "
            "(its `loss_range` class attribute or `loss_range_needed()`)"
        )
    return need


def floors(balancer, num_tasks):
    """[T] floats the losses are measured from: `loss_range_floors()` when the method has it, else 0."""
    method = getattr(balancer, "loss_range_floors", None)
    values = [0.0] * num_tasks if not callable(method) else [float(v) for v in method()]
    if len(values) != num_tasks:
        raise ValueError(f"balancer {_name(balancer)!r} gives {len(values)} loss floors for {num_tasks} tasks")
    return values


def check(balancer, global_losses, mask):
    """The step's test of the losses against the method's need, on the device.

    Args:
      balancer: the model's balancer.
      global_losses: [T] float32 unscaled global-batch task losses (the same on every replica).
      mask: [T] bool, the tasks with labels in the global batch (only those are checked).

    Returns:
      (in_range, task, value): a bool scalar, False when a labelled task has a
      finite loss out of range; the int32 index of the first such task (-1
      when none); its loss (0.0 when none). A non-finite loss is not this
      check's to report (skip cause 1).
    """
    need = needed(balancer)
    global_losses = ops.cast(global_losses, "float32")
    if need == "any":
        return (ops.convert_to_tensor(True), ops.convert_to_tensor(-1, "int32"),
                ops.convert_to_tensor(0.0, "float32"))
    gaps = global_losses - ops.convert_to_tensor(np.asarray(floors(balancer, int(global_losses.shape[0])), np.float32))
    inside = gaps >= 0.0 if need == "non_negative" else gaps > 0.0
    outside = ops.logical_and(ops.logical_and(mask, ops.isfinite(global_losses)), ops.logical_not(inside))
    refused = ops.any(outside)
    # argmax of an int32 vector: the first index of the largest entry, no float fix-ups on TensorFlow.
    first = ops.argmax(ops.cast(outside, "int32"), axis=0)
    task = ops.where(refused, first, -1)
    value = ops.where(refused, gather(global_losses, ops.maximum(task, 0)), 0.0)
    return ops.logical_not(refused), task, value


def takes_any_loss():
    """Sorted names of the registered methods that take any real loss with their default options."""
    return [name for name, cls in sorted(registry._REGISTRY.items()) if getattr(cls, "loss_range", "any") == "any"]


def reason(balancer, sentences=2):
    """The first `sentences` of the "Loss range:" paragraph of the balancer's class docstring ("" when none)."""
    doc = inspect.getdoc(type(balancer)) or ""
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if text.startswith("Loss range:"):
            return " ".join(re.split(r"(?<=\.)\s+(?=[A-Z])", text)[:sentences])
    return ""


def refusal_message(balancer, task, value, loss=None, where=None):
    """The `LossRangeError` text: the method, its need and why, the task and its value, and the fixes."""
    name = _name(balancer)
    need = needed(balancer)
    task_names = list(getattr(balancer, "task_names", None) or [])
    floor = floors(balancer, len(task_names))[task_names.index(task)] if task in task_names else 0.0
    option = getattr(balancer, "loss_range_floor_option", None) if callable(
        getattr(balancer, "loss_range_floors", None)) else None
    bound = f"{option} = {floor:g}" if option else f"{floor:g}"
    bound = f"above {bound}" if need == "positive" else f"at or above {bound}"
    # A generic wrapper of a loss function (mtl_tf's FunctionLoss for "mse") is named by its function.
    loss_name = type(loss).__name__ if loss is not None else None
    if loss_name in ("FunctionLoss", "LossFunctionWrapper"):
        loss_name = getattr(getattr(loss, "fn", None), "__name__", loss_name)
    cosine = loss_name in ("CosineSimilarity", "cosine_similarity")
    parts = [
        f"balancer {name!r} takes {LABELS[need]} losses ({bound}), but task {task!r} has loss {value:.6g} "
        + (f"at {where}" if where else "on this batch") + (f" (loss {loss_name})" if loss_name else "") + "."
    ]
    if cosine:
        parts.append("keras.losses.CosineSimilarity is -cos(prediction, target): negative whenever the "
                     "predictions point the right way.")
    why = reason(balancer)
    if why:
        parts.append(f"{name}: {why}")
    parts.append("That batch was not applied: the weights, the optimizer state and the balancer state are "
                 "those from before it.")
    if option and floor > 0.0:
        fix = (f"{option} must be a lower bound of the loss: give task {task!r} a bound at or below {value:.6g} "
               "(0 for a loss that cannot be negative)")
    else:
        if cosine:
            fix = ("use the cosine distance 1 - cos instead (mtl_tf.losses.NormalCosineLoss(invalid_value=None), "
                   "in [0, 2])")
        else:
            fix = f"add a constant to task {task!r}'s loss (or clip it) so that it is {LABELS[need]}"
        if option:
            fix += (f", or give {name} a lower bound of that loss as {option}="
                    f"{{{task!r}: {'-1.0' if cosine else '...'}}}")
    parts.append(f"Fix: {fix}, or choose a method that takes any real loss: {', '.join(takes_any_loss())}.")
    return " ".join(parts)


def _name(balancer):
    return getattr(balancer, "method_name", None) or getattr(balancer, "name", None) or type(balancer).__name__
