"""SIGTERM as Ctrl-C: a batch scheduler's stop takes the launch scripts' interrupt path.

Schedulers (Slurm, Kubernetes, a cloud's preemption) send SIGTERM and, after a
grace period, SIGKILL. Python's default SIGTERM action ends the process at once
with only the shell's `Terminated`, so nobody learns what was saved. With
`handle_sigterm()` a SIGTERM raises `Terminated`, a `KeyboardInterrupt`, where
the scripts already say what is saved and that the same command resumes.
"""

from __future__ import annotations

import signal

#: The exit code of a process ended by SIGTERM (128 + 15), which schedulers expect.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def _raise_terminated(signum, frame):
    # Once: a second SIGTERM while the message is printed must not cut it short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def handle_sigterm() -> None:
    """From now on a SIGTERM raises `Terminated` in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def describe(error: KeyboardInterrupt) -> tuple[str, int]:
    """("terminated (SIGTERM)", 143) for `Terminated`, ("interrupted", 130) for Ctrl-C."""
    if isinstance(error, Terminated):
        return "terminated (SIGTERM)", SIGTERM_EXIT_CODE
    return "interrupted", 130
