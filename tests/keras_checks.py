"""One serialisation check for every Keras object of the library (keras-hub's `run_serialization_test`).

`check_serialization(obj, inputs=None)`:
  1. `get_config()` is JSON-serialisable and `from_config(get_config())` gives
     an object with the same config (the `.keras` contract: a subclass whose
     auto-generated config records defaults instead of the values passed would
     fail here);
  2. `keras.saving.serialize_keras_object` / `deserialize_keras_object` round
     trip through the registered name (`package="mtl_tf"`);
  3. for a layer with `inputs`: the clone, given the original's weights,
     computes the same outputs (inference mode), and a `.keras` file of a
     functional wrapper reloads to the same outputs.
"""

from __future__ import annotations

import json

import keras
import numpy as np


def check_serialization(obj, inputs=None, tmp_path=None, atol=1e-6):
    config = obj.get_config()
    json.dumps(config)
    clone = type(obj).from_config(config)
    assert clone.get_config() == config, f"{type(obj).__name__}: from_config(get_config()) changed the config"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(revived) is type(obj) and revived.get_config() == config
    if inputs is None:
        return clone
    inputs = np.asarray(inputs, "float32")
    expected = keras.ops.convert_to_numpy(obj(inputs, training=False))
    clone(inputs, training=False)
    clone.set_weights(obj.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(inputs, training=False)), expected, atol=atol)
    if tmp_path is not None:
        x = keras.Input(inputs.shape[1:])
        wrapper = keras.Model(x, obj(x))
        path = str(tmp_path / f"{type(obj).__name__}.keras")
        wrapper.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(inputs, training=False)), expected, atol=atol)
    return clone
