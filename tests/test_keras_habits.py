"""MultiTaskModel used the way a Keras user uses a Keras model (issue 16, section 2).

Every expectation comes from plain Keras: a functional multi-output model made
of the same layers (same weights) is trained, evaluated, summarised and
monitored side by side, or the value is computed in numpy.

- encoders with dict (named, one integer input) or list inputs: fit, evaluate,
  predict, `.keras` save/load, `model.export` + `tf.saved_model.load` /
  `keras.layers.TFSMLayer`;
- `compile(loss=..., metrics=...)` per task as for a Keras multi-output model,
  and clear refusals (`loss_weights`, `weighted_metrics`, flat metric lists);
- `model.export` right after `fit`;
- `summary()`: encoder and heads as rows, the balancer named on its own line;
- `mode="auto"` of EarlyStopping / ModelCheckpoint on per-task logs.
"""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf import metrics as mtl_metrics
from mtl_tf.model import MultiTaskModel

TASKS = ("left", "right")
NUM_CLASSES = 3
NUM_EXAMPLES = 24


# -- a two-input encoder and two heads ------------------------------------------------------


def make_parts(structure, seed=0):
    """(encoder, heads): a functional encoder with dict (integer ids + floats) or list inputs."""
    keras.utils.set_random_seed(seed)
    if structure == "dict":
        tokens = keras.Input((4,), dtype="int32", name="tokens")
        meta = keras.Input((2,), name="meta")
        embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(tokens))
        inputs = {"tokens": tokens, "meta": meta}
        merged = keras.layers.Concatenate()([embedded, meta])
    else:
        first, second = keras.Input((3,), name="first"), keras.Input((2,), name="second")
        inputs = [first, second]
        merged = keras.layers.Concatenate()([first, second])
    z = keras.layers.Dense(8, activation="tanh")(merged)
    encoder = keras.Model(inputs, z, name="encoder")
    heads = {"left": keras.layers.Dense(NUM_CLASSES, name="left_head"),
             "right": keras.layers.Dense(1, name="right_head")}
    return encoder, heads


def make_data(structure, seed=1):
    rng = np.random.default_rng(seed)
    if structure == "dict":
        x = {"tokens": rng.integers(0, 10, size=(NUM_EXAMPLES, 4)).astype("int32"),
             "meta": rng.normal(size=(NUM_EXAMPLES, 2)).astype("float32")}
    else:
        x = [rng.normal(size=(NUM_EXAMPLES, 3)).astype("float32"), rng.normal(size=(NUM_EXAMPLES, 2)).astype("float32")]
    y = {"left": rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype("int32"),
         "right": rng.normal(size=(NUM_EXAMPLES, 1)).astype("float32")}
    return x, y


LOSSES = {"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "right": "mse"}


def make_model(structure, **kwargs):
    encoder, heads = make_parts(structure)
    kwargs.setdefault("losses", LOSSES)
    return MultiTaskModel(encoder, heads, **kwargs)


def keras_twin(model, structure):
    """A plain functional Keras model with fresh layers carrying `model`'s current weights."""
    encoder, heads = make_parts(structure, seed=7)
    outputs = {t: heads[t](encoder.output) for t in TASKS}
    twin = keras.Model(encoder.input, outputs)
    encoder.set_weights(model.encoder.get_weights())
    for t in TASKS:
        heads[t].set_weights(model.heads[t].get_weights())
    return twin, encoder, heads


SHAPES = {"dict": {"tokens": (None, 4), "meta": (None, 2)}, "list": [(None, 3), (None, 2)]}


def as_tensors(x):
    return tf.nest.map_structure(tf.constant, x)


# -- 1. input structures --------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["dict", "list"])
def test_structured_inputs_fit_like_keras_and_round_trip(structure, tmp_path):
    x, y = make_data(structure)
    model = make_model(structure, metrics={"left": ["accuracy"]})
    model.build(SHAPES[structure])  # a structure of shapes, as Keras passes to build
    twin, twin_encoder, twin_heads = keras_twin(model, structure)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # Uniform scaling descends the mean of the two losses: Keras with loss weights 1/2.
    twin.compile(optimizer=keras.optimizers.SGD(0.1), loss=dict(LOSSES), loss_weights={"left": 0.5, "right": 0.5},
                 metrics={"left": ["accuracy"]})
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, validation_data=(x, y))
    twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert "val_left_accuracy" in history.history
    pairs = [(model.encoder, twin_encoder)] + [(model.heads[t], twin_heads[t]) for t in TASKS]
    for ours, theirs in pairs:
        for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = twin.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(scores["left_loss"], expected["left_loss"], rtol=1e-5)
    np.testing.assert_allclose(scores["left_accuracy"], expected["left_accuracy"], rtol=1e-6)
    predictions = model.predict(x, verbose=0)
    np.testing.assert_allclose(predictions["left"], twin.predict(x, verbose=0)["left"], rtol=1e-5, atol=1e-6)

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0)["left"], predictions["left"])
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # the loaded model trains on

    model.export(str(tmp_path / "sm"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = reloaded.serve(as_tensors(x))
    np.testing.assert_allclose(served["left"], predictions["left"], rtol=1e-5, atol=1e-6)
    layer_outputs = keras.layers.TFSMLayer(str(tmp_path / "sm"), call_endpoint="serve")(as_tensors(x))
    np.testing.assert_allclose(layer_outputs["right"], predictions["right"], rtol=1e-5, atol=1e-6)


def test_exported_signature_keeps_input_names_and_dtypes(tmp_path):
    x, y = make_data("dict")
    model = make_model("dict")
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    model.export(str(tmp_path / "sm"), verbose=False)
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert {name: spec.dtype for name, spec in inputs.items()} == {"tokens": tf.int32, "meta": tf.float32}


def test_dataset_of_dicts_and_generator_free_build():
    x, y = make_data("dict")
    model = make_model("dict")
    model.compile(optimizer="sgd")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    assert model.evaluate(data, verbose=0, return_dict=True)["left_loss"] > 0


# -- 2. compile(loss=..., metrics=...) ------------------------------------------------------


def _single_input_parts(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), name="x")
    encoder = keras.Model(inputs, keras.layers.Dense(6, activation="relu")(inputs))
    return encoder, {"left": keras.layers.Dense(NUM_CLASSES), "right": keras.layers.Dense(1)}


def _single_input_data(seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_EXAMPLES, 5)).astype("float32")
    return x, {"left": rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype("int32"),
               "right": rng.normal(size=(NUM_EXAMPLES, 1)).astype("float32")}


def _twin_of(model):
    encoder, heads = _single_input_parts(seed=9)
    twin = keras.Model(encoder.input, {t: heads[t](encoder.output) for t in TASKS})
    encoder.set_weights(model.encoder.get_weights())
    for t in TASKS:
        heads[t].set_weights(model.heads[t].get_weights())
    return twin


def test_compile_losses_and_metrics_per_task_as_keras(tmp_path):
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads)  # no losses: compile gives them, as in Keras
    loss = {"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "right": "mae"}
    metrics = {"left": ["accuracy"], "right": ["mse"]}
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    model.build((None, 5))
    twin = _twin_of(model)
    twin.compile(optimizer="sgd", loss=loss, metrics=metrics)
    ours = model.evaluate(x, y, verbose=0, return_dict=True)
    theirs = twin.evaluate(x, y, verbose=0, return_dict=True)
    # Keras names the metric `right_mse` after the string; so does the model (issue 22).
    for key in ["left_loss", "right_loss", "left_accuracy", "right_mse"]:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, err_msg=key)

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(ours, rel=1e-6)
    assert isinstance(loaded.task_losses["right"], keras.losses.Loss)
    assert loaded.task_losses["right"].name == "mae"  # Keras' compile names it after the string


def test_compile_dict_overrides_the_constructor_task_by_task():
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                                   "right": "mse"},
                           metrics={"left": ["accuracy"], "right": ["mae"]})
    model.compile(optimizer="sgd", loss={"right": "mae"},
                  metrics={"left": [keras.metrics.SparseTopKCategoricalAccuracy(2)]})
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    predictions = model.predict(x, verbose=0)
    assert set(scores) == {"loss", "left_loss", "right_loss", "left_sparse_top_k_categorical_accuracy", "right_mae"}
    np.testing.assert_allclose(scores["right_loss"], np.abs(predictions["right"] - y["right"]).mean(), rtol=1e-5)
    logits = predictions["left"]
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    np.testing.assert_allclose(scores["left_loss"], -log_probs[np.arange(NUM_EXAMPLES), y["left"]].mean(), rtol=1e-5)
    top2 = np.argsort(-logits, axis=1)[:, :2]
    np.testing.assert_allclose(scores["left_sparse_top_k_categorical_accuracy"],
                               np.mean([label in row for label, row in zip(y["left"], top2)]), rtol=1e-6)


def test_compile_one_loss_or_a_list_reaches_every_task():
    x, y = _single_input_data()
    y = {"left": np.eye(NUM_CLASSES, dtype="float32")[y["left"]], "right": y["right"]}
    for loss in ["mse", ["mse", "mse"]]:
        encoder, heads = _single_input_parts()
        model = MultiTaskModel(encoder, heads)
        model.compile(optimizer="sgd", loss=loss)
        scores = model.evaluate(x, y, verbose=0, return_dict=True)
        predictions = model.predict(x, verbose=0)
        for t in TASKS:
            np.testing.assert_allclose(scores[f"{t}_loss"], np.mean((predictions[t] - y[t]) ** 2), rtol=1e-5)


def test_compile_refuses_what_it_cannot_honour():
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": "mse", "right": "mse"})
    with pytest.raises(ValueError, match=r'balancer="static".*balancer_options=\{"weights"'):
        model.compile(optimizer="sgd", loss_weights={"left": 1.0, "right": 2.0})
    with pytest.raises(ValueError, match="weighted_metrics.*metrics="):
        model.compile(optimizer="sgd", weighted_metrics={"left": ["accuracy"]})
    with pytest.raises(ValueError, match=r"tasks \['middle'\] that have no head"):
        model.compile(optimizer="sgd", loss={"middle": "mse"})
    with pytest.raises(ValueError, match="3 entries for 2 heads"):
        model.compile(optimizer="sgd", loss=["mse", "mse", "mse"])
    # A flat metric list is ambiguous with several outputs: Keras refuses it too.
    plain_encoder, plain_heads = _single_input_parts()
    twin = keras.Model(plain_encoder.input, {t: plain_heads[t](plain_encoder.output) for t in TASKS})
    twin.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    with pytest.raises(ValueError):
        twin.evaluate(*_single_input_data(), verbose=0)
    with pytest.raises(ValueError, match="flat list is ambiguous"):
        model.compile(optimizer="sgd", metrics=["mae"])


def test_a_task_without_any_loss_is_named_before_training():
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": "mse"})
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"no loss for tasks \['right'\].*losses=.*compile\(loss="):
        model.fit(*_single_input_data(), verbose=0)


def test_recompiling_a_built_model():
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": "mse", "right": "mse"}, balancer="uncertainty",
                           balancer_options={"task_types": "regression"})
    model.compile(optimizer="sgd")
    model.fit(x, {"left": np.eye(3)[y["left"]], "right": y["right"]}, verbose=0)
    # The same losses again (Keras habit) and new metrics are fine after building...
    model.compile(optimizer="adam", loss={"left": "mse", "right": "mse"}, metrics={"right": ["mae"]})
    assert "right_mae" in model.evaluate(x, {"left": np.eye(3)[y["left"]], "right": y["right"]},
                                                         verbose=0, return_dict=True)
    # ...a new loss is not: the balancer was built for the old ones.
    with pytest.raises(ValueError, match=r"changes the losses of tasks \['right'\].*already built"):
        model.compile(optimizer="sgd", loss={"right": "mae"})


# -- 3. export right after fit --------------------------------------------------------------


def test_export_right_after_fit(tmp_path):
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                                   "right": "mse"}, balancer="mgda_ub")
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    model.export(str(tmp_path / "sm"), verbose=False)  # no predict before
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = reloaded.serve(tf.constant(x))
    expected = _twin_of(model).predict(x, verbose=0)
    for t in TASKS:
        np.testing.assert_allclose(served[t], expected[t], rtol=1e-5, atol=1e-6)


def test_export_of_a_sequential_encoder_built_by_fit(tmp_path):
    x, y = _single_input_data()
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(6, activation="relu")])
    model = MultiTaskModel(encoder, {"left": keras.layers.Dense(3), "right": keras.layers.Dense(1)},
                           losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                   "right": "mse"})
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    model.export(str(tmp_path / "sm"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    served = reloaded.serve(tf.constant(x))
    np.testing.assert_allclose(served["left"], model.predict(x, verbose=0)["left"], rtol=1e-5, atol=1e-6)


# -- 4. summary -----------------------------------------------------------------------------


def _summary_text(model):
    out = io.StringIO()
    model.summary(print_fn=lambda line, line_break=True: out.write(line + "\n"), line_length=100)
    return out.getvalue()


def test_summary_rows_are_encoder_and_heads_and_names_the_balancer():
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": "mse", "right": "mse"}, balancer="uncertainty",
                           balancer_options={"task_types": "regression"})
    model.build((None, 5))
    text = _summary_text(model)
    table = text.split("Total params")[0]
    rows = [line for line in table.splitlines() if "(" in line and ")" in line and "Layer (type)" not in line]
    assert len(rows) == 3, text  # encoder, two heads
    assert "uncertainty" not in table and "?" not in table, text
    # Keras' own summary of the same layers as a functional model shows the same shapes.
    twin_text = _summary_text(_twin_of(model))
    for shape in ["(None, 6)", "(None, 3)", "(None, 1)"]:
        assert shape in table and shape in twin_text
    # Totals count the balancer's 2 log-variances; its line says so.
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    assert f"Total params: {total:,}" in text
    assert "Balancer: uncertainty (Uncertainty)" in text and "2 state values" in text
    assert [layer.name for layer in model.layers] == [encoder.name, heads["left"].name, heads["right"].name]


# -- 5. mode="auto" of monitoring callbacks --------------------------------------------------


def _resolved(callback):
    """Fits a tiny model once with `callback`, so that `fit` resolves its mode."""
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, heads, losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                                   "right": "mse"}, metrics={"left": ["accuracy"], "right": ["mae"]})
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[callback])
    return callback


def _stops_after(callback_factory, values, model):
    """Epoch (0-based) at which an EarlyStopping(patience=1) stops on `values`, and its best value."""
    callback = callback_factory()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {callback.monitor: value})
        if model.stop_training:
            model.stop_training = False
            return epoch, callback.best
    return None, callback.best


@pytest.mark.parametrize("monitor, mode, values", [
    ("val_left_accuracy", "max", [0.5, 0.7, 0.6, 0.65, 0.9]),
    ("val_left_loss", "min", [0.9, 0.5, 0.6, 0.55, 0.1]),
    ("val_right_mae", "min", [0.9, 0.5, 0.6, 0.55, 0.1]),
])
def test_early_stopping_auto_mode_knows_the_task_metric_direction(monitor, mode, values):
    auto = _resolved(keras.callbacks.EarlyStopping(monitor=monitor, mode="auto", patience=2))
    assert auto.mode == mode
    model = auto.model
    # Independent expectation: Keras' own callback with the mode written out.
    explicit = _stops_after(lambda: keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=2),
                            values, model)
    assert _stops_after(lambda: auto, values, model) == explicit
    assert explicit[1] == (max(values[:4]) if mode == "max" else min(values[:4]))  # stops at epoch 3


def test_model_checkpoint_auto_mode_keeps_the_best_accuracy(tmp_path):
    checkpoint = _resolved(keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"),
                                                           monitor="val_left_accuracy", save_best_only=True,
                                                           save_weights_only=True))
    assert checkpoint.mode == "max" and (tmp_path / "best.weights.h5").exists()


def test_auto_mode_without_a_direction_is_left_to_keras():
    # Task weights have no better direction: Keras' own error asks for a mode.
    with pytest.raises(ValueError, match="mode='max'"):
        _resolved(keras.callbacks.EarlyStopping(monitor="left_weight", mode="auto"))


def test_mtl_tf_metrics_carry_the_keras_direction():
    # A plain Keras model with our metrics: Keras' own `mode="auto"` lookup finds them.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2, 2, 1))
    model = keras.Model(inputs, keras.layers.Dense(3, name="normals")(inputs))
    model.compile(optimizer="sgd", loss="mae",
                  metrics=[mtl_metrics.NormalAngleMean(), mtl_metrics.NormalAngleWithin(30.0, name="within")])
    x = np.random.default_rng(0).uniform(1, 2, size=(8, 2, 2, 1)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8, 2, 2, 3)).astype("float32")
    stop_error = keras.callbacks.EarlyStopping(monitor="val_normal_angle_mean", patience=5)
    stop_within = keras.callbacks.EarlyStopping(monitor="val_within", patience=5)
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[stop_error, stop_within])
    assert stop_error.monitor_op(1.0, 2.0) and not stop_within.monitor_op(1.0, 2.0)
    assert mtl_metrics.MeanIoU(3)._direction == "up" and mtl_metrics.NormalAngleMedian()._direction == "down"


def test_compile_metrics_of_a_one_head_model_take_a_flat_list():
    x, y = _single_input_data()
    encoder, heads = _single_input_parts()
    model = MultiTaskModel(encoder, {"left": heads["left"]},
                           losses={"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    model.compile(optimizer="sgd", metrics=["accuracy"])
    scores = model.evaluate(x, {"left": y["left"]}, verbose=0, return_dict=True)
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0)["left"], axis=1) == y["left"])
    np.testing.assert_allclose(scores["left_accuracy"], accuracy, rtol=1e-6)


# -- 6. issue 22: labels and metric names as in a Keras multi-output model ----------------------------


BCE_OPTIONS = {"static": {"weights": [1.0, 1.0]}, "rlw": {"seed": 1}, "graddrop": {"seed": 1},
               "stch": {"warmup_epochs": 0}}


@pytest.mark.parametrize("method", balancers.available())
def test_one_dimensional_labels_train_a_sigmoid_head_with_every_method(method):
    """The issue's input: labels (N,), a (N, 1) sigmoid head, loss="binary_crossentropy" (every CTR pipeline)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"click": (rng.random(16) > 0.5).astype("float32"), "dwell": rng.normal(size=16).astype("float32")}
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(keras.layers.Dense(4, activation="tanh"),
                           {"click": keras.layers.Dense(1, activation="sigmoid"), "dwell": keras.layers.Dense(1)},
                           losses={"click": "binary_crossentropy", "dwell": "mse"},
                           metrics={"click": ["accuracy"], "dwell": ["mae"]},
                           balancer=method, balancer_options=BCE_OPTIONS.get(method))
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert history["skipped_update"] == [0.0] and {"click_accuracy", "dwell_mae"} <= set(history)
    # Independent expectation: numpy's binary cross-entropy and accuracy of the (N, 1) predictions.
    p = np.clip(model.predict(x, verbose=0)["click"][:, 0].astype("float64"), 1e-7, 1 - 1e-7)
    scores = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    bce = -np.mean(y["click"] * np.log(p) + (1 - y["click"]) * np.log(1 - p))
    np.testing.assert_allclose(scores["click_loss"], bce, rtol=1e-5)
    np.testing.assert_allclose(scores["click_accuracy"], np.mean((p > 0.5) == (y["click"] == 1)), rtol=1e-6)


def test_early_stopping_monitors_a_shorthand_metric_name():
    """`metrics={"b": ["mae"]}` logs `b_mae` as Keras does, so `EarlyStopping("val_b_mae")` finds it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"a": rng.integers(0, 3, 16).astype("int32"), "b": rng.normal(size=(16, 1)).astype("float32")}
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(keras.layers.Dense(4), {"a": keras.layers.Dense(3, activation="softmax"),
                                                   "b": keras.layers.Dense(1)},
                           losses={"a": "sparse_categorical_crossentropy", "b": "mse"},
                           metrics={"a": ["acc"], "b": ["mae", "mse"]})
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    stop = keras.callbacks.EarlyStopping(monitor="val_b_mae", patience=0)
    history = model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[stop]).history
    assert stop.mode == "min" and {"val_b_mae", "val_b_mse", "val_a_acc"} <= set(history)
    assert [model.monitor_mode(m) for m in ("val_b_mae", "b_mse", "val_a_acc")] == ["min", "min", "max"]
