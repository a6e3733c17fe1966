"""The trainer's callbacks: best weights and history, crash-safe epoch backups, TensorBoard.

`BestCheckpoint` keeps the weights of the best validation epoch and a history that
survives resumes (`train_state.json`, `best.weights.h5`).

`AtomicBackupAndRestore` does what `keras.callbacks.BackupAndRestore` does
(save the model's weights, which include the optimizer's and the balancer's
state, at each epoch end; on `on_train_begin` load them and set
`model._initial_epoch`, which `fit` and `mtl_tf.training.distribute`'s
multi-worker loop start from), but no crash can leave the backup unreadable or
inconsistent.

Why not Keras' own callback: Keras 3.15 `BackupAndRestore._save_model` writes
`latest.weights.h5` in place and then `training_metadata.json` in place (opened
with "w", so truncated first). `double_checkpoint=True` copies the previous pair
to `*.bkp` first and falls back to it when loading the weights raises `OSError`,
but (a) a kill between the weight write and the metadata write leaves epoch-N
weights with epoch-(N-1) metadata, so epoch N is silently trained twice, and
(b) a kill during the metadata write leaves an empty JSON file, whose
`JSONDecodeError` is not caught, so the run can never restart.

Scheme here (every step is atomic, and the pointer is written last):

  backup/epoch-000N.weights.h5   written to a temporary name, fsynced, renamed;
  backup/state.json              {"epoch": N, "weights": "epoch-000N.weights.h5"},
                                 written to a temporary name, fsynced, renamed
                                 (`os.replace` is atomic on POSIX);
  older weight files             deleted only after the pointer moved on.

A crash at any point leaves `state.json` naming a complete weights file (the
new one or the previous one). Leftover temporaries are ignored and removed.

Resuming within an epoch is not possible with Keras `fit` (it restarts at an
epoch boundary); `advance_dataset` makes the data order of the resumed epochs
the same as in an uninterrupted run (see its docstring).

`TensorBoard` is `keras.callbacks.TensorBoard` plus the learning rate in the
every-N-steps (`batch_*`) scalars (Keras writes it only with the epoch scalars), every
epoch written whatever the steps per epoch, and `batch_*` steps that continue after a
resume instead of restarting at 0 (the epoch steps already do).
What is logged, every `update_freq` steps (`batch_<key>`) and every epoch
(`epoch_<key>`, validation under `validation/`): every log of `train_step`
(listed in `mtl_tf.step_logs`): `loss`, `{task}_loss`, each task metric
(`{task}_accuracy`, ...), the task weights (`{task}_weight` of the step, alpha for
MGDA, and `{task}_weight_mean`, their mean over the epoch so far), `skipped_update`,
...; `val_monitor` (`BestCheckpoint`) and `learning_rate`. The values come from
the logs `train_step` returns, so nothing is written inside the compiled
(possibly XLA) step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from mtl_tf.training import workdir as workdir_files


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the best validation epoch and a history that survives resumes.

    `val_monitor`, which this callback adds to the epoch logs (so the progress
    bar, TensorBoard, train_state.json and results.json's `history` have it), is
    the mean of `val_<key>` over the `monitor` keys at that epoch: the
    benchmark's `Benchmark.monitor` (the task accuracies for multi_mnist,
    multi_fashion, multi_fashion_mnist and celeba, the task losses for the
    Cityscapes and NYUv2 benchmarks; for a `single_task` run its task's keys,
    else its loss). It is the value the run
    selects its best epoch by: the highest with `mode="max"`, the lowest with
    "min" (`Benchmark.monitor_mode`); results.json's `monitor` records the keys,
    the mode and the best value. Without validation data there is no
    `val_monitor` and the last epoch is kept. State (history, best epoch and
    value, elapsed time) lives in `train_state.json`, written atomically at
    each epoch end before the backup callback runs; after a resume, epochs at
    or after the restored epoch are dropped from the history. With
    `patience > 0` training stops once the monitor has not improved for that
    many epochs.
    """

    def __init__(self, workdir, monitor, mode="max", has_validation=True, patience=0):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', got {mode!r}")
        self.workdir = Path(workdir)
        self.monitor = list(monitor)
        self.mode = mode
        self.has_validation = has_validation
        self.patience = int(patience or 0)
        self.state_path = self.workdir / workdir_files.TRAIN_STATE
        self.weights_path = self.workdir / workdir_files.BEST_WEIGHTS
        self.state = {"history": [], "best_epoch": None, "best_value": None, "elapsed_s": 0.0}
        self._resumed_checked = False
        self._session_start = None

    def on_train_begin(self, logs=None):
        if self.state_path.exists():
            try:
                self.state = json.loads(self.state_path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as error:
                raise ValueError(
                    f"{self.state_path} (the run's history and best epoch) is unreadable: {error}. The run cannot "
                    "resume without it: train again from scratch with --overwrite (overwrite=True)"
                ) from None
        self._session_start = time.perf_counter()
        self._elapsed_before = float(self.state.get("elapsed_s", 0.0))

    def on_epoch_begin(self, epoch, logs=None):
        if not self._resumed_checked:
            self._resumed_checked = True
            self.state["history"] = [h for h in self.state["history"] if h["epoch"] <= epoch]

    def _improved(self, value):
        best = self.state["best_value"]
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.mode == "max" else value < best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        value = None
        if self.has_validation:
            missing = [k for k in self.monitor if f"val_{k}" not in logs]
            if missing:
                raise KeyError(
                    f"the monitor keys {['val_' + k for k in missing]} are not in the epoch logs; "
                    f"available: {sorted(k for k in logs if k.startswith('val_'))}"
                )
            value = float(np.mean([workdir_files.scalar(logs[f"val_{k}"]) for k in self.monitor]))
            logs["val_monitor"] = value
        improved = (not self.has_validation) or self._improved(value)
        if improved:
            tmp = self.workdir / f".best.{os.getpid()}.{uuid.uuid4().hex[:8]}.weights.h5"
            self.model.save_weights(str(tmp))
            os.replace(tmp, self.weights_path)
            self.state["best_epoch"] = epoch + 1
            self.state["best_value"] = value
        entry = {"epoch": epoch + 1}
        entry.update({k: workdir_files.scalar(v) for k, v in logs.items()})
        self.state["history"].append(entry)
        self.state["elapsed_s"] = self._elapsed_before + time.perf_counter() - self._session_start
        workdir_files.write_json(self.state_path, self.state)
        if self.patience and self.has_validation and epoch + 1 - self.state["best_epoch"] >= self.patience:
            self.model.stop_training = True


# -- the epoch backup ------------------------------------------------------------------


STATE = "state.json"  # in the backup directory


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def read_state(backup_dir) -> dict | None:
    """The backup's `{"epoch": N, "weights": file}`, or None when there is no backup."""
    path = Path(backup_dir) / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        epoch, weights = int(state["epoch"]), str(state["weights"])
    except (ValueError, KeyError, TypeError) as error:
        # Cannot happen with this module's writes (the file is replaced atomically);
        # a hand-edited or foreign file is an error, not a silent restart from scratch.
        raise ValueError(
            f"{path} is not a backup state written by mtl_tf checkpointing (AtomicBackupAndRestore; expected JSON "
            f"with integer 'epoch' and 'weights' file name): {error}. Remove {Path(backup_dir)} to train from scratch."
        ) from error
    if not (Path(backup_dir) / weights).exists():
        raise FileNotFoundError(f"{path} names {weights}, which is missing from {backup_dir}")
    return {"epoch": epoch, "weights": weights}


class AtomicBackupAndRestore(keras.callbacks.Callback):
    """Backs up the model at each epoch end and restores it at `on_train_begin` (see module doc).

    Args:
      backup_dir: directory of the backup (created when needed).
      delete_checkpoint: remove `backup_dir` at the end of a training that was not
        interrupted. The trainer keeps it (False) and removes it itself once
        results.json is written, so a crash during evaluation does not retrain.
    """

    def __init__(self, backup_dir, delete_checkpoint: bool = False):
        super().__init__()
        if not backup_dir:
            raise ValueError("AtomicBackupAndRestore needs a backup_dir")
        self.backup_dir = Path(backup_dir)
        self.delete_checkpoint = bool(delete_checkpoint)
        self.restored_epoch = 0

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                f"model {self.model.name!r} must be built before training with AtomicBackupAndRestore "
                "(call model.build(input_shape) first), so that its weights can be restored"
            )
        self._remove_temporaries()
        state = read_state(self.backup_dir)
        if state is None:
            return
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        weights = self.backup_dir / state["weights"]
        try:
            self.model.load_weights(str(weights))
        except (OSError, ValueError, KeyError) as error:  # h5py: OSError for a truncated file
            raise ValueError(
                f"the backup weights {weights} (epoch {state['epoch']}) cannot be loaded: {error}. It is damaged "
                f"(truncated?) or of another model: remove {self.backup_dir} and {self.backup_dir.parent / workdir_files.TRAIN_STATE} "
                "to train this run from epoch 1, or train again with --overwrite"
            ) from None
        self.restored_epoch = state["epoch"]
        self.model._initial_epoch = state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and not getattr(self.model, "stop_training", False):
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    def save(self, epoch: int) -> Path:
        """Writes the backup of `epoch` finished epochs; returns the weights file."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}.weights.h5"
        token = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp_weights = self.backup_dir / f".tmp.{token}.weights.h5"
        tmp_state = self.backup_dir / f".tmp.{token}.state.json"
        try:
            self.model.save_weights(str(tmp_weights))
            _fsync_file(tmp_weights)
            os.replace(tmp_weights, self.backup_dir / name)
            tmp_state.write_text(json.dumps({"epoch": int(epoch), "weights": name}) + "\n")
            _fsync_file(tmp_state)
            os.replace(tmp_state, self.backup_dir / STATE)
            _fsync_dir(self.backup_dir)
        finally:
            tmp_weights.unlink(missing_ok=True)
            tmp_state.unlink(missing_ok=True)
        for old in self.backup_dir.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return self.backup_dir / name

    def _remove_temporaries(self):
        if self.backup_dir.is_dir():
            for tmp in self.backup_dir.glob(".tmp.*"):
                tmp.unlink(missing_ok=True)


def advance_dataset(dataset, epochs: int) -> None:
    """Makes `dataset`'s next iteration give the data order of epoch `epochs + 1`.

    A `shuffle(..., seed=s, reshuffle_each_iteration=True)` draws a new order
    each time an iterator is created, from a seed sequence fixed by `s`. A
    restarted process that resumes at epoch N would otherwise see epoch 1's
    order again; creating (not consuming) N iterators first moves the sequence
    to where an uninterrupted run is. Cheap: nothing is read.
    """
    for _ in range(int(epochs)):
        iter(dataset)


# -- TensorBoard -------------------------------------------------------------------------


def current_learning_rate(optimizer) -> float | None:
    """The optimizer's learning rate now (a schedule evaluated at its step), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that also writes `batch_learning_rate` every `update_freq` steps,
    writes every epoch's scalars whatever the number of steps per epoch, and continues the
    `batch_*` step count of the first run when a `fit` resumes at epoch N > 0.

    Keras 3.15 writes its epoch summaries inside the `record_if(step % update_freq == 0)` context it
    opened for batch summaries, so with 469 steps per epoch and `update_freq=100` no epoch and no
    validation scalar is written until the global step happens to be a multiple of 100.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._steps_continued = False

    def on_epoch_begin(self, epoch, logs=None):
        # Keras counts `batch_*` steps from 0 in every `fit`; a resumed fit starts at epoch N > 0
        # (the epoch summaries already use N), so continue the batch count where the first run
        # ended, or TensorBoard draws the resumed curves over the first run's.
        if not self._steps_continued:
            self._steps_continued = True
            if epoch > 0 and int(self._global_train_batch) == 0:
                self._global_train_batch = self._batch_calls_before(epoch)
        super().on_epoch_begin(epoch, logs)

    def _batch_calls_before(self, epoch: int) -> int:
        """How many times an uninterrupted `fit` would have called the batch hooks before `epoch`."""
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)  # one call per execution
        steps = (self.params or {}).get("steps")
        if steps:
            return epoch * math.ceil(int(steps) / per_execution)
        # Unknown epoch length: the restored optimizer's step count.
        optimizer = getattr(self.model, "optimizer", None)
        iterations = int(np.asarray(optimizer.iterations)) if optimizer is not None else 0
        return math.ceil(iterations / per_execution)

    def _log_epoch_metrics(self, epoch, logs):
        with self.summary.record_if(True):
            super()._log_epoch_metrics(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(logs, dict) and self._writes_this_batch():
            learning_rate = current_learning_rate(self.model.optimizer)
            if learning_rate is not None:
                logs = {**logs, "learning_rate": learning_rate}  # a copy: the progress bar keeps its logs
        super().on_train_batch_end(batch, logs)

    def _writes_this_batch(self) -> bool:
        # Keras counts `_global_train_batch` in on_train_batch_begin and records
        # batch scalars when it is a multiple of update_freq.
        if self.update_freq == "epoch":
            return False
        return int(self._global_train_batch) % int(self.update_freq) == 0
