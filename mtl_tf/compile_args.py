"""`compile`'s `loss` and `metrics` of a `MultiTaskModel`, per task, as a Keras multi-output model takes them.

`MultiTaskModel.compile` (documented there) takes `loss` and `metrics` as a dict
keyed by task, a list in head order, or (a loss; the metrics of a one-head
model) one value for every task; `per_task` turns each into a dict keyed by
(some) task names, with Keras' refusals (a flat metric list with several
heads, a list of the wrong length, a task without a head). `set_losses` and
`set_metrics` then replace those tasks' entries of the model, task by task.
`loss_weights` and `weighted_metrics` are refused (`refuse_task_weighting`):
the balancer decides the task weights, and every metric is already weighted.
How each identifier resolves is `mtl_tf.compile_utils`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from mtl_tf.compile_utils import as_loss, task_metrics


def refuse_task_weighting(task_names, loss_weights: Any, weighted_metrics: Any) -> None:
    """A ValueError for `compile(loss_weights=...)` or `compile(weighted_metrics=...)`, saying what to give instead."""
    if loss_weights is not None:
        raise ValueError(
            f"compile(loss_weights={loss_weights!r}): a MultiTaskModel's task weights come from its balancer, "
            "not from compile. For fixed weights use MultiTaskModel(..., balancer=\"static\", "
            f"balancer_options={{\"weights\": {{task: weight}}}}) with tasks {list(task_names)}."
        )
    if weighted_metrics is not None:
        raise ValueError(
            "compile(weighted_metrics=...): every metric of a MultiTaskModel is already weighted by the sample "
            "weight (unlabelled examples of a task carry weight 0); give them as compile(metrics={task: [...]}) "
            "or MultiTaskModel(metrics={task: [...]})."
        )


def arguments_from_config(model_name: str, config: dict) -> dict:
    """The `compile` keyword arguments of a `.keras` file's compile config (its losses and metrics must be None)."""
    config = keras.saving.deserialize_keras_object(config)
    for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
        if config.get(key) is not None:
            raise ValueError(f"the compile config of {model_name!r} has {key}={config[key]!r}; expected None")
        config.pop(key, None)
    return config


def per_task(task_names, what, value, allow_single):
    """compile's `loss` / `metrics` as a dict keyed by (some) task names."""
    names = list(task_names)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile({what}=...) names tasks {unknown} that have no head; heads: {names}")
        return dict(value)
    sequence = isinstance(value, (list, tuple))
    if sequence and not value and not allow_single:  # metrics=[]: no metrics for any task
        return {t: [] for t in names}
    per_head = sequence and (allow_single or all(isinstance(v, (list, tuple)) or v is None for v in value))
    if per_head:
        if len(value) != len(names):
            raise ValueError(
                f"compile({what}=[...]) has {len(value)} entries for {len(names)} heads {names}; "
                f"expected one per head, in head order, or a dict keyed by task"
            )
        return {t: v for t, v in zip(names, value) if v is not None}
    if allow_single or len(names) == 1:  # one loss for every task; the metrics of a one-head model
        return {t: value for t in names}
    raise ValueError(
        f"compile({what}={value!r}): expected a dict task -> list of metrics (e.g. "
        f"{{{names[0]!r}: [\"accuracy\"]}}) or a list of one list per head {names}; a flat list is "
        "ambiguous with several heads (Keras refuses it for multi-output models too)"
    )


def set_losses(model, losses):
    """Replaces the losses of the tasks in `losses` (refused once the model is built, if any changes)."""
    new = {t: as_loss(l) for t, l in losses.items()}
    if model.built:
        # The balancer was built for the old losses (uncertainty reads their kind).
        serialize = keras.saving.serialize_keras_object
        changed = [
            t for t, l in new.items() if t not in model.task_losses or serialize(l) != serialize(model.task_losses[t])
        ]
        if changed:
            raise ValueError(
                f"compile(loss=...) changes the losses of tasks {changed} of a model that is already built; "
                "give the losses before it is built (MultiTaskModel(losses=...) or compile before fit/build)"
            )
    merged = {**model.task_losses, **new}
    model.task_losses = {t: merged[t] for t in model.task_names if t in merged}


def set_metrics(model, metrics):
    """Replaces the metric lists of the tasks in `metrics`."""
    for t, identifiers in metrics.items():
        identifiers = [] if identifiers is None else identifiers
        if isinstance(identifiers, (str, keras.metrics.Metric)) or callable(identifiers):
            identifiers = [identifiers]
        model._metric_identifiers[t] = list(identifiers)
    new = task_metrics(model._metric_identifiers, model.task_names)
    # A built Keras layer locks its state tracker; Keras' own compile makes
    # its metric containers with tracking off for the same reason. The
    # metrics are state of no layer (read through `metrics`, never saved),
    # so the old ones leave the tracker and the new ones join it.
    tracker = getattr(model, "_tracker", None)
    locked = bool(tracker is not None and tracker.locked)
    if locked:
        tracker.unlock()
    try:
        for metric in (m for ms in model.task_metrics.values() for m in ms):
            if tracker is not None:
                tracker.untrack(metric)
        model.task_metrics = new
    finally:
        if locked:
            tracker.lock()


def check_keys(what, mapping, task_names, allow_missing=False):
    """A ValueError unless `mapping` is a dict keyed by the task names (some of them, with `allow_missing`)."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{what} must be a dict keyed by task name {list(task_names)}; got {type(mapping).__name__}")
    missing = [t for t in task_names if t not in mapping]
    unknown = sorted(set(mapping) - set(task_names))
    if unknown or (missing and not allow_missing):
        raise ValueError(
            f"{what} are keyed by {sorted(mapping)} but the model's heads are {list(task_names)}"
            + (f"; missing: {missing}" if missing and not allow_missing else "")
            + (f"; unknown: {unknown}" if unknown else "")
        )
