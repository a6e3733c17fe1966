"""A run's directory: its file names, atomic JSON, the finished run's results, the code's versions.

Layout (written by `mtl_tf.training.trainer.train_and_evaluate`):

  config.json        the config of the run;
  best.weights.h5    the weights of the best validation epoch (the last epoch
                     when the benchmark has no validation split);
  train_state.json   per-epoch history, best epoch, elapsed time (kept across resumes);
  backup/            `mtl_tf.training.callbacks.AtomicBackupAndRestore`: a killed run
                     restarts at the last finished epoch; removed once results.json exists;
  tensorboard/       `keras.callbacks.TensorBoard` logs;
  points/            the runs of a `grid` baseline, one directory per weight vector;
  results.json       written last and atomically: the run is finished when it exists;
  .lock              `locked`: held (an OS lock) by the one process that trains in the directory.

A crashed process can leave temporaries (`.best.*.weights.h5`, `.<file>.<pid>.<hex>.tmp`,
`backup/.tmp.*`); `remove_temporaries` deletes them once the lock is held, so they cannot be
a live writer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): `locked` cannot lock
    fcntl = None

import keras
import numpy as np
import tensorflow as tf

import mtl_tf

RESULTS = "results.json"
CONFIG = "config.json"
BEST_WEIGHTS = "best.weights.h5"
TRAIN_STATE = "train_state.json"
BACKUP = "backup"
TENSORBOARD = "tensorboard"
POINTS = "points"
LOCK = ".lock"

# What a crashed process leaves behind (see the writers): BestCheckpoint's ".best.<pid>.<hex>.weights.h5",
# `atomic_write_text`'s ".<name>.<pid>.<hex8>.tmp", AtomicBackupAndRestore's "backup/.tmp.<token>.*".
_TEMPORARIES = (
    re.compile(r"^\.best\.\d+\.[0-9a-f]+\.weights\.h5$"),
    re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$"),
)


def json_default(obj):
    """What `json.dumps` cannot write itself: NumPy scalars and arrays, paths; anything else as its repr."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def scalar(value) -> float:
    """A logged value (a NumPy or TensorFlow scalar) as the float a JSON file holds."""
    return float(np.asarray(value))


def atomic_write_text(path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, data) -> None:
    """Writes JSON atomically (a reader sees the old file or the whole new one)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=json_default) + "\n")


def load_results(workdir) -> dict | None:
    """The run's results.json, or None while the run is not finished."""
    path = Path(workdir) / RESULTS
    return json.loads(path.read_text()) if path.exists() else None


def holds_other_config(workdir, config_dict: dict) -> bool:
    """True when `workdir` has a config.json that is not `config_dict` (or is unreadable)."""
    path = Path(workdir) / CONFIG
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()) != config_dict
    except json.JSONDecodeError:
        return True


def clean(workdir) -> None:
    """Removes what a run writes (results, weights, state, backup, logs, grid points)."""
    workdir = Path(workdir)
    for name in (RESULTS, CONFIG, BEST_WEIGHTS, TRAIN_STATE):
        (workdir / name).unlink(missing_ok=True)
    for name in (BACKUP, TENSORBOARD, POINTS):
        shutil.rmtree(workdir / name, ignore_errors=True)


def check_workdir(workdir) -> Path:
    """`workdir` as a Path; a ValueError when it exists and is not a directory."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(
            f"--workdir {workdir} is an existing file, not a directory; give a new directory or a run's directory"
        )
    return workdir


class WorkdirLocked(RuntimeError):
    """Another process trains in the run directory (it holds `<workdir>/.lock`)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written its name yet
        return "another process (it has not written its pid yet)"


@contextlib.contextmanager
def locked(workdir):
    """Holds an exclusive lock on `workdir` (created when missing) while the block runs.

    The lock is `fcntl.flock` on `<workdir>/.lock`, which records the holder's pid,
    host and start time. The operating system releases it when the holder's process
    ends, however it ends (a SIGKILL too), so a crash never leaves a stale lock; the
    file itself stays and means nothing while unlocked.

    Raises:
      WorkdirLocked: another process holds the lock (the message names it).
      ValueError: `workdir` is an existing file.
    """
    workdir = check_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # no flock here: train unlocked rather than not at all
        yield workdir
        return
    path = workdir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLocked(
                f"{workdir} is in use by {_holder(path)} (lock {path}); wait for it to finish or stop it, "
                "or use another --workdir"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield workdir
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def remove_temporaries(workdir) -> list[Path]:
    """Deletes the temporary files a crashed run left in `workdir` and its backup; returns them.

    Call it only while holding `locked(workdir)`: then no live process writes them.
    """
    workdir = Path(workdir)
    removed = []
    candidates = list(workdir.iterdir()) if workdir.is_dir() else []
    if (workdir / BACKUP).is_dir():
        candidates += [p for p in (workdir / BACKUP).iterdir() if p.name.startswith(".tmp.")]
    for path in candidates:
        in_backup = path.parent.name == BACKUP and path.parent.parent == workdir
        if path.is_file() and (in_backup or any(p.match(path.name) for p in _TEMPORARIES)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def versions() -> dict:
    """Library versions, plus the git commit when mtl_tf runs from a checkout.

    A results.json must say which code produced it; an installed wheel has a version, a checkout
    has a commit (with "-dirty" when the tree has uncommitted changes).
    """
    return {
        "mtl_tf": mtl_tf.__version__,
        "mtl_tf_commit": _git_commit(Path(mtl_tf.__file__).resolve().parent.parent),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _git_commit(source_root: Path) -> str | None:
    if not (source_root / ".git").exists():
        return None  # an installed package, not a checkout
    try:
        # The full hash even where tags exist (--exclude="*"), "-dirty" for uncommitted changes.
        return subprocess.run(
            ["git", "-C", str(source_root), "describe", "--always", "--dirty", "--abbrev=40", "--exclude=*"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # git missing or not a repository
        return None
