"""Distribution strategies from a flag, and the one `fit` entry point the trainer calls.

`make_strategy(name)` turns the `--strategy` flag of the launch scripts into a
`tf.distribute.Strategy`:

  default       TensorFlow's default strategy (one device, no replicas);
  mirrored      `tf.distribute.MirroredStrategy` over `devices` (default: every
                local GPU, else the CPU), synchronous data parallelism;
  multi_worker  `tf.distribute.MultiWorkerMirroredStrategy` over the hosts of
                `TF_CONFIG` (TensorFlow's collective engine). Keras 3.15
                `model.fit` is broken under it (keras issue 20585), so `fit`
                runs `multi_worker_fit` instead: a small driver loop around
                `strategy.run(model.train_step)` (the same step code) that calls
                the same Keras callbacks (backup, best weights, TensorBoard) and
                returns the same `History`.

Every worker runs the same command; give each its own `--workdir` (the chief's,
task index 0, is the run's result). The global batch is `config.batch_size`:
each of the N workers gets 1/N of every batch (tf.data auto-sharding by data),
and the step's losses, Gram matrices and gradients are reduced across workers,
so the task weights and the weights agree on every worker and equal a
single-process run on the same global batch (tests/launch/test_multi_worker.py).

Create at most one `MirroredStrategy` per process: a second one breaks
TensorFlow's collectives ("Shape mismatch in collective instance"). The launch
scripts create one per process; `launch/reproduce.py` trains each run in its own
process when a strategy other than `default` is asked for.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from mtl_tf.balancers.epochs import EpochSignal
from mtl_tf.step_guard import NonFiniteLossGuard
from mtl_tf.training.callbacks import AtomicBackupAndRestore, advance_dataset, read_state

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default", devices=None) -> tf.distribute.Strategy:
    """The strategy named by `name` (one of `STRATEGIES`).

    Args:
      name: "default", "mirrored" or "multi_worker".
      devices: for "mirrored", the device names (a list or a comma-separated
        string such as "/cpu:0,/cpu:1"); None uses every local GPU, else the CPU.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if devices and name != "mirrored":
        raise ValueError(f"devices={devices} are only used by the 'mirrored' strategy, not {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else _local_devices())
    return _multi_worker_strategy()


def _local_devices():
    """Every local GPU; without one, every logical CPU device (one unless `split_cpu` made more)."""
    if tf.config.list_logical_devices("GPU"):
        return None  # MirroredStrategy's own default: all GPUs
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def split_cpu(num_devices: int) -> None:
    """Splits the first CPU into `num_devices` logical devices (e.g. to mirror over 2 on a CPU host).

    Must run before TensorFlow initialises its devices (before any op), as the
    launch scripts' `--num_cpu_devices` flag does.
    """
    num_devices = int(num_devices)
    if num_devices < 1:
        raise ValueError(f"num_cpu_devices must be >= 1, got {num_devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot split the CPU into {num_devices} logical devices: TensorFlow has already initialised its "
            f"devices ({len(current or [None])} now); split it before any TensorFlow op"
        ) from error


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit(model, train, *, strategy=None, **fit_kwargs):
    """Trains `model` on `train`: `model.fit` on one host, the driver loop on several.

    `fit_kwargs` are those of `keras.Model.fit` (epochs, validation_data,
    callbacks, verbose, ...). Returns the `History`.
    """
    if strategy is not None and is_multi_worker(strategy):
        return multi_worker_fit(model, train, strategy=strategy, **fit_kwargs)
    # A resumed run starts at an epoch boundary; its data order must be that
    # of the same epoch in an uninterrupted run (see `advance_dataset`).
    restored = restored_epoch(fit_kwargs.get("callbacks"))
    if restored:
        advance_dataset(train, restored * iterators_per_epoch(train))
    return model.fit(train, **fit_kwargs)


def iterators_per_epoch(train) -> int:
    """How many iterators Keras 3.15 `fit` creates on `train` per epoch (without `steps_per_epoch`).

    With a known cardinality its epoch iterator makes one at the start of the
    epoch and one more after the last step (kept for a next epoch that then
    makes its own), so a seeded `reshuffle_each_iteration` shuffle advances
    twice per epoch; with an unknown cardinality, once. `multi_worker_fit`
    does the same, so every strategy sees the same data order, and a resumed
    run skips as many as an uninterrupted one made
    (tests/launch/test_resume.py fails if a Keras upgrade changes this).

    Under a non-default strategy (mirrored) `fit` also draws one batch for its
    symbolic build, once per call; a resumed `fit` does it again, so resuming
    stays exact, but a mirrored run sees the data orders one iterator later
    than a default or multi-worker run with the same seed.
    """
    return 2 if int(train.cardinality()) > 0 else 1


def restored_epoch(callbacks) -> int:
    """The epoch the backup callback among `callbacks` will restore (0: none)."""
    for callback in callbacks or ():
        if isinstance(callback, AtomicBackupAndRestore):
            state = read_state(callback.backup_dir)
            return state["epoch"] if state else 0
    return 0


# -- multi-host training (issue 6) -----------------------------------------------------


def _multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` from `TF_CONFIG`, checked first so a bad one fails clearly."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
            "; every worker runs the same command with its own task index"
        )
    try:
        tf_config = json.loads(raw)
        workers = list(tf_config["cluster"]["worker"])
        task = tf_config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG={raw!r} is not valid: expected JSON with cluster.worker (a list of host:port) and "
            f"task.type/task.index ({error!r})"
        ) from error
    is_worker = task.get("type") == "worker" and 0 <= index < len(workers)
    is_the_chief = task.get("type") == "chief" and index == 0 and "chief" in tf_config["cluster"]
    if not (is_worker or is_the_chief):
        raise ValueError(f"TF_CONFIG task {task} does not name one of the {len(workers)} workers of the cluster")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    """True on the worker whose files are the run's (task index 0, or the `chief` task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())


def _distribute(strategy, dataset):
    options = tf.data.Options()
    # Split every global batch between the workers (element-wise), whatever the source
    # (in-memory tensors have no files to shard by).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _step_functions(model, strategy):
    def train_on(iterator):
        logs = strategy.run(model.train_step, args=(next(iterator),))
        # Values the step computed from all-reduced quantities (task weights,
        # skipped_update) are equal on every replica: take the local first one.
        return {k: strategy.experimental_local_results(v)[0] for k, v in logs.items()}

    def test_on(iterator):
        strategy.run(model.test_step, args=(next(iterator),))

    return tf.function(train_on), tf.function(test_on)


def _metric_results(model) -> dict:
    # Metric variables are sync-on-read sums, so reading them here (cross-replica
    # context) gives the metric over the global batch of every worker.
    return {m.name: m.result() for m in model.metrics}


def _to_floats(logs: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in logs.items()}


def _num_batches(dataset):
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else None


def _run_epoch(step, distributed, steps, on_begin=None, on_end=None):
    """Runs `step` until the data set ends (or `steps` steps); returns the last step's logs and the count."""
    iterator = iter(distributed)
    logs, done = {}, 0
    while steps is None or done < steps:
        if on_begin is not None:
            on_begin(done)
        try:
            logs = step(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            break
        if on_end is not None:
            on_end(done, logs)
        done += 1
    return logs, done


def multi_worker_fit(
    model,
    train,
    *,
    strategy,
    epochs: int = 1,
    validation_data=None,
    callbacks=None,
    verbose=1,
    initial_epoch: int = 0,
    steps_per_epoch=None,
    validation_steps=None,
    shuffle=False,
    **unsupported,
):
    """`model.fit` for `MultiWorkerMirroredStrategy`: the driver loop around `strategy.run`.

    Runs `model.train_step` (and `test_step` on `validation_data`) under the
    strategy, calls `callbacks` like `fit` does (`on_train_begin`,
    `on_epoch_begin/end`, `on_train_batch_begin/end`, `on_train_end`), so
    `AtomicBackupAndRestore` restores and backs up the model each
    epoch and `keras.callbacks.TensorBoard` logs the same scalars. Epoch logs are
    the metrics over the global batch (as `fit`'s); batch logs add the step's
    `{task}_weight` and `skipped_update`. `shuffle` is ignored (the data set
    shuffles itself); `steps_per_execution` and `jit_compile` are not used (one
    `tf.function` step). Returns the `keras.callbacks.History`.
    """
    if unsupported:
        raise TypeError(f"multi_worker_fit does not support {sorted(unsupported)}; drop them or use another strategy")
    if not model.built:
        raise ValueError("build the model (model.build(input_shape)) in strategy.scope() before multi_worker_fit")
    if not getattr(model, "compiled", True) or model.optimizer is None:
        raise ValueError("compile the model in strategy.scope() before multi_worker_fit")
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    callbacks = list(callbacks or [])
    # The guard MultiTaskModel.fit adds for itself.
    if hasattr(model, "task_names") and not any(isinstance(c, NonFiniteLossGuard) for c in callbacks):
        callbacks.append(NonFiniteLossGuard())
    if hasattr(model, "task_names") and not any(isinstance(c, EpochSignal) for c in callbacks):
        callbacks.append(EpochSignal())
    train_dist = _distribute(strategy, train)
    val_dist = _distribute(strategy, validation_data) if validation_data is not None else None
    steps = steps_per_epoch or _num_batches(train)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0 and is_chief(strategy),
        verbose=verbose, epochs=epochs, steps=steps, model=model,
    )
    train_step, test_step = _step_functions(model, strategy)
    model.stop_training = False
    model._initial_epoch = None
    callback_list.on_train_begin()
    start = model._initial_epoch or initial_epoch
    per_epoch = iterators_per_epoch(train)
    for _ in range(start * per_epoch):  # the data order of an uninterrupted run (advance_dataset)
        iter(train_dist)
    epoch_logs = {}
    for epoch in range(start, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        last, done = _run_epoch(
            train_step, train_dist, steps,
            on_begin=callback_list.on_train_batch_begin,
            on_end=lambda batch, logs: callback_list.on_train_batch_end(batch, {**_to_floats(_metric_results(model)), **_to_floats(logs)}),
        )
        if done == 0:
            raise ValueError("the training data set gave no batch; expected at least one per epoch")
        for _ in range(per_epoch - 1):  # as model.fit does (iterators_per_epoch)
            iter(train_dist)
        epoch_logs = {**_to_floats(last), **_to_floats(_metric_results(model))}
        if val_dist is not None:
            model.reset_metrics()
            callback_list.on_test_begin()
            _run_epoch(test_step, val_dist, validation_steps or _num_batches(validation_data))
            val_logs = _to_floats(_metric_results(model))
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(epoch_logs)
    return next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))


def evaluate(model, dataset, *, strategy=None, steps=None, verbose=0) -> dict:
    """`model.evaluate(dataset, return_dict=True)`, also under `MultiWorkerMirroredStrategy`."""
    strategy = strategy or model.distribute_strategy
    if not is_multi_worker(strategy):
        return model.evaluate(dataset, steps=steps, return_dict=True, verbose=verbose)
    _, test_step = _step_functions(model, strategy)
    model.reset_metrics()
    _run_epoch(test_step, _distribute(strategy, dataset), steps or _num_batches(dataset))
    return _to_floats(_metric_results(model))
