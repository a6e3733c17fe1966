"""Every registered method builds, holds its state and round-trips its config on any Keras backend.

No training step here: this module runs in the default (TensorFlow) suite and
again under JAX with TensorFlow blocked from import (`tests/backends.py`), the
proof that the balancers' modules import and construct without TensorFlow.
"""

import keras
import numpy as np
import pytest

from mtl_tf import balancers

TASKS = ("a", "b", "c")
# The options a method cannot build without (everything else at its defaults).
NEEDED = {"static": {"weights": [1.0, 2.0, 0.5]}, "uncertainty": {"task_types": {t: "regression" for t in TASKS}}}


@pytest.mark.parametrize("name", balancers.available())
def test_every_method_builds_its_state_and_round_trips_its_config(name):
    method = balancers.get(name, **NEEDED.get(name, {}))
    method.build_for_tasks(TASKS)
    assert method.task_names == TASKS
    for variable in method.variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable.value))), (name, variable.path)
    config = method.get_config()
    clone = balancers.get({"name": name, **{k: v for k, v in config.items() if k in balancers.option_names(name)}})
    assert clone.get_config() == config
    assert method.loss_range_needed() in balancers.LOSS_RANGES


def test_the_registry_lists_every_method_under_every_backend():
    assert len(balancers.available()) >= 26
