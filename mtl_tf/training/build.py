"""What a run trains, built from its settings: the benchmark, the optimizer with its schedule, the model.

`build_benchmark` builds the config's benchmark (`mtl_tf.benchmarks.build`),
restricted to one task for the `single_task` baseline; `make_optimizer` the
Keras optimizer of `optimizer.*` with the learning rate of `make_learning_rate`
(constant, multi-step or cosine over `steps_per_epoch`); `build_model` the
built, compiled `MultiTaskModel` in a distribution strategy's scope.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mtl_tf import benchmarks
from mtl_tf.model import MultiTaskModel
from mtl_tf.training.evaluation import task_of
from mtl_tf.training.settings import OPTIMIZERS, TrainSettings, as_settings


def _select_task(benchmark: benchmarks.Benchmark, task: str) -> benchmarks.Benchmark:
    """The benchmark restricted to one task: one head, one target (single-task baseline)."""
    if task not in benchmark.heads:
        raise ValueError(
            f"single_task.task={task!r} is not a task of benchmark {benchmark.name!r}; "
            f"expected one of {list(benchmark.heads)} (set --config.single_task.task=...)"
        )

    def keep(*element):
        x, y, *rest = element
        if rest and isinstance(rest[0], dict):
            rest = [{task: rest[0][task]}] if task in rest[0] else [None]
            rest = [r for r in rest if r is not None]
        return (x, {task: y[task]}, *rest)

    def restrict(dataset):
        return None if dataset is None else dataset.map(keep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    monitor = [k for k in benchmark.monitor if task_of(k, benchmark.task_names) == task]
    mode = benchmark.monitor_mode
    if not monitor:
        monitor, mode = [f"{task}_loss"], "min"
    evaluate = benchmark.evaluate
    return benchmarks.Benchmark(
        name=benchmark.name,
        train=restrict(benchmark.train),
        val=restrict(benchmark.val),
        test=restrict(benchmark.test),
        encoder=benchmark.encoder,
        heads={task: benchmark.heads[task]},
        losses={task: benchmark.losses[task]},
        metrics={task: benchmark.metrics.get(task, [])},
        monitor=monitor,
        monitor_mode=mode,
        sizes=dict(benchmark.sizes),
        input_shape=benchmark.input_shape,
        evaluate=(lambda model, data: {task: evaluate(model, data)[task]}) if evaluate else None,
    )


def build_benchmark(config, settings: TrainSettings | None = None) -> benchmarks.Benchmark:
    """The config's benchmark, restricted to one task for `single_task`."""
    settings = settings or TrainSettings.from_config(config)
    benchmark = benchmarks.build(config)
    if settings.method == "single_task":
        benchmark = _select_task(benchmark, settings.task)
    return benchmark


def steps_per_epoch(benchmark, batch_size: int) -> int:
    cardinality = int(benchmark.train.cardinality())
    if cardinality > 0:
        return cardinality
    size = benchmark.sizes.get("train")
    if not size:
        raise ValueError(
            f"benchmark {benchmark.name!r}: the training set's length is unknown (cardinality "
            f"{cardinality}) and sizes['train'] is not given; the learning-rate schedule needs one"
        )
    return max(1, math.ceil(size / int(batch_size)))


def make_learning_rate(settings, steps: int):
    """The learning rate of `settings` (or of a config): a float or a `keras.optimizers.schedules` schedule."""
    settings = as_settings(settings)
    lr = settings.learning_rate
    if settings.schedule == "multistep" and settings.milestones:
        # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i]; the
        # optimizer evaluates it at `iterations` (steps done), so the first step of
        # epoch m (iterations == m * steps) is the first one at the new rate.
        boundaries = [m * steps - 1 for m in settings.milestones]
        values = [lr * settings.factor**i for i in range(len(settings.milestones) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if settings.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, settings.epochs * steps))
    return lr


def make_optimizer(settings, steps: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer `optimizer.name` with the arguments of `optimizer.*` it takes.

    Arguments another optimizer would take (e.g. `momentum` after switching to
    Adam on the command line) are skipped with a warning.
    """
    settings = as_settings(settings)
    learning_rate = make_learning_rate(settings, steps)
    return OPTIMIZERS[settings.optimizer](**settings.optimizer_options, learning_rate=learning_rate)


def input_shape(benchmark) -> tuple:
    """One example's shape (no batch axis): the benchmark's, else its training data's."""
    if benchmark.input_shape:
        return tuple(benchmark.input_shape)
    return tuple(benchmark.train.element_spec[0].shape[1:])


def build_model(settings, benchmark, strategy=None) -> MultiTaskModel:
    """A built, compiled `MultiTaskModel` for the benchmark, in the strategy's scope.

    `settings` is a `TrainSettings` or the config it is read from.
    """
    settings = as_settings(settings)
    if settings.method == "grid":
        raise ValueError("method 'grid' is a set of 'static' runs; train it with train_and_evaluate")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = MultiTaskModel(
            encoder=benchmark.encoder,
            heads=benchmark.heads,
            losses=benchmark.losses,
            metrics=benchmark.metrics,
            balancer=settings.balancer,
            balancer_options=dict(settings.balancer_options),
            name=f"{benchmark.name}_{settings.method}",
        )
        model.build((None, *input_shape(benchmark)))
        model.compile(
            optimizer=make_optimizer(settings, steps_per_epoch(benchmark, settings.batch_size)),
            jit_compile=settings.jit_compile,
            steps_per_execution=settings.steps_per_execution,
        )
    return model
