"""`.keras` files written before the numerics moved to `keras.ops` load, evaluate the same, and train on.

`files/` holds one small two-task model per method written by the code before
the move (`write.py` says how, `expected.json` names the commit); this is what
a user's saved models from then look like. Loading and evaluating runs the same
TensorFlow forward pass as then, so the metrics agree to float32 round-off of a
few hundred terms (rtol 1e-5); the balancer's saved state loads exactly.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import mtl_tf
from tests import backends
from tests.test_model import make_data

FILES = Path(__file__).parent / "files"
EXPECTED = json.loads((FILES / "expected.json").read_text())
METHODS = sorted(k for k in EXPECTED if k != "written_by")

pytestmark = pytest.mark.skipif(backends.keras_backend() != "tensorflow", reason="written by the TensorFlow backend")


def test_every_registered_method_has_a_file():
    assert set(METHODS) == set(mtl_tf.balancers.available())


@pytest.mark.parametrize("method", METHODS)
def test_a_file_written_before_loads_evaluates_the_same_and_trains(method):
    model = keras.saving.load_model(FILES / f"{method}.keras")
    assert type(model) is mtl_tf.MultiTaskModel and model.balancer.method_name == method
    expected = EXPECTED[method]
    for got, want in zip(model.balancer.weights, expected["balancer_weights"], strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want, np.asarray(got).dtype))
    x_eval, y_eval = make_data(seed=1)
    scores = model.evaluate(x_eval, y_eval, batch_size=16, verbose=0, return_dict=True)
    assert set(scores) == set(expected["evaluate"])
    for name, value in expected["evaluate"].items():
        np.testing.assert_allclose(scores[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    x, y = make_data()
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
