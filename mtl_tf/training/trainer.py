"""The training flow: a config in, a trained and evaluated run directory out.

config -> `TrainSettings` (every trainer field read and checked once, before anything is
built or written; `mtl_tf.training.settings`) -> benchmark (`mtl_tf.benchmarks.build`: data
splits, encoder, heads, losses, metrics, monitor) -> `MultiTaskModel` with the balancer the
config names -> optimizer and learning-rate schedule (`mtl_tf.training.build`) -> callbacks
-> `fit` -> best-on-validation weights -> test metrics (`mtl_tf.training.evaluation`) ->
`results.json`. The fields are listed in `mtl_tf.training.config`, the run directory's files
in `mtl_tf.training.workdir`. The names of those steps are importable from here too.

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
import json
import logging
import shutil
import time
from pathlib import Path

import keras
import ml_collections
import tensorflow as tf

from mtl_tf import benchmarks
from mtl_tf.config_fields import read
from mtl_tf.training import distribute, preflight
# Re-exported: the settings, building and evaluation steps of the flow live in their own modules.
from mtl_tf.training.build import (  # noqa: F401
    build_benchmark,
    build_model,
    input_shape,
    make_learning_rate,
    make_optimizer,
    steps_per_epoch,
)
from mtl_tf.training.callbacks import AtomicBackupAndRestore, BestCheckpoint, TensorBoard, read_state
from mtl_tf.training.config import add_data_dir, config_to_dict
from mtl_tf.training.evaluation import evaluate_model, format_metrics, group_by_task  # noqa: F401
from mtl_tf.training.grid import grid_point_key, simplex_grid
from mtl_tf.training.settings import (  # noqa: F401
    OPTIMIZERS,
    SCHEDULES,
    TRAINED_AS,
    TRAINER_METHODS,
    TrainSettings,
    balancer_spec,
    check_method,
)
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
    versions,
    write_json,
)

logger = logging.getLogger(__name__)


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
