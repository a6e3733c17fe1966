"""Strategies from the --strategy flag (mtl_tf.training.distribute).

No MirroredStrategy is created here: one per process, and the session's is the
`mirrored_strategy` fixture (used by tests/launch/test_train.py).
"""

import pytest
import tensorflow as tf

from mtl_tf.training import distribute


def test_default_strategy():
    strategy = distribute.make_strategy("default")
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1


def test_unknown_strategy_and_misplaced_devices_are_errors():
    with pytest.raises(ValueError, match="unknown strategy 'tpu'.*'mirrored'"):
        distribute.make_strategy("tpu")
    with pytest.raises(ValueError, match="only used by the 'mirrored' strategy"):
        distribute.make_strategy("default", devices="/cpu:0,/cpu:1")


def test_fit_delegates_to_model_fit_on_one_host():
    calls = []

    class FakeModel:
        def fit(self, data, **kwargs):
            calls.append((data, kwargs))
            return "history"

    assert distribute.fit(FakeModel(), "data", strategy=tf.distribute.get_strategy(), epochs=3) == "history"
    assert calls == [("data", {"epochs": 3})]
