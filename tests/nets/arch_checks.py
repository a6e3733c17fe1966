"""Checks shared by the multi-task architecture tests (cross-stitch, MMoE, CGC/PLE, MTAN).

* `count(layer)`: trainable and non-trainable parameter numbers read from the
  variables' shapes (the tests compare them with a hand count from the layer
  sizes written in each test);
* `check_round_trip(body, x)`: the shared `check_serialization` on the config,
  then a clone from `get_config` given the body's weights computes the same
  (dict) outputs in inference mode;
* `fit_epoch(encoder, heads, x, y, balancer)`: one epoch of `fit` of a
  `MultiTaskModel` on tiny data, returning the History's logs (finite
  losses are asserted);
* `refuses_representation_gram(...)`: `fit` with a representation-Gramian
  method raises the ValueError naming the method, the option and the encoder.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import mtl_tf
from tests.keras_checks import check_serialization


def count(layer):
    """(trainable, non-trainable) parameter numbers of a built layer."""
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
    frozen = sum(int(np.prod(v.shape)) for v in layer.non_trainable_variables)
    return trainable, frozen


def _numpy(outputs):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def check_round_trip(body, x, atol=1e-5):
    """Config round trip (shared check) and equal outputs of a clone with the same weights."""
    expected = _numpy(body(x, training=False))
    clone = check_serialization(body)
    clone(x, training=False)
    clone.set_weights(body.get_weights())
    got = _numpy(clone(x, training=False))
    keras.tree.map_structure(lambda a, b: np.testing.assert_allclose(a, b, atol=atol), got, expected)
    return clone


def model(encoder, heads, balancer, options=None, loss="mse"):
    m = mtl_tf.MultiTaskModel(
        encoder=encoder, heads=heads, losses={t: loss for t in heads}, balancer=balancer,
        balancer_options=options,
    )
    m.compile(optimizer=keras.optimizers.SGD(1e-2), jit_compile=False)
    return m


def fit_epoch(encoder, heads, x, y, balancer, options=None, loss="mse", batch_size=4):
    """One fit epoch; asserts finite task losses and returns the last logs."""
    m = model(encoder, heads, balancer, options, loss)
    before = [np.array(v) for v in m.encoder.trainable_variables] if m.built else None
    logs = m.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False).history
    for t in heads:
        assert math.isfinite(logs[f"{t}_loss"][-1]), (balancer, t, logs)
    assert before is None or any(
        not np.array_equal(b, np.array(v)) for b, v in zip(before, m.encoder.trainable_variables)
    )
    return {k: v[-1] for k, v in logs.items()}, m


def refuses_representation_gram(encoder, heads, x, y, balancer, options=None, loss="mse"):
    m = model(encoder, heads, balancer, options, loss)
    with pytest.raises(ValueError) as info:
        m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    message = str(info.value)
    assert repr(balancer) in message, message
    assert encoder.name in message and type(encoder).__name__ in message, message
    assert "diagonal" in message, message
    return message
