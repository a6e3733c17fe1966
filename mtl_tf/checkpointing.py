"""Crash-safe epoch backups: a killed run restarts at its last finished epoch.

`AtomicBackupAndRestore` does what `keras.callbacks.BackupAndRestore` does
(save the model's weights, which include the optimizer's and the balancer's
state, at each epoch end; on `on_train_begin` load them and set
`model._initial_epoch`, which `fit` and `mtl_tf.distribute`'s multi-worker loop
start from), but no crash can leave the backup unreadable or inconsistent.

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
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import keras

STATE = "state.json"


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
            f"{path} is not a backup state written by mtl_tf.checkpointing (expected JSON with integer "
            f"'epoch' and 'weights' file name): {error}. Remove {Path(backup_dir)} to train from scratch."
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
        self.model.load_weights(str(self.backup_dir / state["weights"]))
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
