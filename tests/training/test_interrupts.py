"""SIGTERM takes the launch scripts' Ctrl-C path (`mtl_tf.training.interrupts`).

`tests/launch/test_resume.py` sends SIGTERM to a training `launch/train.py`; here
the handler itself, in this process, so `launch/reproduce.py`'s use is covered too.
"""

import os
import signal

import pytest

from mtl_tf.training import interrupts


@pytest.fixture
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_raises_terminated_a_keyboard_interrupt_once(restore_sigterm):
    interrupts.handle_sigterm()
    with pytest.raises(KeyboardInterrupt) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.5)  # the handler runs at the next bytecode; never reached when it raised
    assert isinstance(caught.value, interrupts.Terminated)
    # A second SIGTERM while the message is printed is ignored, not a second exception.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert interrupts.describe(caught.value) == ("terminated (SIGTERM)", 143)


def test_ctrl_c_keeps_its_own_words_and_code():
    assert interrupts.describe(KeyboardInterrupt()) == ("interrupted", 130)


def test_both_launch_scripts_install_the_handler():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "launch")
    for script in ("train.py", "reproduce.py"):
        with open(os.path.join(root, script)) as handle:
            text = handle.read()
        assert "interrupts.handle_sigterm()" in text and "interrupts.describe(error)" in text, script
