"""The one place that wires a config into a trained, evaluated model.

config -> benchmark (`mtl_tf.benchmarks.build`: data splits, encoder, heads,
losses, metrics, monitor) -> `MultiTaskModel` with the balancer the config
names -> optimizer and learning-rate schedule -> callbacks -> `fit` ->
best-on-validation weights -> test metrics -> `results.json`.

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
               monitor is reported. `simplex_grid` makes the points.

Config fields read (see `base_config`, which every config starts from):

  benchmark, seed, epochs, batch_size    what and how long;
  method                                 a balancer name, `single_task` or `grid`;
  balancer.<option>                      options of the method (None = the method's
                                         default); every option of every
                                         registered balancer exists as a field,
                                         so `--config.balancer.<option>=...` works;
  method_options.<method>.<option>       per-method defaults a config sets (e.g.
                                         Kendall's classification likelihood);
                                         `balancer.<option>` overrides them;
  optimizer.name, optimizer.<kwarg>      a Keras optimizer and its arguments;
  schedule.name                          `constant`, `multistep` (learning rate
                                         times `factor` at each epoch of
                                         `milestones`) or `cosine`;
  single_task.task, grid.*               the two trainer-level baselines;
  train.*                                steps_per_execution, jit_compile,
                                         tensorboard_update_freq, patience (0: off);
  data.*, model.*                        read by the benchmark builder only.

Workdir layout (`train_and_evaluate`):

  config.json        the config of the run;
  best.weights.h5    the weights of the best validation epoch (the last epoch
                     when the benchmark has no validation split);
  train_state.json   per-epoch history, best epoch, elapsed time (kept across resumes);
  backup/            `mtl_tf.training.callbacks.AtomicBackupAndRestore`: a killed run
                     restarts at the last finished epoch; removed once results.json exists;
  tensorboard/       `keras.callbacks.TensorBoard` logs;
  results.json       written last and atomically: the run is finished when it exists.

results.json: `method`, `seed`, `benchmark`, `tasks` ({task: {metric: value}} on
the test split, e.g. `accuracy` as a fraction in [0, 1], and `loss`),
`validation` (the same at the best epoch), `best_epoch` (1-based), `monitor`,
`epochs_trained`, `wall_time_s`, `history` (one dict per epoch), `config`,
`versions`, `strategy`, `sizes`.
"""

from __future__ import annotations

import copy
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
from mtl_tf.model import MultiTaskModel
from mtl_tf.training import distribute
from mtl_tf.training.callbacks import AtomicBackupAndRestore, BestCheckpoint, TensorBoard, _scalar
from mtl_tf.training.grid import grid_point_key, simplex_grid  # noqa: F401
from mtl_tf.training.config import (  # noqa: F401  (moved; re-exported until the trainer moves)
    REPO_ROOT,
    add_data_dir,
    apply_overrides,
    balancer_option_names,
    balancer_options_config,
    base_config,
    config_to_dict,
    parse_value,
    resolve_config_path,
)
from mtl_tf.training.config import load as load_config  # noqa: F401
from mtl_tf.training.workdir import (  # noqa: F401
    BACKUP,
    BEST_WEIGHTS,
    CONFIG,
    POINTS,
    RESULTS,
    TENSORBOARD,
    TRAIN_STATE,
    _git_commit,
    holds_other_config,
    load_results,
    versions,
    write_json,
)
from mtl_tf.training.workdir import clean as clean_workdir

logger = logging.getLogger(__name__)

TRAINER_METHODS = ("single_task", "grid")


# -- configs ---------------------------------------------------------------------------------


def _get(config, dotted: str, default=None):
    """`config.a.b` or `default` when a field is missing or None."""
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node[part] if part in node else None
        except TypeError:
            node = getattr(node, part, None)
    return default if node is None else node


# -- methods ---------------------------------------------------------------------------------


def check_method(config) -> str:
    """The config's method name, or a ValueError listing every method there is."""
    method = config.method
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
    name = "uniform" if method == "single_task" else method
    defaults = _get(config, f"method_options.{name}")
    options = dict(defaults.to_dict() if hasattr(defaults, "to_dict") else (defaults or {}))
    user = _get(config, "balancer")
    if user is not None:
        options.update({k: v for k, v in user.items() if v is not None})
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


# -- building ------------------------------------------------------------------------------


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


def build_benchmark(config) -> benchmarks.Benchmark:
    """The config's benchmark, restricted to one task for `single_task`."""
    benchmark = benchmarks.build(config)
    if config.method == "single_task":
        task = _get(config, "single_task.task", "")
        if not task:
            raise ValueError(
                "method 'single_task' trains one task per run: set --config.single_task.task to one of "
                f"{list(benchmark.heads)}"
            )
        benchmark = _select_task(benchmark, task)
    return benchmark


def steps_per_epoch(benchmark, config) -> int:
    cardinality = int(benchmark.train.cardinality())
    if cardinality > 0:
        return cardinality
    size = benchmark.sizes.get("train")
    if not size:
        raise ValueError(
            f"benchmark {benchmark.name!r}: the training set's length is unknown (cardinality "
            f"{cardinality}) and sizes['train'] is not given; the learning-rate schedule needs one"
        )
    return max(1, math.ceil(size / int(config.batch_size)))


def make_learning_rate(config, steps: int):
    """The config's learning rate: a float or a `keras.optimizers.schedules` schedule."""
    lr = float(_get(config, "optimizer.learning_rate", 1e-3))
    name = _get(config, "schedule.name", "constant")
    if name == "constant":
        return lr
    if name == "multistep":
        milestones = sorted(int(m) for m in (_get(config, "schedule.milestones", ()) or ()))
        if not milestones:
            return lr
        factor = float(_get(config, "schedule.factor", 0.5))
        # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i]; the
        # optimizer evaluates it at `iterations` (steps done), so the first step of
        # epoch m (iterations == m * steps) is the first one at the new rate.
        boundaries = [m * steps - 1 for m in milestones]
        values = [lr * factor**i for i in range(len(milestones) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, int(config.epochs) * steps))
    raise ValueError(f"unknown schedule.name {name!r}; expected constant, multistep or cosine")


_OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
}


def make_optimizer(config, steps: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer `optimizer.name` with the arguments of `optimizer.*` it takes.

    Arguments another optimizer would take (e.g. `momentum` after switching to
    Adam on the command line) are skipped with a warning.
    """
    section = _get(config, "optimizer")
    options = {k: v for k, v in (section.items() if section is not None else []) if v is not None}
    name = str(options.pop("name", "sgd")).lower()
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer.name {name!r}; expected one of {sorted(_OPTIMIZERS)}")
    cls = _OPTIMIZERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters)
    skipped = sorted(set(options) - accepted)
    if skipped:
        logger.warning("optimizer %s does not take %s; ignoring them", name, skipped)
    kwargs = {k: v for k, v in options.items() if k in accepted}
    kwargs["learning_rate"] = make_learning_rate(config, steps)
    return cls(**kwargs)


def _input_shape(benchmark):
    if benchmark.input_shape:
        return tuple(benchmark.input_shape)
    spec = benchmark.train.element_spec[0]
    return tuple(spec.shape[1:])


def build_model(config, benchmark, strategy=None) -> MultiTaskModel:
    """A built, compiled `MultiTaskModel` for the benchmark, in the strategy's scope."""
    strategy = strategy or tf.distribute.get_strategy()
    name, options = balancer_spec(config)
    jit = _get(config, "train.jit_compile", "auto")
    with strategy.scope():
        model = MultiTaskModel(
            encoder=benchmark.encoder,
            heads=benchmark.heads,
            losses=benchmark.losses,
            metrics=benchmark.metrics,
            balancer=name,
            balancer_options=options,
            name=f"{benchmark.name}_{config.method}",
        )
        model.build((None, *_input_shape(benchmark)))
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch(benchmark, config)),
            jit_compile=jit,
            steps_per_execution=int(_get(config, "train.steps_per_execution", 1)),
        )
    return model


# -- training ----------------------------------------------------------------------------


def _task_of(key: str, task_names) -> str | None:
    matches = [t for t in task_names if key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


def group_by_task(logs: dict, task_names, prefix: str = "") -> dict:
    """{"left_accuracy": a, "left_loss": l, ...} -> {"left": {"accuracy": a, "loss": l}}."""
    grouped = {t: {} for t in task_names}
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        task = _task_of(key, task_names)
        if task is not None:
            grouped[task][key[len(task) + 1:]] = _scalar(value)
    return grouped


def evaluate_model(model, benchmark, dataset, verbose=0) -> tuple[dict, dict]:
    """({task: {metric: value}}, raw logs) of `model` on `dataset`."""
    logs = distribute.evaluate(model, dataset, verbose=verbose)  # model.evaluate fails under multi-worker
    logs = {k: _scalar(v) for k, v in logs.items()}
    if benchmark.evaluate is not None:
        tasks = benchmark.evaluate(model, dataset)
        tasks = {t: {m: _scalar(v) for m, v in metrics.items()} for t, metrics in tasks.items()}
    else:
        tasks = group_by_task(logs, benchmark.task_names)
    return tasks, logs


def train_and_evaluate(config, workdir, *, strategy=None, overwrite: bool = False, verbose=1) -> dict:
    """Trains the config's run in `workdir` (resuming it if a backup is there) and returns its results.

    A workdir whose `results.json` exists is finished: its results are returned
    without training, unless `overwrite`, which first removes the previous run's
    files. A workdir holding an unfinished run of a different config is an error.
    """
    workdir = Path(workdir)
    if overwrite:
        clean_workdir(workdir)
    finished = load_results(workdir)
    if finished is not None:
        logger.info("%s exists: the run is finished; pass overwrite=True (--overwrite) to train again", workdir / RESULTS)
        return finished
    method = check_method(config)
    if holds_other_config(workdir, config_to_dict(config)):
        raise ValueError(
            f"{workdir} holds an unfinished run of a different config ({workdir / CONFIG}); resuming it "
            "with this config would mix two runs. Use another --workdir or --overwrite."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / CONFIG, config_to_dict(config))
    strategy = strategy or tf.distribute.get_strategy()
    if method == "grid":
        return _train_grid(config, workdir, strategy=strategy, verbose=verbose)
    return _train_single(config, workdir, strategy=strategy, verbose=verbose)


def _train_single(config, workdir: Path, *, strategy, verbose) -> dict:
    start = time.perf_counter()
    seed = int(config.seed)
    keras.utils.set_random_seed(seed)
    benchmark = build_benchmark(config)
    model = build_model(config, benchmark, strategy)
    has_val = benchmark.val is not None
    best = BestCheckpoint(
        workdir, benchmark.monitor, benchmark.monitor_mode, has_validation=has_val,
        patience=int(_get(config, "train.patience", 0)),
    )
    callbacks = [
        best,
        TensorBoard(  # keras.callbacks.TensorBoard + learning rate every N steps
            log_dir=str(workdir / TENSORBOARD),
            update_freq=int(_get(config, "train.tensorboard_update_freq", 100)),
        ),
        # Last, so the best weights and the state are on disk before the epoch counts as done.
        AtomicBackupAndRestore(workdir / BACKUP, delete_checkpoint=False),
    ]
    distribute.fit(
        model,
        benchmark.train,
        strategy=strategy,
        epochs=int(config.epochs),
        validation_data=benchmark.val,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the benchmark's pipeline shuffles (deterministically for the seed)
    )
    fit_end = time.perf_counter()
    state = json.loads((workdir / TRAIN_STATE).read_text())
    model.load_weights(str(workdir / BEST_WEIGHTS))
    tasks, test_logs = evaluate_model(model, benchmark, benchmark.test)
    best_epoch = state["best_epoch"]
    best_entry = next((h for h in state["history"] if h["epoch"] == best_epoch), {})
    results = {
        "method": config.method,
        "seed": seed,
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


def _train_grid(config, workdir: Path, *, strategy, verbose) -> dict:
    start = time.perf_counter()
    task_names = benchmarks.build(config).task_names
    points = simplex_grid(
        len(task_names),
        int(_get(config, "grid.divisions", 10)),
        bool(_get(config, "grid.include_vertices", False)),
        float(_get(config, "grid.total", 1.0)),
    )
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
    mode = runs and json.loads((Path(runs[0]["workdir"]) / RESULTS).read_text())["monitor"]["mode"]
    scored = [r for r in runs if r["monitor_value"] is not None]
    if scored:
        pick = max if mode == "max" else min
        selected = pick(scored, key=lambda r: r["monitor_value"])
    else:
        selected = runs[-1]
    results = {
        "method": "grid",
        "seed": int(config.seed),
        "benchmark": config.benchmark,
        "tasks": selected["tasks"],
        "validation": selected["validation"],
        "selected": {"weights": selected["weights"], "workdir": selected["workdir"]},
        "points": runs,
        "wall_time_s": float(sum(json.loads((Path(r["workdir"]) / RESULTS).read_text())["wall_time_s"] for r in runs)),
        "session_wall_time_s": time.perf_counter() - start,
        "config": config_to_dict(config),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(workdir / RESULTS, results)
    return results


# -- evaluation of a finished run ------------------------------------------------------------


def evaluate_workdir(workdir, *, split: str = "test", data_dir=None, strategy=None) -> dict:
    """Re-evaluates a run's best weights: {task: {metric: value}} on `split` (test or val)."""
    workdir = Path(workdir)
    results = load_results(workdir)
    if results is not None and results.get("method") == "grid":
        return evaluate_workdir(results["selected"]["workdir"], split=split, data_dir=data_dir, strategy=strategy)
    config_path, weights_path = workdir / CONFIG, workdir / BEST_WEIGHTS
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {workdir} is not a (trained) run directory of launch/train.py")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    keras.utils.set_random_seed(int(config.seed))
    benchmark = build_benchmark(config)
    strategy = strategy or tf.distribute.get_strategy()
    model = build_model(config, benchmark, strategy)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model.load_weights(str(weights_path))
    dataset = benchmark.test if split == "test" else benchmark.val
    if dataset is None:
        raise ValueError(f"benchmark {benchmark.name!r} has no {split} split")
    tasks, _ = evaluate_model(model, benchmark, dataset)
    return tasks


def format_metrics(tasks: dict) -> str:
    """One line per task: `left: accuracy=0.8123 loss=0.5312`."""
    lines = []
    for task, metrics in tasks.items():
        lines.append(f"{task}: " + " ".join(f"{m}={v:.4f}" for m, v in sorted(metrics.items())))
    return "\n".join(lines)
