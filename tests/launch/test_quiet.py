"""launch/_quiet.py: TensorFlow's start-up notices stay out of a launch script's stderr unless the user wants them."""

import importlib
import os
import subprocess
import sys

from tests.launch.conftest import REPO

NOTICES = ("cuInit", "oneDNN", "absl::InitializeLog", "Could not find cuda drivers")


def _env(**values):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), **values)
    return env


def test_a_launch_script_prints_no_start_up_notices_by_default(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO / "launch" / "evaluate.py"), "--help"], env=_env(),
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "python launch/evaluate.py --workdir=" in completed.stdout, completed.stdout[-2000:]
    noisy = [line for line in completed.stderr.splitlines() if any(n in line for n in NOTICES)]
    assert not noisy, completed.stderr[-3000:]


def test_the_users_log_level_is_kept_and_nothing_is_held_back():
    probe = ("import logging, os, sys; import launch._quiet; print(os.environ['TF_CPP_MIN_LOG_LEVEL'], "
             "'tensorflow' in sys.modules, logging.getLogger('tensorflow').level)")
    # By default TensorFlow is imported with its Python logger at WARNING (30); a user's level leaves all alone.
    for given, expected in ((None, "3 True 30"), ("0", "0 False 0"), ("1", "1 False 0")):
        env = _env() if given is None else _env(TF_CPP_MIN_LOG_LEVEL=given)
        completed = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
                                   timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert completed.stdout.split() == expected.split(), (given, completed.stdout, completed.stderr[-2000:])


def test_only_the_known_notices_are_dropped(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # importing it here then changes nothing
    quiet = importlib.import_module("launch._quiet")
    assert quiet._is_notice("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert quiet._is_notice("I0000 00:00:17.1 port.cc:153] oneDNN custom operations are on. You may see ...")
    assert quiet._is_notice("I0000 00:00:17.1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU ...")
    assert not quiet._is_notice("UserWarning: something the user should see")
    assert not quiet._is_notice("E0000 00:00:17.1 some_op.cc:12] INTERNAL: a real error")
    monkeypatch.setattr(quiet.os.path, "exists", lambda path: False)  # no NVIDIA device: cuInit fails as expected
    assert quiet._is_notice("E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)")
    monkeypatch.setattr(quiet.os.path, "exists", lambda path: path == "/dev/nvidiactl")  # a GPU machine: shown
    assert not quiet._is_notice("E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)")
