"""MultiTaskModel end to end: fit/evaluate/predict for every method, `.keras` round trips, bad input.

The per-method update rules are checked against hand-computed numbers in
`tests/balancers/`; here the model is driven only through the public Keras
API (`compile`, `fit`, `evaluate`, `predict`, `save`, `load_model`), on a small
dense encoder with a 3-class classification head and a regression head.
"""

import json
import math
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf import balancers

TASKS = ("cls", "reg")
NUM_CLASSES = 3
NUM_FEATURES = 6
OPTIONS = {"static": {"weights": [0.3, 0.7]}}
OPTIONS["rlw"] = {"seed": 1}  # random weights: the models a test compares draw the same ones
OPTIONS["graddrop"] = {"seed": 1}  # random masks: the models a test compares draw the same ones
OPTIONS["stch"] = {"warmup_epochs": 0}  # the smooth Tchebycheff steps themselves, not the warm-up


def make_data(num_examples=32, seed=0):
    """Learnable targets: the class is the argmax of a linear map, the regression target is linear."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype("float32")
    projection = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    y = {
        "cls": np.argmax(x @ projection, axis=1).astype("int32"),
        "reg": (2.0 * x[:, :1] - x[:, 1:2]).astype("float32"),
    }
    return x, y


def make_model(method="uniform", options=None, encoder=None, seed=0):
    keras.utils.set_random_seed(seed)
    encoder = encoder or keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(8, activation="relu")]
    )
    heads = {"cls": keras.layers.Dense(NUM_CLASSES), "reg": keras.layers.Dense(1)}
    return mtl_tf.MultiTaskModel(
        encoder,
        heads,
        losses={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"},
        metrics={"cls": ["accuracy"], "reg": ["mae"]},
        balancer=method,
        balancer_options=options,
    )


def _softmax_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


# What each method promises about the task weights it logs (pareto_mtl's
# initial phase logs a constraint direction, which has no such rule).
WEIGHT_RULES = {
    "uniform": lambda w: np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-7),
    "static": lambda w: np.testing.assert_allclose(w, [0.3, 0.7], atol=1e-7),
    "single_step": lambda w: np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-7),
    "split_only": lambda w: np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-7),
    "mgda": lambda w: (np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5), np.testing.assert_array_less(-1e-7, w)),
    "mgda_ub": lambda w: (np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5), np.testing.assert_array_less(-1e-7, w)),
    "gradnorm": lambda w: (np.testing.assert_allclose(w.sum(), 2.0, atol=1e-5), np.testing.assert_array_less(0.0, w)),
    "uncertainty": lambda w: np.testing.assert_array_less(0.0, w),
}


# -- fit / evaluate / predict ------------------------------------------------------------


class StepTimes(keras.callbacks.Callback):
    """Wall time of every training batch (the first one includes tracing and compiling)."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _fit(method, jit_compile, step_times=None):
    x, y = make_data()
    model = make_model(method, OPTIONS.get(method))
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    assert model.jit_compile is jit_compile  # an explicit True must not be downgraded
    callbacks = [step_times] if step_times is not None else []
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=callbacks).history

    expected = {"loss", "skipped_update", "cls_accuracy", "reg_mae"}
    expected |= {f"{t}_{log}" for t in TASKS for log in ("loss", "weight", "weight_mean")}
    assert expected <= set(history), sorted(expected - set(history))
    for key, values in history.items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), (key, values)
    assert history["skipped_update"] == [0.0, 0.0]
    assert history["loss"][1] < history["loss"][0], history["loss"]
    np.testing.assert_allclose(history["loss"], np.add(history["cls_loss"], history["reg_loss"]), rtol=1e-6)
    for epoch in range(2):
        WEIGHT_RULES.get(method, lambda w: None)(np.array([history[f"{t}_weight"][epoch] for t in TASKS]))
    return model, history


@pytest.mark.parametrize("method", balancers.available())
def test_fit_with_and_without_xla(method):
    eager_model, eager_history = _fit(method, jit_compile=False)
    # Same initial weights and data: the XLA-compiled steps must compute the same thing.
    times = StepTimes()
    xla_model, xla_history = _fit(method, jit_compile=True, step_times=times)
    # XLA compiles the step once. A tensor-valued index into a strided slice (`x[:, j]`) asks XLA for a
    # compile-time constant, which turns what it depends on (the batch, a random order) into one and
    # recompiles every step: fairgrad and nash_mtl took 39 s per MultiLeNet step that way, pcgrad 2 s.
    later = float(np.median(times.seconds[1:]))
    assert later < 0.2 * times.seconds[0], (method, times.seconds)
    assert set(xla_history) == set(eager_history)
    for key in eager_history:
        np.testing.assert_allclose(xla_history[key], eager_history[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for a, b in zip(xla_model.get_weights(), eager_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_evaluate_and_predict(jit_compile):
    """`test_step` and `predict_step` do not involve the balancer, so one method covers them."""
    x, y = make_data()
    model = make_model("mgda_ub")
    model.compile(optimizer="sgd", jit_compile=jit_compile)
    # Batches of 12, 12 and 8: a partial last batch in both predict and evaluate.
    predictions = model.predict(x, batch_size=12, verbose=0)
    assert isinstance(predictions, dict) and set(predictions) == set(TASKS)
    assert predictions["cls"].shape == (32, NUM_CLASSES) and predictions["reg"].shape == (32, 1)
    np.testing.assert_allclose(predictions["reg"], model(x)["reg"], rtol=1e-5, atol=1e-6)

    scores = model.evaluate(x, y, batch_size=12, verbose=0, return_dict=True)
    assert set(scores) == {"loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"}
    cls_loss = _softmax_cross_entropy(predictions["cls"].astype("float64"), y["cls"])
    reg_loss = np.mean((predictions["reg"] - y["reg"]) ** 2)
    np.testing.assert_allclose(scores["cls_loss"], cls_loss, rtol=1e-5)
    np.testing.assert_allclose(scores["reg_loss"], reg_loss, rtol=1e-5)
    np.testing.assert_allclose(scores["loss"], cls_loss + reg_loss, rtol=1e-5)
    np.testing.assert_allclose(scores["cls_accuracy"], np.mean(predictions["cls"].argmax(1) == y["cls"]), atol=1e-7)
    mae = np.mean(np.abs(predictions["reg"] - y["reg"]))
    np.testing.assert_allclose(scores["reg_mae"], mae, rtol=1e-5)


# -- .keras round trip -----------------------------------------------------------------------

ROUND_TRIPS = {
    "mgda_ub": {"normalization": "loss+", "head_update": "official"},
    "static": {"weights": {"reg": 2.0, "cls": 0.5}},
    "uncertainty": {"task_types": ["classification", "regression"]},
    "gradnorm": {"asymmetry": 0.5, "weight_learning_rate": 0.05},
    "db_mtl": {"beta": 0.5},  # per-task gradient state created at the first step, loaded from the file
    "moco": {"lambda_update": "softmax", "gamma": 1.0},
}


def _json(config):
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("method", ROUND_TRIPS)
def test_keras_file_round_trip(method, tmp_path):
    x, y = make_data()
    model = make_model(method, ROUND_TRIPS[method])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # non-trivial method and optimizer state
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert type(loaded) is mtl_tf.MultiTaskModel and type(loaded.balancer) is type(model.balancer)
    assert _json(loaded.get_config()) == _json(model.get_config())
    balancer_config = loaded.balancer.get_config()
    for option, value in ROUND_TRIPS[method].items():
        assert balancer_config[option] == value, option
    assert loaded.task_names == model.task_names

    for a, b in zip(loaded.balancer.weights, model.balancer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if method == "uncertainty":
        assert np.all(np.abs(np.asarray(loaded.balancer.log_variances)) > 1e-4)
    if method == "gradnorm":
        assert float(np.min(loaded.balancer.has_initial_losses)) == 1.0
        assert np.all(np.abs(np.asarray(loaded.balancer.loss_weights) - 1.0) > 1e-4)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4

    # Batches of 12, 12 and 8, unlike the batches of 8 the model was built with.
    expected, actual = model.predict(x, batch_size=12, verbose=0), loaded.predict(x, batch_size=12, verbose=0)
    for t in TASKS:
        np.testing.assert_allclose(actual[t], expected[t], rtol=1e-6, atol=1e-6)

    # Training continues from the same state (weights, momentum, method state).
    continued = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    resumed = loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert set(resumed) == set(continued)
    for key in continued:
        np.testing.assert_allclose(resumed[key], continued[key], rtol=1e-6, atol=1e-6, err_msg=key)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_function_loss_by_name_round_trips():
    loss = mtl_tf.model.FunctionLoss(keras.losses.mean_squared_error)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    y_true, y_pred = np.array([[1.0], [2.0]], "float32"), np.array([[0.0], [4.0]], "float32")
    assert clone.name == "mean_squared_error"
    np.testing.assert_allclose(float(clone(y_true, y_pred)), (1.0 + 4.0) / 2)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("balancer", ["mgda-ub", {"name": "gradnrom"}])
def test_unknown_method_names_the_choices(balancer):
    with pytest.raises(ValueError) as error:
        make_model(balancer)
    message = str(error.value)
    assert "unknown balancing method" in message
    assert repr(balancer if isinstance(balancer, str) else balancer["name"]) in message
    assert all(name in message for name in balancers.available())


@pytest.mark.parametrize(
    "targets, missing, unknown",
    [
        (lambda y: {**y, "depth": y["reg"]}, [], ["depth"]),
        (lambda y: {"cls": y["cls"]}, ["reg"], []),
        (lambda y: {"cls": y["cls"], "regression": y["reg"]}, ["reg"], ["regression"]),
    ],
    ids=["extra", "missing", "misspelled"],
)
@pytest.mark.parametrize("entry_point", ["fit", "evaluate"])
def test_target_names_must_match_the_heads(targets, missing, unknown, entry_point):
    x, y = make_data(16)
    model = make_model()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError) as error:
        getattr(model, entry_point)(x, targets(y), batch_size=8, verbose=0)
    message = str(error.value)
    assert "targets are keyed by" in message and "heads are ['cls', 'reg']" in message
    assert (f"missing: {missing}" in message) == bool(missing), message
    assert (f"unknown: {unknown}" in message) == bool(unknown), message


def test_targets_must_be_a_dict():
    x, y = make_data(16)
    model = make_model()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"targets must be a dict keyed by task name \['cls', 'reg'\]"):
        model.fit(x, y["cls"], batch_size=8, verbose=0)


@pytest.mark.parametrize(
    "weights, expected",
    [
        ([0.2, 0.3, 0.5], r"static weights has 3 entries but the model has 2 tasks \['cls', 'reg'\]"),
        ([1.0], r"static weights has 1 entries but the model has 2 tasks \['cls', 'reg'\]"),
        ({"cls": 1.0, "depth": 1.0}, r"missing: \['reg'\], unknown: \['depth'\]"),
    ],
)
def test_static_weights_must_match_the_tasks(weights, expected):
    x, y = make_data(16)
    model = make_model("static", {"weights": weights})
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=expected):
        model.fit(x, y, batch_size=8, verbose=0)


class _WeightsAtBatchBegin(keras.callbacks.Callback):
    """Every model variable (network, balancer state) before each batch, and the optimizer step."""

    def __init__(self):
        super().__init__()
        self.before = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        weights = [np.array(w) for w in self.model.get_weights()]
        optimizer_state = [np.array(v) for v in self.model.optimizer.variables]
        self.before[(self.epoch, batch)] = (weights, optimizer_state)


def _fit_into_bad_batch(model, x, y, bad_epoch, bad_batch, steps=4, batch_size=8):
    """Fits over a repeated data set; only global batch `bad_epoch * steps + bad_batch` is bad."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).take(2 * steps)
    recorder = _WeightsAtBatchBegin()
    with pytest.raises(mtl_tf.NonFiniteLossError) as error:
        model.fit(dataset, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[recorder])
    weights_before, optimizer_before = recorder.before[(bad_epoch, bad_batch)]
    # The model did train up to the bad batch, so an unchanged model is a real finding.
    previous = recorder.before[(bad_epoch, bad_batch - 1)][0]
    assert len(previous) == len(weights_before) == len(model.weights)
    assert any(not np.array_equal(a, b) for a, b in zip(previous, weights_before))
    for variable, before in zip(model.weights, weights_before, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)
    # Step count and momentum too (`iterations` is one of the optimizer's variables).
    for variable, before in zip(model.optimizer.variables, optimizer_before, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before, err_msg=variable.path)
    return str(error.value)


def _two_epochs(x, y):
    return np.concatenate([x, x]), {t: np.concatenate([y[t], y[t]]) for t in y}


# One method per kind of state: none, a trainable balancer variable, variables
# the balancer assigns inside the step (the rollback path), and a phase flag.
@pytest.mark.parametrize("method", ["uniform", "uncertainty", "gradnorm", "pareto_mtl"])
def test_nan_loss_stops_fit_and_keeps_the_weights_from_before(method):
    x, y = _two_epochs(*make_data())
    y["reg"][32 + 2 * 8 + 3] = np.nan  # epoch 2, batch 3
    model = make_model(method, OPTIONS.get(method))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    message = _fit_into_bad_batch(model, x, y, bad_epoch=1, bad_batch=2)
    assert "loss of task 'reg' is nan at epoch 2, batch 3" in message
    assert "expected a finite value" in message


def test_nan_input_stops_fit_and_keeps_the_weights_from_before():
    x, y = make_data()
    x[2 * 8 + 5, 2] = np.nan  # epoch 1, batch 3
    model = make_model("mgda_ub")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    message = _fit_into_bad_batch(model, *_two_epochs(x, y), bad_epoch=0, bad_batch=2)
    # Whether NaN survives relu depends on the kernel (oneDNN gives relu(NaN) = 0,
    # so the losses stay finite and only the gradients are NaN); both are caught.
    assert "is nan at epoch 1, batch 3" in message or "gradients of epoch 1, batch 3 are not finite" in message


@keras.saving.register_keras_serializable(package="mtl_tf_tests")
class _ZeroNonFinite(keras.layers.Layer):
    """Replaces non-finite activations by 0: the losses stay finite, the kernel gradients do not."""

    def call(self, inputs):
        return keras.ops.where(keras.ops.isfinite(inputs), inputs, keras.ops.zeros_like(inputs))


def test_nan_gradients_with_finite_losses_stop_fit():
    x, y = make_data()
    x[2 * 8 + 5, 2] = np.nan  # epoch 1, batch 3
    encoder = keras.Sequential(
        [keras.layers.Dense(16), _ZeroNonFinite(), keras.layers.ReLU(), keras.layers.Dense(8, activation="relu")]
    )
    model = make_model("uniform", encoder=encoder)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    message = _fit_into_bad_batch(model, *_two_epochs(x, y), bad_epoch=0, bad_batch=2)
    assert "gradients of epoch 1, batch 3 are not finite although every task loss is" in message
    assert "expected finite gradients" in message


# -- the three small inputs: precision, stateful heads, unlabelled tasks ----------------------


def _ones_model(method, options=None):
    """The issue's input; returns (head kernel move at the first applied step, loss scales seen)."""
    encoder = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    head = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    model = mtl_tf.MultiTaskModel(encoder, {"t": head}, {"t": "mse"}, balancer=method, balancer_options=options)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    x, y = np.ones((4, 2), "float32"), {"t": np.zeros((4, 1), "float32")}
    # Under mixed_float16 the first steps overflow at Keras' initial scale 32768
    # (dL/dk = 8 summed in float16 over 4 examples times 32768 > 65504): the
    # scaler skips them and halves its scale, as it does for any Keras model.
    scales = []
    for _ in range(8):
        recorder = _StepLogs()
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[recorder])
        scales.append(recorder.steps[0].get("loss_scale"))
        if recorder.steps[0]["skipped_update"] == 0.0:
            break
    return float(1.0 - np.asarray(head.kernel)[0, 0]), scales


SINGLE_TASK_OPTIONS = {"static": {"weights": [1.0]}}
# z = 2, prediction 2, dL/dk = 2 * 2 * 2 = 8, times lr 0.01 (heads with their own unscaled gradient).
MOVES_BY_008 = ("uniform", "static", "mgda", "mgda_ub", "gradnorm")


@pytest.mark.parametrize("method", balancers.available())
def test_mixed_float16_head_moves_as_in_float32(method):
    options = SINGLE_TASK_OPTIONS.get(method)
    float32_move, _ = _ones_model(method, options)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed_move, scales = _ones_model(method, options)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Overflows (skipped, scale halved), then the applied step.
    assert len(scales) >= 2 and scales == [32768.0 / 2**k for k in range(len(scales))], scales
    np.testing.assert_allclose(mixed_move, float32_move, rtol=2e-3)
    if method in MOVES_BY_008:
        np.testing.assert_allclose(mixed_move, 0.08, rtol=2e-3)


def test_loss_scale_overflow_is_skipped_and_the_scale_lowered():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = keras.layers.Dense(4, kernel_initializer="ones")
        model = mtl_tf.MultiTaskModel(encoder, {"t": keras.layers.Dense(1)}, {"t": "mse"}, balancer="mgda_ub")
        model.compile(optimizer=keras.optimizers.SGD(1e-6))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    recorder = _StepLogs()
    # |dL/dprediction| ~ 1e3: times the initial scale 32768 it overflows float16 (max 65504).
    x, y = np.ones((16, 2), "float32"), {"t": np.full((16, 1), 4000.0, "float32")}
    model.fit(x, y, batch_size=16, epochs=14, verbose=0, callbacks=[recorder])  # no NonFiniteLossError
    scales = [s["loss_scale"] for s in recorder.steps]
    skipped = [s["skipped_update"] for s in recorder.steps]
    assert skipped[0] == 1.0 and scales[0] == 32768.0
    assert scales[1] == 16384.0
    assert skipped[-1] == 0.0, f"never applied: scales {scales}"


def test_non_finite_loss_under_loss_scaling_still_stops_fit():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model("mgda_ub")
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x, y = make_data(8)
    x[0, 0] = np.nan
    with pytest.raises(mtl_tf.model.NonFiniteLossError):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


class _StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(np.asarray(v)) for k, v in logs.items()})


def test_weight_mean_is_the_epoch_mean_of_the_applied_steps():
    """`{task}_weight_mean`: the mean of the epoch's `{task}_weight`s (skipped steps left out), reset each epoch.

    `{task}_weight` stays the last step's; `evaluate` and the `val_` logs have neither (evaluate has no weights).
    """
    x, y = make_data(40)
    model = make_model("mgda_ub")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    labelled = np.ones(40, "float32")
    labelled[16:24] = 0.0  # batch 3 of 5 has no labels: not applied (a benign skip)
    recorder = _StepLogs()
    history = model.fit(x, y, sample_weight={t: labelled for t in TASKS}, batch_size=8, epochs=2, shuffle=False,
                        validation_data=(x, y), verbose=0, callbacks=[recorder]).history
    steps = [recorder.steps[:5], recorder.steps[5:]]
    assert len(recorder.steps) == 10 and [s["skipped_update"] for s in steps[0]] == [0.0, 0.0, 1.0, 0.0, 0.0]
    for t in TASKS:
        weights = [[s[f"{t}_weight"] for s in epoch if s["skipped_update"] == 0.0] for epoch in steps]
        assert np.ptp(weights[0]) > 0.01, weights  # alpha moves within an epoch: a mean says more than a step
        np.testing.assert_allclose(history[f"{t}_weight_mean"], [np.mean(w) for w in weights], rtol=1e-5)
        assert history[f"{t}_weight"] == [epoch[-1][f"{t}_weight"] for epoch in steps]
        # The progress bar's value: the running mean of the epoch so far (the second epoch's starts afresh).
        np.testing.assert_allclose(steps[1][1][f"{t}_weight_mean"], np.mean(weights[1][:2]), rtol=1e-5)
    assert not [k for k in history if k.startswith("val_") and "weight" in k], sorted(history)
    scores = model.evaluate(x, y, return_dict=True, verbose=0)
    assert set(scores) == {"loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"}, sorted(scores)


def test_split_only_head_batch_norm_holds_the_real_pass_statistics():
    keras.utils.set_random_seed(3)
    encoder = keras.layers.Dense(2)
    head = keras.Sequential([keras.layers.BatchNormalization(momentum=0.0), keras.layers.Dense(1)])
    model = mtl_tf.MultiTaskModel(encoder, {"t": head}, {"t": "mse"}, balancer="split_only")
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = {"t": np.random.default_rng(1).normal(size=(8, 1)).astype("float32")}
    model.build((None, 3))
    kernel, bias = np.asarray(encoder.kernel, np.float64), np.asarray(encoder.bias, np.float64)
    z = x @ kernel + bias  # the real forward pass, weights before the update
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_allclose(np.asarray(head.layers[0].moving_mean), z.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(head.layers[0].moving_variance), z.var(axis=0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.asarray(encoder.kernel), kernel)  # the step did move the encoder


@pytest.mark.parametrize("method,options", [
    ("mgda_ub", None),
    *[("mgda", {"normalization": n}) for n in ("none", "l2", "loss", "loss+")],
])
def test_unlabelled_task_does_not_freeze_mgda(method, options):
    keras.utils.set_random_seed(4)
    model = make_model(method, options)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.build((None, NUM_FEATURES))
    x, y = make_data(4)
    before = np.array(model.encoder.layers[0].kernel)
    recorder = _StepLogs()
    model.fit(x, y, sample_weight={"cls": np.ones(4, "float32"), "reg": np.zeros(4, "float32")},
              batch_size=4, epochs=1, verbose=0, callbacks=[recorder])
    logs = recorder.steps[0]
    assert (logs["cls_weight"], logs["reg_weight"]) == (1.0, 0.0)
    assert not np.allclose(np.array(model.encoder.layers[0].kernel), before), "the encoder did not move"


def test_pareto_mtl_three_tasks_one_unlabelled():
    keras.utils.set_random_seed(5)
    heads = {t: keras.layers.Dense(1) for t in ("a", "b", "c")}
    model = mtl_tf.MultiTaskModel(keras.layers.Dense(4), heads, {t: "mse" for t in heads}, balancer="pareto_mtl")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = {t: rng.normal(size=(4, 1)).astype("float32") for t in heads}
    recorder = _StepLogs()
    model.fit(x, y, sample_weight={"a": np.ones(4), "b": np.ones(4), "c": np.zeros(4)}, batch_size=4,
              verbose=0, callbacks=[recorder])
    weights = [recorder.steps[0][f"{t}_weight"] for t in heads]
    # Before: [0, 0, 3], task c's zero gradient taking the whole min-norm point.
    assert weights[2] == 0.0 and all(np.isfinite(weights)) and (weights[0] != 0.0 or weights[1] != 0.0), weights


def test_head_optimizer_state_round_trips(tmp_path):
    """single_step's heads have their own optimizer moments: weights files and `.keras` files carry them."""

    def build():
        keras.utils.set_random_seed(0)
        model = mtl_tf.MultiTaskModel(keras.layers.Dense(4), {"a": keras.layers.Dense(1), "b": keras.layers.Dense(1)},
                                      {"a": "mse", "b": "mse"}, balancer="single_step")
        model.build((None, 3))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        return model

    model = build()
    rng = np.random.default_rng(0)
    x = rng.random((8, 3)).astype("float32")
    y = {t: rng.random((8, 1)).astype("float32") for t in ("a", "b")}
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert int(model.head_optimizer.iterations) == 4
    model.save_weights(str(tmp_path / "w.weights.h5"))
    restored = build()
    restored.load_weights(str(tmp_path / "w.weights.h5"))
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    for other in (restored, loaded):
        assert len(other.head_optimizer.variables) == len(model.head_optimizer.variables) > 2
        for a, b in zip(model.head_optimizer.variables, other.head_optimizer.variables, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
