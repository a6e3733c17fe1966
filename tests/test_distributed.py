"""Data parallelism: two replicas on a global batch B take the step one device takes on B.

Every method must form its weights (alpha, loss weights) and its state from the
global batch, so the replicas apply the same update as a single device and
never drift apart. The comparison runs under the session-wide two-replica
`mirrored_strategy` of `tests/conftest.py` (a second MirroredStrategy in the
process would break TensorFlow's collectives), compiled without XLA (explicit
XLA under MirroredStrategy is not supported on CPU).
"""

import keras
import numpy as np
import pytest

import mtl_tf
from mtl_tf import balancers

TASKS = ("cls", "reg")
BATCH = 8
OPTIONS = {"static": {"weights": [0.3, 0.7]}}
OPTIONS["rlw"] = {"seed": 1}  # random weights: the models a test compares draw the same ones
OPTIONS["graddrop"] = {"seed": 1}  # random masks: the models a test compares draw the same ones
OPTIONS["stch"] = {"warmup_epochs": 0}  # the smooth Tchebycheff steps themselves, not the warm-up
# The state each method carries from step to step, which must be the same on both replicas.
# (Pareto MTL moves one of its two: the step count of the initial phase or the feasibility flag.)
STATE = {"uncertainty": ["log_variances"], "gradnorm": ["loss_weights"], "pareto_mtl": ["init_steps", "feasible"]}
STATE["famo"] = ["logits"]  # moved at step 2 by step 1's loss decrease
STATE["moco"] = ["lambdas"]  # moved every step by the tracked gradients' Gramian


def make_model(method):
    # No dropout or other randomness in the step, so the two runs see the same function.
    encoder = keras.Sequential([keras.layers.Dense(16, activation="relu"), keras.layers.Dense(8, activation="relu")])
    model = mtl_tf.MultiTaskModel(
        encoder,
        {"cls": keras.layers.Dense(3), "reg": keras.layers.Dense(1)},
        losses={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"},
        metrics={"cls": ["accuracy"]},
        balancer=method,
        balancer_options=OPTIONS.get(method),
    )
    model.build((None, 6))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    return model


def batches(num_batches, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_batches * BATCH, 6)).astype("float32")
    # Replica halves that differ on purpose: a method that used its local
    # half instead of the global batch would get other weights.
    x.reshape(num_batches, BATCH, 6)[:, BATCH // 2 :] *= 3.0
    y = {
        "cls": rng.integers(0, 3, size=num_batches * BATCH).astype("int32"),
        "reg": rng.normal(size=(num_batches * BATCH, 1)).astype("float32"),
    }
    return x, y


class StepLogs(keras.callbacks.Callback):
    """The logs of every step (History keeps only the last step of an epoch)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(np.asarray(v)) for k, v in logs.items()})


def replica_values(strategy, variable):
    return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]


def test_strategy_has_two_replicas(mirrored_strategy):
    assert mirrored_strategy.num_replicas_in_sync == 2


@pytest.mark.parametrize("method", balancers.available())
def test_two_replicas_take_the_single_device_step(method, mirrored_strategy):
    keras.utils.set_random_seed(0)
    single = make_model(method)
    with mirrored_strategy.scope():
        replicated = make_model(method)
    replicated.set_weights(single.get_weights())
    initial = {v.path: np.array(v) for v in single.weights}

    # Two steps in one `fit`, so the second uses the method state of the first.
    x, y = batches(2)
    expected, actual = StepLogs(), StepLogs()
    single.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[expected])
    replicated.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[actual])
    assert len(expected.steps) == len(actual.steps) == 2
    for step, (want, got) in enumerate(zip(expected.steps, actual.steps)):
        assert set(got) == set(want)
        for key in want:  # task weights (alpha), per-task losses, method logs
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=f"step {step + 1}: {key}")
    for variable, value in zip(replicated.weights, single.get_weights(), strict=True):
        copies = replica_values(mirrored_strategy, variable)
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_allclose(copy, value, rtol=1e-5, atol=1e-5, err_msg=variable.path)
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {variable.path}")

    # The steps moved the network and the method state, so the equalities above
    # are not those of two idle models.
    kernels = [single.encoder.layers[0].kernel] + [single.heads[t].kernel for t in TASKS]
    for kernel in kernels:
        assert not np.allclose(np.asarray(kernel), initial[kernel.path]), kernel.path
    if method in STATE:
        state = [getattr(single.balancer, name) for name in STATE[method]]
        assert any(not np.allclose(np.asarray(v), initial[v.path]) for v in state), STATE[method]
