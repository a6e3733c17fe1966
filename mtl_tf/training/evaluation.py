"""A trained model's metrics by task: `evaluate_model`, `group_by_task`, `format_metrics`.

`evaluate_model` evaluates a model on a data set (`mtl_tf.training.distribute.evaluate`,
which works under every strategy) and returns {task: {metric: value}}: the
benchmark's own `evaluate` where it has one (e.g. Delta_m), else the Keras logs
grouped by task (`group_by_task`: `left_accuracy` -> `{"left": {"accuracy": ...}}`).
"""

from __future__ import annotations

from mtl_tf.training import distribute
from mtl_tf.training.workdir import scalar


def task_of(key: str, task_names) -> str | None:
    """The task a log key belongs to (`left_accuracy` -> `left`; the longest task name that prefixes it), or None."""
    matches = [t for t in task_names if key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


def group_by_task(logs: dict, task_names, prefix: str = "") -> dict:
    """{"left_accuracy": a, "left_loss": l, ...} -> {"left": {"accuracy": a, "loss": l}}."""
    grouped = {t: {} for t in task_names}
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        task = task_of(key, task_names)
        if task is not None:
            grouped[task][key[len(task) + 1:]] = scalar(value)
    return grouped


def evaluate_model(model, benchmark, dataset, verbose=0) -> tuple[dict, dict]:
    """({task: {metric: value}}, raw logs) of `model` on `dataset`."""
    logs = distribute.evaluate(model, dataset, verbose=verbose)  # model.evaluate fails under multi-worker
    logs = {k: scalar(v) for k, v in logs.items()}
    if benchmark.evaluate is not None:
        tasks = benchmark.evaluate(model, dataset)
        tasks = {t: {m: scalar(v) for m, v in metrics.items()} for t, metrics in tasks.items()}
    else:
        tasks = group_by_task(logs, benchmark.task_names)
    return tasks, logs


def format_metrics(tasks: dict) -> str:
    """One line per task: `left: accuracy=0.8123 loss=0.5312`."""
    lines = [f"{task}: " + " ".join(f"{m}={v:.4f}" for m, v in sorted(metrics.items())) for task, metrics in tasks.items()]
    return "\n".join(lines)
