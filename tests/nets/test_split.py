"""mtl_tf.nets.split.split_model: an existing functional Keras model as encoder + heads.

Expectations come from the original Keras model itself: the split model's
outputs equal its outputs bit for bit, the variables are the very same objects,
and training through MultiTaskModel moves the original model.
"""

import keras
import numpy as np
import pytest

from mtl_tf.nets.split import split_model

# MultiTaskModel (predict through it) needs the TensorFlow backend today; split_model itself is Keras only.
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MultiTaskModel needs TensorFlow")


def two_output_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="dense_0")(x)
    z = keras.layers.Dense(6, activation="relu", name="dense_1")(h)
    z = keras.layers.Dropout(0.5, name="dropout")(z)
    left = keras.layers.Dense(3, name="left")(z)
    right = keras.layers.Dense(1, name="right")(keras.layers.Dense(4, activation="tanh", name="right_hidden")(z))
    return keras.Model(x, [left, right], name="user_model")


def data(num=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 5)).astype("float32")
    return x, {"left": rng.integers(0, 3, num).astype("int32"), "right": rng.normal(size=(num, 1)).astype("float32")}


LOSSES = {"left": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "right": "mse"}


@tensorflow_only
def test_split_predicts_exactly_the_original_and_shares_its_variables(tmp_path):
    from mtl_tf.model import MultiTaskModel

    model = two_output_model()
    encoder, heads = split_model(model, at="dropout", task_names=["left", "right"])
    assert list(heads) == ["left", "right"]
    split_variables = encoder.weights + [w for head in heads.values() for w in head.weights]
    assert {id(v) for v in split_variables} == {id(v) for v in model.weights}
    assert encoder.get_layer("dense_0") is model.get_layer("dense_0")

    mtm = MultiTaskModel(encoder, heads, losses=LOSSES, balancer="mgda_ub")
    x, y = data()
    expected = model.predict(x, verbose=0)
    got = mtm.predict(x, verbose=0)
    np.testing.assert_array_equal(got["left"], expected[0])
    np.testing.assert_array_equal(got["right"], expected[1])

    before = model.get_layer("dense_0").get_weights()[0].copy()
    mtm.compile(optimizer=keras.optimizers.SGD(0.1))
    mtm.fit(x, y, epochs=2, verbose=0)
    # Shared weights: training the multi-task model trained the user's model.
    assert not np.allclose(model.get_layer("dense_0").get_weights()[0], before)
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(mtm.predict(x, verbose=0)["right"], expected[1])

    mtm.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0)["left"], expected[0])


@tensorflow_only
def test_dict_inputs_and_outputs_name_the_tasks():
    from mtl_tf.model import MultiTaskModel

    keras.utils.set_random_seed(1)
    image, meta = keras.Input((4,), name="image"), keras.Input((2,), name="meta")
    trunk = keras.layers.Dense(5, name="trunk")(keras.layers.Concatenate(name="concat")([image, meta]))
    outputs = {"digit": keras.layers.Dense(10, name="digit_logits")(trunk),
               "colour": keras.layers.Dense(3, name="colour_logits")(trunk)}
    model = keras.Model({"image": image, "meta": meta}, outputs)
    encoder, heads = split_model(model, at="trunk")
    assert list(heads) == ["digit", "colour"]
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(6, 4)).astype("float32"), "meta": rng.normal(size=(6, 2)).astype("float32")}
    got = MultiTaskModel(encoder, heads, losses={"digit": "mse", "colour": "mse"}).predict(x, verbose=0)
    expected = model.predict(x, verbose=0)
    for task in heads:
        np.testing.assert_array_equal(got[task], expected[task])


def test_default_names_are_keras_output_names_and_a_sequential_splits():
    model = two_output_model()
    _, heads = split_model(model, at="dense_1")
    assert list(heads) == list(model.output_names) == ["left", "right"]

    keras.utils.set_random_seed(2)
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    encoder, heads = split_model(sequential, at="a", task_names=["only"])
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(heads["only"](encoder(x)), sequential(x))


def test_skip_connection_around_the_cut_is_refused_naming_the_layers():
    x = keras.Input((5,))
    early = keras.layers.Dense(4, name="early")(x)
    cut = keras.layers.Dense(4, name="cut")(early)
    joined = keras.layers.Add(name="join")([keras.layers.Dense(4, name="late")(cut), early])
    model = keras.Model(x, [keras.layers.Dense(1, name="out_a")(joined), keras.layers.Dense(1, name="out_b")(cut)])
    with pytest.raises(ValueError, match=r"layer 'join' in the head of output 'out_a'.*'early'.*bypasses the cut"):
        split_model(model, at="cut")


def test_a_head_reading_a_model_input_is_refused():
    x, extra = keras.Input((5,), name="x"), keras.Input((2,), name="extra")
    cut = keras.layers.Dense(4, name="cut")(x)
    head = keras.layers.Concatenate(name="with_extra")([cut, extra])
    model = keras.Model([x, extra], keras.layers.Dense(1, name="out")(head))
    with pytest.raises(ValueError, match=r"layer 'with_extra'.*reads the output of 'extra'"):
        split_model(model, at="cut")


def test_bad_requests_are_named():
    model = two_output_model()
    with pytest.raises(ValueError, match=r"no layer named 'dense_9'; its layers: \['x', 'dense_0'"):
        split_model(model, at="dense_9")
    with pytest.raises(ValueError, match="3 names for the 2 outputs"):
        split_model(model, at="dense_1", task_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="distinct"):
        split_model(model, at="dense_1", task_names=["a", "a"])
    # An output that does not pass through the cut at all.
    with pytest.raises(ValueError, match=r"output 'left' .* does not depend on layer 'right_hidden'"):
        split_model(model, at="right_hidden")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="no functional graph"):
        split_model(Subclassed(), at="dense")


def test_a_layer_called_twice_is_refused():
    x1, x2 = keras.Input((3,)), keras.Input((3,))
    shared = keras.layers.Dense(2, name="shared")
    outputs = [keras.layers.Dense(1, name="o1")(shared(x1)), keras.layers.Dense(1, name="o2")(shared(x2))]
    model = keras.Model([x1, x2], outputs)
    with pytest.raises(ValueError, match="'shared' .* called 2 times"):
        split_model(model, at="shared")


def test_a_built_sequential_without_task_names_names_its_task_after_its_last_layer():
    # Keras' own name for a Sequential's one output is its last layer's name.
    keras.utils.set_random_seed(3)
    sequential = keras.Sequential([keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    sequential.build((None, 3))
    encoder, heads = split_model(sequential, at="a")
    assert list(heads) == ["b"]
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(heads["b"](encoder(x)), sequential(x))


def test_an_unbuilt_sequential_is_refused_saying_how_to_build_it():
    sequential = keras.Sequential([keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    with pytest.raises(ValueError, match=r"Sequential model 'sequential.*' is not built.*keras.Input.*model.build"):
        split_model(sequential, at="a")
