"""Keeps TensorFlow's start-up notices out of the terminal; every launch script imports it first.

Unless the user set `TF_CPP_MIN_LOG_LEVEL` (then nothing here happens, so
`TF_CPP_MIN_LOG_LEVEL=0 python launch/train.py ...` shows every message), it sets
it to "3" and imports TensorFlow with the process's stderr held back, then writes
back what was printed less the notices every CPU-only machine prints on start-up:

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  ... oneDNN custom operations are on ...
  ... Could not find cuda drivers on your machine, GPU will not be used.
  ... failed call to cuInit: ...                      (only where no NVIDIA device exists)
  ... Unable to register cuDNN / cuFFT / cuBLAS factory ..., TF-TRT Warning: Could not find TensorRT

TensorFlow 2.21's libraries print these through absl before anything can configure
it, so the variable alone no longer silences them. Anything else (a Python warning,
an error of a broken install) is written back as it came. The devices are listed
inside the same window, because a CUDA build reports a failed `cuInit` only then.
TensorFlow's Python logger is set to WARNING: its INFO messages (a mirrored
strategy's device and all-reduce notes) stay out too, its warnings do not.
"""

import os
import re
import sys
import tempfile

_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\)"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
)
_CUINIT = re.compile(r"failed call to cuInit")


def _is_notice(line: str) -> bool:
    if _NOTICES.search(line):
        return True
    # With an NVIDIA device present, a failed cuInit is a real problem (driver, container): shown.
    return bool(_CUINIT.search(line)) and not os.path.exists("/dev/nvidiactl")


def _import_tensorflow_quietly() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold back
        import tensorflow  # noqa: F401

        return
    held = tempfile.TemporaryFile()
    try:
        os.dup2(held.fileno(), 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
        # Its INFO chatter (a mirrored strategy's "Reduce to ... then broadcast" per traced step) shows
        # under absl's INFO verbosity; its warnings and errors still do.
        tf.get_logger().setLevel("WARNING")
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        printed = held.read().decode("utf-8", errors="replace")
        held.close()
        kept = "".join(line for line in printed.splitlines(keepends=True) if not _is_notice(line))
        if kept:
            sys.stderr.write(kept)
            sys.stderr.flush()


if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()
