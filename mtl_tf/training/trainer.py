"""The training flow: a config in, a trained and evaluated run directory out.

config -> `TrainSettings` (every trainer field read and checked once, before anything is
built or written) -> benchmark (`mtl_tf.benchmarks.build`: data splits, encoder, heads,
losses, metrics, monitor) -> `MultiTaskModel` with the balancer the config names ->
optimizer and learning-rate schedule -> callbacks -> `fit` -> best-on-validation weights
-> test metrics -> `results.json`. The fields are listed in `mtl_tf.training.config`, the
run directory's files in `mtl_tf.training.workdir`.

Nothing here knows a benchmark: benchmarks plug in through the
`mtl_tf.benchmarks.registry.Benchmark` contract, methods through the balancer
registry. Two baselines of the papers are trainer-level methods, not balancers:

  single_task  one network per task (Sener & Koltun's single-task baseline: "solve
               tasks independently ... with dedicated models"): the model keeps
               only the head of `config.single_task.task`, the data only that
               task's target; one run per task.
  grid         static scaling over a grid of the simplex (Sener & Koltun's grid
               search): one `static` run per grid point under
               `<workdir>/points/<point>/`, then the point with the best validation
               monitor is reported (`mtl_tf.training.grid` makes the points).

A finished run is rebuilt by `restore_run` (config.json + best.weights.h5), the one way
`evaluate_workdir` and `mtl_tf.export` load it.

Safety: every field is checked before anything is written (`TrainSettings`: a learning
rate <= 0, epochs or batch size < 1, ... are errors naming the field; `preflight`: the
method's and the model's options, without the data); config.json is written once the data
and the model are built, so a refused run never blocks the corrected one; one process at a
time trains in a workdir (`mtl_tf.training.workdir.locked`, an OS lock a crash cannot
leave behind); temporaries of a crashed run are removed at the start; under a mirrored or
multi-worker strategy a batch the replicas cannot split is refused up front
(`check_replica_batches`). With `verbose` the start and a resume print a `banner`;
`describe_saved` says what an interrupted run left on disk.

results.json: `method`, `seed`, `benchmark`, `tasks` ({task: {metric: value}} on
the test split, e.g. `accuracy` as a fraction in [0, 1], and `loss`),
`validation` (the same at the best epoch), `best_epoch` (1-based), `monitor`,
`epochs_trained`, `wall_time_s`, `history` (one dict per epoch), `config`,
`versions`, `strategy`, `sizes`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras
import ml_collections
import tensorflow as tf

from mtl_tf import balancers, benchmarks
from mtl_tf.config_fields import read
from mtl_tf.model import MultiTaskModel
from mtl_tf.training import distribute, preflight
from mtl_tf.training.callbacks import AtomicBackupAndRestore, BestCheckpoint, TensorBoard, read_state
from mtl_tf.training.config import add_data_dir, config_to_dict
from mtl_tf.training.grid import grid_point_key, simplex_grid
from mtl_tf.training.workdir import (
    BACKUP,
    BEST_WEIGHTS,
    CONFIG,
    POINTS,
    RESULTS,
    TENSORBOARD,
    TRAIN_STATE,
    check_workdir,
    clean,
    holds_other_config,
    load_results,
    locked,
    remove_temporaries,
    scalar,
    versions,
    write_json,
)

logger = logging.getLogger(__name__)

TRAINER_METHODS = ("single_task", "grid")
TRAINED_AS = {"single_task": "uniform", "grid": "static"}  # the balancer of a trainer-level method
SCHEDULES = ("constant", "multistep", "cosine")
OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
}


# -- settings --------------------------------------------------------------------------------


def check_method(config) -> str:
    """The config's method name, or a ValueError listing every method there is."""
    method = read(config, "method")
    if method in TRAINER_METHODS:
        return method
    if method not in balancers.available():
        raise ValueError(
            f"unknown method {method!r}; expected a balancing method {balancers.available()} "
            f"or a trainer-level baseline {list(TRAINER_METHODS)}"
        )
    return method


def balancer_spec(config) -> tuple[str, dict]:
    """(balancer name, options) for the config's method.

    Options are `method_options.<method>` updated with every `balancer.<option>`
    that is set (not None). An option the method does not take is an error.
    """
    method = check_method(config)
    if method == "grid":
        raise ValueError("method 'grid' is a set of 'static' runs; train it with train_and_evaluate")
    return _balancer(config, method)


def _balancer(config, method: str) -> tuple[str, dict]:
    name = TRAINED_AS.get(method, method)
    defaults = read(config, f"method_options.{name}", {})
    options = dict(defaults.to_dict() if hasattr(defaults, "to_dict") else defaults)
    options.update({k: v for k, v in read(config, "balancer", {}).items() if v is not None})
    if method == "grid":
        options.pop("weights", None)  # every point sets its own
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    accepted = balancers.option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to method {method!r}"
            + (f" (trained as {name!r})" if name != method else "")
            + f"; its options are {list(accepted) or 'none'}. Unset them or pick another method."
        )
    return name, options


def _optimizer(config) -> tuple[str, dict]:
    """(optimizer name, the keyword arguments of `optimizer.*` its class takes, but the learning rate)."""
    section = read(config, "optimizer", {})
    options = {k: v for k, v in section.items() if v is not None}
    name = str(options.pop("name", "sgd")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer.name {name!r}; expected one of {sorted(OPTIMIZERS)}")
    accepted = set(inspect.signature(OPTIMIZERS[name].__init__).parameters)
    skipped = sorted(set(options) - accepted)
    if skipped:  # e.g. `momentum` after switching to Adam on the command line
        logger.warning("optimizer %s does not take %s; ignoring them", name, skipped)
    return name, {k: v for k, v in options.items() if k in accepted and k != "learning_rate"}


def _milestones(value) -> tuple[int, ...]:
    return tuple(sorted(int(m) for m in value))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Every config field the trainer reads, read and checked once (`from_config`).

    A field with a default that a config lacks (the config.json of a run from before the
    field existed) gets the default; a missing required field (benchmark, method, seed,
    epochs, batch_size) or an invalid value is a ValueError naming the field.
    """

    benchmark: str
    method: str  # a balancer, `single_task` or `grid`
    seed: int
    epochs: int
    batch_size: int
    balancer: str  # the balancer trained (`uniform` for single_task, `static` for grid)
    balancer_options: dict
    optimizer: str
    optimizer_options: dict
    learning_rate: float
    schedule: str
    milestones: tuple
    factor: float
    task: str  # single_task.task
    grid_divisions: int
    grid_include_vertices: bool
    grid_total: float
    steps_per_execution: int
    jit_compile: object  # "auto", True or False
    tensorboard_update_freq: int
    patience: int

    @classmethod
    def from_config(cls, config) -> TrainSettings:
        method = check_method(config)
        balancer, balancer_options = _balancer(config, method)
        optimizer, optimizer_options = _optimizer(config)
        schedule = read(config, "schedule.name", "constant", str)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule.name {schedule!r}; expected constant, multistep or cosine")
        task = read(config, "single_task.task", "", str)
        if method == "single_task" and not task:
            raise ValueError(
                "method 'single_task' trains one task per run: set --config.single_task.task to one of the "
                "benchmark's tasks"
            )
        return cls(
            benchmark=read(config, "benchmark", cast=str),
            method=method,
            seed=read(config, "seed", cast=int),
            epochs=read(config, "epochs", cast=int),
            batch_size=read(config, "batch_size", cast=int),
            balancer=balancer,
            balancer_options=balancer_options,
            optimizer=optimizer,
            optimizer_options=optimizer_options,
            learning_rate=read(config, "optimizer.learning_rate", 1e-3, float),
            schedule=schedule,
            milestones=read(config, "schedule.milestones", (), _milestones),
            factor=read(config, "schedule.factor", 0.5, float),
            task=task,
            grid_divisions=read(config, "grid.divisions", 10, int),
            grid_include_vertices=read(config, "grid.include_vertices", False, bool),
            grid_total=read(config, "grid.total", 1.0, float),
            steps_per_execution=read(config, "train.steps_per_execution", 1, int),
            jit_compile=read(config, "train.jit_compile", "auto"),
            tensorboard_update_freq=read(config, "train.tensorboard_update_freq", 100, int),
            patience=read(config, "train.patience", 0, int),
        )._checked()

    def _checked(self) -> TrainSettings:
        """Self, or a ValueError naming the first field whose value cannot train (before anything is built)."""
        limits = (
            ("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
            ("train.steps_per_execution", self.steps_per_execution, 1),
            ("train.tensorboard_update_freq", self.tensorboard_update_freq, 1), ("train.patience", self.patience, 0),
        )
        for field, value, least in limits:
            if value < least:
                raise ValueError(f"config field {field!r} is {value}; expected an integer >= {least} (--config.{field}=...)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"config field 'optimizer.learning_rate' is {self.learning_rate}; expected a positive number "
                "(--config.optimizer.learning_rate=...)"
            )
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"config field 'schedule.factor' is {self.factor}; expected a positive number")
        return self


def _settings(config_or_settings) -> TrainSettings:
    if isinstance(config_or_settings, TrainSettings):
        return config_or_settings
    return TrainSettings.from_config(config_or_settings)


# -- building --------------------------------------------------------------------------------


def _task_of(key: str, task_names) -> str | None:
    matches = [t for t in task_names if key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


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

    monitor = [k for k in benchmark.monitor if _task_of(k, benchmark.task_names) == task]
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
    settings = _settings(settings)
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
    settings = _settings(settings)
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
    settings = _settings(settings)
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


# -- evaluation --------------------------------------------------------------------------------


def group_by_task(logs: dict, task_names, prefix: str = "") -> dict:
    """{"left_accuracy": a, "left_loss": l, ...} -> {"left": {"accuracy": a, "loss": l}}."""
    grouped = {t: {} for t in task_names}
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        task = _task_of(key, task_names)
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


# -- training --------------------------------------------------------------------------------


def train_and_evaluate(config, workdir, *, strategy=None, overwrite: bool = False, verbose=1) -> dict:
    """Trains the config's run in `workdir` (resuming it if a backup is there) and returns its results.

    A workdir whose `results.json` exists is finished: its results are returned
    without training, unless `overwrite`, which first removes the previous run's
    files. The config is checked first (`TrainSettings`), then the workdir is locked
    for this process (`mtl_tf.training.workdir.locked`) and the temporaries of a
    crashed run are removed. With `verbose` other than 0 a banner says what is trained
    where, and on a resume which epoch and best value were restored.

    Raises:
      ValueError: a config field that cannot train (named; method and model options
        too, `mtl_tf.training.preflight`, before any data), a workdir that is a file,
        an unfinished run of a different config in `workdir`, a batch size the
        strategy's replicas cannot split.
      WorkdirLocked: another process trains in `workdir`.
      KeyboardInterrupt: as raised; the finished epochs are saved and the same call
        resumes (`describe_saved` says what is saved).
    """
    workdir = check_workdir(workdir)
    settings = TrainSettings.from_config(config)  # a bad field fails before anything is written
    preflight.check_options(config, settings)  # so do the method's and the model's options
    with locked(workdir):
        if overwrite:
            clean(workdir)
        finished = load_results(workdir)
        if finished is not None:
            logger.info("%s exists: the run is finished; pass overwrite=True (--overwrite) to train again", workdir / RESULTS)
            return finished
        if holds_other_config(workdir, config_to_dict(config)):
            raise RunRefused(
                f"{workdir} holds an unfinished run of a different config ({workdir / CONFIG}); resuming it "
                "with this config would mix two runs. Use another --workdir or --overwrite."
            )
        for path in remove_temporaries(workdir):
            logger.info("removed %s, a temporary file of an interrupted run", path)
        strategy = strategy or tf.distribute.get_strategy()
        train = _train_grid if settings.method == "grid" else _train_single
        return train(config, workdir, settings=settings, strategy=strategy, verbose=verbose)


class RunRefused(ValueError):
    """A run that cannot train as configured, found before training (the message says what to change)."""


def check_replica_batches(num_replicas: int, batch_size: int, sizes: dict, eval_batch_size=None,
                          drop_remainder: bool = False) -> None:
    """A ValueError unless every batch splits over `num_replicas` replicas with at least one example each.

    Under a mirrored or multi-worker strategy each global batch is split between the
    replicas; a batch size that is not a multiple of the replica count, or a last
    batch with fewer examples than replicas, fails deep inside TensorFlow (an `AddN`
    or convolution shape error) instead. `sizes` is {split: examples} (the benchmark's
    `sizes`); the train split uses `batch_size` (its last batch is dropped when
    `drop_remainder`), val and test `eval_batch_size` (default `batch_size`).
    """
    if num_replicas <= 1:
        return
    eval_batch_size = int(eval_batch_size or batch_size)
    for field, size in (("batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
        if size % num_replicas:
            raise RunRefused(
                f"config field {field!r} is {size}, which does not split over the strategy's {num_replicas} replicas; "
                f"use a multiple of {num_replicas}"
            )
    for split, examples in sizes.items():
        batch = batch_size if split == "train" else eval_batch_size
        if not examples or (split == "train" and drop_remainder):
            continue
        last = int(examples) % batch
        if 0 < last < num_replicas:
            raise RunRefused(
                f"the {split} split has {examples} examples: its last batch holds {last} (batch size {batch}), fewer "
                f"than the strategy's {num_replicas} replicas; change the batch size or the number of examples so "
                f"that the last batch has at least {num_replicas}"
                + (" (or set --config.data.drop_remainder=True)" if split == "train" else "")
            )


def _check_strategy_batches(config, settings, benchmark, strategy) -> None:
    check_replica_batches(
        int(strategy.num_replicas_in_sync), settings.batch_size, dict(benchmark.sizes),
        eval_batch_size=read(config, "data.eval_batch_size", None, int),
        drop_remainder=read(config, "data.drop_remainder", False, bool),
    )


def _read_train_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"{path} (the run's per-epoch history and best epoch) is unreadable: {error}. The run cannot resume "
            f"without it: train again from scratch with --overwrite (overwrite=True)"
        ) from None


def banner(settings: TrainSettings, workdir, *, restored_epoch: int = 0, state: dict | None = None) -> str:
    """The lines printed when a run starts or resumes: what, where, how long, where TensorBoard logs go."""
    workdir = Path(workdir)
    lines = [
        f"mtl_tf: {settings.method} on {settings.benchmark}, seed {settings.seed}, {settings.epochs} epochs "
        f"of batch {settings.batch_size}",
        f"  workdir:     {workdir}",
        f"  TensorBoard: tensorboard --logdir {workdir / TENSORBOARD}",
    ]
    if restored_epoch:
        state = state or {}
        best = state.get("best_value")
        best_text = "" if state.get("best_epoch") is None else (
            f"; best so far: epoch {state['best_epoch']}" + ("" if best is None else f", val_monitor {best:.4f}")
        )
        lines.append(f"  resuming after epoch {restored_epoch} of {settings.epochs} (restored from {workdir / BACKUP}){best_text}")
    else:
        lines.append("  starting at epoch 1")
    return "\n".join(lines)


def describe_saved(workdir) -> str:
    """One sentence: what of the (interrupted) run in `workdir` is on disk; for grids, the current point's."""
    workdir = Path(workdir)
    if (workdir / RESULTS).exists():
        return f"the run is finished: {workdir / RESULTS}."
    if (workdir / POINTS).is_dir():
        points = sorted(p for p in (workdir / POINTS).iterdir() if p.is_dir())
        done = [p for p in points if (p / RESULTS).exists()]
        current = [p for p in points if not (p / RESULTS).exists()]
        text = f"{len(done)} grid point(s) finished under {workdir / POINTS}"
        return text + ("; " + describe_saved(current[0]) if current else ".")
    try:
        state = read_state(workdir / BACKUP)
    except (OSError, ValueError):
        state = None
    if state is None:
        return f"no epoch of {workdir} had finished, nothing is saved."
    return f"epoch {state['epoch']} is saved in {workdir / BACKUP}."


def _train_single(config, workdir: Path, *, settings: TrainSettings, strategy, verbose) -> dict:
    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    benchmark = build_benchmark(config, settings)
    _check_strategy_batches(config, settings, benchmark, strategy)
    model = build_model(settings, benchmark, strategy)
    # Only now: a run refused while loading the data or building the model leaves no
    # config.json behind to refuse the corrected command as "a different config".
    write_json(workdir / CONFIG, config_to_dict(config))
    has_val = benchmark.val is not None
    callbacks = [
        BestCheckpoint(workdir, benchmark.monitor, benchmark.monitor_mode, has_validation=has_val,
                       patience=settings.patience),
        # keras.callbacks.TensorBoard + learning rate every N steps, steps continued on a resume
        TensorBoard(log_dir=str(workdir / TENSORBOARD), update_freq=settings.tensorboard_update_freq),
        # Last, so the best weights and the state are on disk before the epoch counts as done.
        AtomicBackupAndRestore(workdir / BACKUP, delete_checkpoint=False),
    ]
    if verbose:
        restored = distribute.restored_epoch(callbacks)
        state = _read_train_state(workdir / TRAIN_STATE) if restored and (workdir / TRAIN_STATE).exists() else None
        print(banner(settings, workdir, restored_epoch=restored, state=state), flush=True)
    distribute.fit(
        model,
        benchmark.train,
        strategy=strategy,
        epochs=settings.epochs,
        validation_data=benchmark.val,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the benchmark's pipeline shuffles (deterministically for the seed)
    )
    fit_end = time.perf_counter()
    state = _read_train_state(workdir / TRAIN_STATE)
    model.load_weights(str(workdir / BEST_WEIGHTS))
    tasks, test_logs = evaluate_model(model, benchmark, benchmark.test)
    best_epoch = state["best_epoch"]
    best_entry = next((h for h in state["history"] if h["epoch"] == best_epoch), {})
    results = {
        "method": settings.method,
        "seed": settings.seed,
        "benchmark": benchmark.name,
        "tasks": tasks,
        "validation": group_by_task(best_entry, benchmark.task_names, prefix="val_") if has_val else None,
        "test_logs": test_logs,
        "best_epoch": best_epoch,
        "monitor": {
            "keys": list(benchmark.monitor),
            "mode": benchmark.monitor_mode,
            "value": state["best_value"],
            "selection": "best validation epoch" if has_val else "last epoch (no validation split)",
        },
        "epochs_trained": len(state["history"]),
        # Training time summed over every (resumed) session, plus this session's evaluation.
        "wall_time_s": float(state.get("elapsed_s", 0.0)) + time.perf_counter() - fit_end,
        "session_wall_time_s": time.perf_counter() - start,
        "history": state["history"],
        "sizes": dict(benchmark.sizes),
        "strategy": {"class": type(strategy).__name__, "num_replicas": int(strategy.num_replicas_in_sync)},
        "config": config_to_dict(config),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(workdir / RESULTS, results)
    shutil.rmtree(workdir / BACKUP, ignore_errors=True)
    return results


def _train_grid(config, workdir: Path, *, settings: TrainSettings, strategy, verbose) -> dict:
    start = time.perf_counter()
    task_names = benchmarks.build(config).task_names
    write_json(workdir / CONFIG, config_to_dict(config))  # after the data loaded (see _train_single)
    points = simplex_grid(len(task_names), settings.grid_divisions, settings.grid_include_vertices, settings.grid_total)
    runs = []
    for weights in points:
        point_config = copy.deepcopy(config)
        point_config.method = "static"
        point_config.balancer.weights = tuple(weights)
        point_dir = workdir / POINTS / grid_point_key(weights)
        keras.backend.clear_session()
        result = train_and_evaluate(point_config, point_dir, strategy=strategy, verbose=verbose)
        runs.append({
            "weights": list(weights),
            "workdir": str(point_dir),
            "tasks": result["tasks"],
            "validation": result["validation"],
            "monitor_value": result["monitor"]["value"],
        })
    mode = runs and load_results(runs[0]["workdir"])["monitor"]["mode"]
    scored = [r for r in runs if r["monitor_value"] is not None]
    if scored:
        pick = max if mode == "max" else min
        selected = pick(scored, key=lambda r: r["monitor_value"])
    else:
        selected = runs[-1]
    results = {
        "method": "grid",
        "seed": settings.seed,
        "benchmark": settings.benchmark,
        "tasks": selected["tasks"],
        "validation": selected["validation"],
        "selected": {"weights": selected["weights"], "workdir": selected["workdir"]},
        "points": runs,
        "wall_time_s": float(sum(load_results(r["workdir"])["wall_time_s"] for r in runs)),
        "session_wall_time_s": time.perf_counter() - start,
        "config": config_to_dict(config),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(workdir / RESULTS, results)
    return results


# -- a finished run ------------------------------------------------------------------------------


def restore_run(workdir, *, data_dir=None, strategy=None):
    """(model, benchmark, config) of a run of `train_and_evaluate`, with its best weights loaded.

    The model is rebuilt from `<workdir>/config.json` (a grid run: its selected point's);
    `data_dir` points the benchmark at data that moved.
    """
    workdir = Path(workdir)
    results = load_results(workdir)
    if results is not None and results.get("method") == "grid":
        return restore_run(results["selected"]["workdir"], data_dir=data_dir, strategy=strategy)
    config_path, weights_path = workdir / CONFIG, workdir / BEST_WEIGHTS
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {workdir} is not a (trained) run directory of launch/train.py")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    if data_dir is not None:
        add_data_dir(config, data_dir)
    settings = TrainSettings.from_config(config)
    keras.utils.set_random_seed(settings.seed)
    benchmark = build_benchmark(config, settings)
    strategy = strategy or tf.distribute.get_strategy()
    model = build_model(settings, benchmark, strategy)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(str(weights_path))
    except (OSError, ValueError, KeyError) as error:  # h5py: OSError for a truncated file
        raise ValueError(
            f"{weights_path} cannot be loaded: {error}. It is damaged (truncated?) or not this config's model; "
            "train the run again (launch/train.py --overwrite)"
        ) from None
    return model, benchmark, config


def evaluate_workdir(workdir, *, split: str = "test", data_dir=None, strategy=None) -> dict:
    """Re-evaluates a run's best weights: {task: {metric: value}} on `split` (test or val)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    model, benchmark, _ = restore_run(workdir, data_dir=data_dir, strategy=strategy)
    dataset = benchmark.test if split == "test" else benchmark.val
    if dataset is None:
        raise ValueError(f"benchmark {benchmark.name!r} has no {split} split")
    tasks, _ = evaluate_model(model, benchmark, dataset)
    return tasks
