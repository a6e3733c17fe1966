"""The direction (`"max"` / `"min"`) of a `MultiTaskModel`'s logs, for callbacks with `mode="auto"`.

Keras' monitoring callbacks (`EarlyStopping`, `ModelCheckpoint`,
`ReduceLROnPlateau`) find the direction of `mode="auto"` only among the
metrics of Keras' own compile containers, which a model with its own
`train_step` does not have. `MultiTaskModel.fit` sets the direction of each
such callback before training (`resolve_auto_mode`), from
`MultiTaskModel.monitor_mode` (`monitor_mode` here): task losses are
minimised; a task metric's direction is Keras' own (`metric._direction`) or
`higher_is_better` (the metrics of `mtl_tf.metrics`).
"""

from __future__ import annotations


def monitor_mode(task_names, task_metrics, monitor: str) -> str | None:
    """`"max"` or `"min"` for a logged quantity of a model with these tasks and metrics, None if unknown."""
    name = monitor.removeprefix("val_")
    if name == "loss" or name in (f"{t}_loss" for t in task_names):
        return "min"
    for metric in (m for ms in task_metrics.values() for m in ms):
        if metric.name == name:
            return metric_mode(metric)
    return None


def resolve_auto_mode(model, callback) -> None:
    """Sets `callback.mode` of a `mode="auto"` monitoring callback from `model.monitor_mode`."""
    # Keras' MonitorCallback picks the direction of `mode="auto"` from
    # metrics found inside its own compile containers only (Keras 3.15
    # `_set_monitor_op`), which a model with its own train_step does not
    # have; the public `mode` set here before training is read instead.
    if getattr(callback, "mode", None) != "auto" or not isinstance(getattr(callback, "monitor", None), str):
        return
    if getattr(callback, "monitor_op", None) is not None:
        return
    mode = model.monitor_mode(callback.monitor)
    if mode is not None:
        callback.mode = mode


def metric_mode(metric):
    """"max" / "min" from a metric's Keras `_direction` or `higher_is_better`, None if it has neither."""
    direction = getattr(metric, "_direction", None)
    if direction in ("up", "down"):
        return "max" if direction == "up" else "min"
    higher = getattr(metric, "higher_is_better", None)
    if higher is not None:
        return "max" if higher else "min"
    return None
