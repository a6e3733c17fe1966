"""(The SIGKILL-during-a-backup-write test is marked slow: `python -m pytest tests/launch/test_resume.py -m slow`.)

Fault tolerance of launch/train.py: a run killed with SIGKILL in the middle of an epoch, or while
it writes its backup, and restarted with the same command, ends exactly like an uninterrupted run
(the same weights, history and test metrics): it resumes from the last finished epoch, with that
epoch's optimizer and balancer state and the data order of an uninterrupted run.
"""

import json
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mtl_tf.training import callbacks
from tests.launch.conftest import REPO, TINY, flag_args, run_script

ARGS = ["--config=configs/multi_fashion.py:smoke", "--config.method=mgda_ub", "--config.seed=4", "--config.epochs=3",
        *flag_args(TINY), "--verbose=0"]

# Runs launch/train.py as __main__ in a process that SIGKILLs itself at a chosen point.
KILLER = """
import os, runpy, signal, sys
sys.path.insert(0, {repo!r})
import keras
from mtl_tf.training import callbacks, distribute
where, epoch_to_die = sys.argv[1], int(sys.argv[2])

class KillMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == epoch_to_die and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

real_fit = distribute.fit
def fit(model, train, **kwargs):
    if where == "mid_epoch":
        kwargs["callbacks"] = [*kwargs["callbacks"], KillMidEpoch()]
    return real_fit(model, train, **kwargs)
distribute.fit = fit

if where == "during_backup_write":
    real_fsync = callbacks._fsync_file
    def fsync(path):  # the new weights are written to a temporary file, not yet renamed
        if path.name.endswith(".weights.h5") and callbacks.read_state(path.parent) is not None \\
                and callbacks.read_state(path.parent)["epoch"] == epoch_to_die:
            with open(path, "r+b") as f:
                f.truncate(100)  # and half written when the process dies
            os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(path)
    callbacks._fsync_file = fsync

sys.argv = ["train.py", *sys.argv[3:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return out


def run_until_killed(where, epoch, args, env):
    code = KILLER.format(repo=str(REPO), script=str(REPO / "launch" / "train.py"))
    completed = subprocess.run([sys.executable, "-c", code, where, str(epoch), *args], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {completed.returncode}:\n{completed.stderr[-3000:]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fake_fashion_dir, isolated_env):
    workdir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    run_script("train.py", [*ARGS, f"--data_dir={fake_fashion_dir}", f"--workdir={workdir}"], isolated_env)
    return workdir


def assert_same_run(workdir, reference):
    # The same float32 steps on the same data: a resumed process restores exact float32 values, but its
    # kernels (oneDNN, thread count) may sum in another order: 1e-6 ~ 8 eps32 on values of order 1.
    got, want = (json.loads((w / "results.json").read_text()) for w in (workdir, reference))
    assert [h["epoch"] for h in got["history"]] == [1, 2, 3]
    for g, w in zip(got["history"], want["history"]):
        for key in ("loss", "left_loss", "right_accuracy", "left_weight", "val_loss", "val_left_accuracy"):
            np.testing.assert_allclose(g[key], w[key], rtol=0, atol=1e-6, err_msg=f"epoch {g['epoch']} {key}")
    assert got["best_epoch"] == want["best_epoch"]
    for task in ("left", "right"):
        for metric in ("accuracy", "loss"):
            np.testing.assert_allclose(got["tasks"][task][metric], want["tasks"][task][metric], rtol=0, atol=1e-6)
    a, b = weights(workdir / "best.weights.h5"), weights(reference / "best.weights.h5")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)


def test_sigkill_in_the_middle_of_an_epoch_then_the_same_command_ends_like_an_uninterrupted_run(
        uninterrupted, fake_fashion_dir, isolated_env, tmp_path):
    workdir = tmp_path / "killed"
    args = [*ARGS, f"--data_dir={fake_fashion_dir}", f"--workdir={workdir}"]
    run_until_killed("mid_epoch", 1, args, isolated_env)  # dies in epoch 2, after its second batch
    assert not (workdir / "results.json").exists()
    assert callbacks.read_state(workdir / "backup")["epoch"] == 1
    run_script("train.py", args, isolated_env)
    assert_same_run(workdir, uninterrupted)
    assert not (workdir / "backup").exists()


@pytest.mark.slow  # the in-process version: tests/training/test_callbacks.py
def test_sigkill_while_writing_the_backup_keeps_the_previous_one(uninterrupted, fake_fashion_dir, isolated_env, tmp_path):
    workdir = tmp_path / "killed_in_write"
    args = [*ARGS, f"--data_dir={fake_fashion_dir}", f"--workdir={workdir}"]
    run_until_killed("during_backup_write", 1, args, isolated_env)  # dies writing epoch 2's backup
    backup = workdir / "backup"
    assert callbacks.read_state(backup) == {"epoch": 1, "weights": "epoch-0001.weights.h5"}
    assert list(backup.glob(".tmp.*"))  # the half-written file is there, and ignored
    run_script("train.py", args, isolated_env)
    assert_same_run(workdir, uninterrupted)


def test_a_foreign_or_broken_backup_state_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text("")
    with pytest.raises(ValueError, match="not a backup state written by mtl_tf.checkpointing"):
        callbacks.read_state(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 2, "weights": "epoch-0002.weights.h5"}))
    with pytest.raises(FileNotFoundError, match="epoch-0002.weights.h5, which is missing"):
        callbacks.read_state(tmp_path)


# Runs launch/train.py as __main__ in a process that receives SIGTERM (a batch scheduler's stop) mid-epoch.
TERMINATED = """
import os, runpy, signal, sys
sys.path.insert(0, {repo!r})
import keras
from mtl_tf.training import distribute
epoch_to_stop = int(sys.argv[1])

class TermMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == epoch_to_stop and batch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

real_fit = distribute.fit
def fit(model, train, **kwargs):
    kwargs["callbacks"] = [*kwargs["callbacks"], TermMidEpoch()]
    return real_fit(model, train, **kwargs)
distribute.fit = fit
sys.argv = ["train.py", *sys.argv[2:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_sigterm_says_what_is_saved_exits_143_and_the_same_command_resumes(
        uninterrupted, fake_fashion_dir, isolated_env, tmp_path):
    workdir = tmp_path / "terminated"
    args = [*ARGS, f"--data_dir={fake_fashion_dir}", f"--workdir={workdir}"]
    code = TERMINATED.format(repo=str(REPO), script=str(REPO / "launch" / "train.py"))
    completed = subprocess.run([sys.executable, "-c", code, "1", *args], env=isolated_env, cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 128 + signal.SIGTERM, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines[-1] == (f"terminated (SIGTERM): epoch 1 is saved in {workdir / 'backup'}. "
                         "Run the same command to resume.")
    assert callbacks.read_state(workdir / "backup")["epoch"] == 1
    run_script("train.py", args, isolated_env)
    assert_same_run(workdir, uninterrupted)
