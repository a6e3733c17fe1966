"""A run's directory (mtl_tf.training.workdir): the versions a results.json records, the lock that keeps a
second process out, the temporaries of a crashed run."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mtl_tf.training import workdir


def test_versions_name_the_commit_of_a_checkout_and_mark_a_dirty_tree(tmp_path):
    import subprocess

    import mtl_tf

    assert workdir.versions()["mtl_tf"] == mtl_tf.__version__
    assert workdir._git_commit(tmp_path) is None  # not a checkout: an installed package
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "a"], check=True)
    head = subprocess.run(git[:3] + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert workdir._git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert workdir._git_commit(tmp_path) == head + "-dirty"


# -- the lock ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
# Another process that takes the lock, says so, and keeps it until it is killed.
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from mtl_tf.training import workdir
with workdir.locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _start_holder(directory):
    script = HOLDER.format(repo=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", script, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_on_a_locked_workdir_stops_naming_the_holder(tmp_path):
    holder = _start_holder(tmp_path / "run")
    try:
        with pytest.raises(workdir.WorkdirLocked) as error:
            with workdir.locked(tmp_path / "run"):
                pytest.fail("the lock was taken twice")
        message = str(error.value)
        assert f"process {holder.pid} on host {socket.gethostname()}, started 20" in message
        assert str(tmp_path / "run") in message
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the OS releases the lock, nothing stale is left
        holder.wait()
    with workdir.locked(tmp_path / "run"):
        info = (tmp_path / "run" / ".lock").read_text()
        assert f'"pid": {os.getpid()}' in info


def test_the_lock_is_released_when_the_block_ends_and_a_file_is_no_workdir(tmp_path):
    with workdir.locked(tmp_path / "new" / "run") as path:
        assert path.is_dir()
    with workdir.locked(tmp_path / "new" / "run"):  # released: it can be taken again
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--workdir .*file is an existing file, not a directory"):
        with workdir.locked(tmp_path / "file"):
            pass


def test_temporaries_of_a_crashed_run_are_removed_and_nothing_else(tmp_path):
    keep = ["best.weights.h5", "train_state.json", "config.json", ".lock", "backup/state.json",
            "backup/epoch-0002.weights.h5", "notes.tmp", ".hidden"]
    stale = [".best.1234.0a1b2c3d.weights.h5", ".train_state.json.1234.0a1b2c3d.tmp", ".config.json.99.deadbeef.tmp",
             "backup/.tmp.1234.0a1b2c3d.weights.h5", "backup/.tmp.1234.0a1b2c3d.state.json"]
    for name in keep + stale:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = workdir.remove_temporaries(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == sorted(stale)
    assert all((tmp_path / name).exists() for name in keep)
