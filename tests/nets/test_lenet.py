"""LeNet trunks and heads: shapes, hand-counted parameters, serialisation."""

import keras
import numpy as np
import pytest

from mtl_tf.nets import lenet

# Parameter counts by hand: conv = k*k*c_in*c_out + c_out, dense = n_in*n_out + n_out.
MULTI_ENCODER = (5 * 5 * 1 * 10 + 10) + (5 * 5 * 10 * 20 + 20) + (4 * 4 * 20 * 50 + 50)
MULTI_HEAD = (50 * 50 + 50) + (50 * 10 + 10)
PARETO_ENCODER = (9 * 9 * 1 * 10 + 10) + (5 * 5 * 10 * 20 + 20) + (5 * 5 * 20 * 50 + 50)
PARETO_HEAD = 50 * 10 + 10

CASES = {
    "multi": (lenet.multi_lenet_encoder, lenet.multi_lenet_head, 28, MULTI_ENCODER, MULTI_HEAD),
    "pareto": (lenet.pareto_lenet_encoder, lenet.pareto_lenet_head, 36, PARETO_ENCODER, PARETO_HEAD),
}


def test_hand_counts():
    assert (MULTI_ENCODER, MULTI_HEAD, PARETO_ENCODER, PARETO_HEAD) == (21_330, 3_060, 30_890, 510)


@pytest.mark.parametrize("kind", CASES)
def test_shapes_and_parameter_counts(kind, rng):
    make_encoder, make_head, size, n_encoder, n_head = CASES[kind]
    encoder, head = make_encoder(), make_head(10)
    x = rng.normal(size=(4, size, size, 1)).astype("float32")
    z = encoder(x)
    logits = head(z)
    assert tuple(z.shape) == (4, 50) and tuple(logits.shape) == (4, 10)
    assert np.all(keras.ops.convert_to_numpy(z) >= 0)  # ends with a ReLU
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == n_encoder
    assert sum(int(np.prod(v.shape)) for v in head.trainable_variables) == n_head
    assert encoder.count_params() == n_encoder and head.count_params() == n_head
    assert len(encoder.trainable_variables) == 6
    assert encoder.compute_output_shape((None, size, size, 1)) == (None, 50)
    assert make_head(7).compute_output_shape((None, 50)) == (None, 7)


@pytest.mark.parametrize("kind", CASES)
def test_flatten_sizes(kind):
    make_encoder, _, size, _, _ = CASES[kind]
    encoder = make_encoder()
    encoder.build((None, size, size, 1))
    assert encoder.fc.kernel.shape == ((320 if kind == "multi" else 500), 50)


@pytest.mark.parametrize("kind", CASES)
def test_in_a_functional_model(kind):
    make_encoder, make_head, size, n_encoder, n_head = CASES[kind]
    inputs = keras.Input((size, size, 1))
    z = make_encoder()(inputs)
    model = keras.Model(inputs, {"left": make_head()(z), "right": make_head()(z)})
    assert model.count_params() == n_encoder + 2 * n_head
    assert {k: tuple(v.shape) for k, v in model.output.items()} == {
        "left": (None, 10), "right": (None, 10)
    }


def _copy_and_compare(layer, shape, rng):
    clone = type(layer).from_config(layer.get_config())
    clone.build(shape)
    clone.set_weights(layer.get_weights())
    x = rng.normal(size=(3,) + shape[1:]).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x, training=False)),
        keras.ops.convert_to_numpy(layer(x, training=False)),
        rtol=1e-6, atol=1e-6,
    )
    return clone


@pytest.mark.parametrize("kind", CASES)
def test_config_round_trip(kind, rng):
    make_encoder, make_head, size, n_encoder, n_head = CASES[kind]
    encoder, head = make_encoder(), make_head(10)
    encoder.build((None, size, size, 1))
    head.build((None, 50))
    enc2 = _copy_and_compare(encoder, (None, size, size, 1), rng)
    head2 = _copy_and_compare(head, (None, 50), rng)
    assert enc2.get_config() == encoder.get_config() and enc2.count_params() == n_encoder
    assert head2.get_config() == head.get_config() and head2.count_params() == n_head
    # Registered under "mtl_tf": deserialisable without custom_objects.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert type(restored) is type(encoder)
    assert keras.saving.get_registered_name(type(encoder)).startswith("mtl_tf>")


def test_constructor_arguments_recorded():
    encoder = lenet.multi_lenet_encoder(filters=(6, 12), units=32, dropout_rate=0.25, seed=3)
    config = encoder.get_config()
    assert config["filters"] == [6, 12] and config["units"] == 32
    assert config["dropout_rate"] == 0.25 and config["seed"] == 3
    clone = lenet.MultiLeNetEncoder.from_config(config)
    assert clone.compute_output_shape((None, 28, 28, 1)) == (None, 32)
    head = lenet.multi_lenet_head(num_classes=4, units=20, dropout_rate=0.1)
    assert head.get_config()["num_classes"] == 4 and head.get_config()["units"] == 20
    pareto = lenet.pareto_lenet_encoder(kernel_sizes=(5, 5))
    assert pareto.compute_output_shape((None, 36, 36, 1)) == (None, 50)
    assert pareto.get_config()["kernel_sizes"] == [5, 5]
    assert lenet.pareto_lenet_head(3).get_config()["num_classes"] == 3


def test_dropout_only_in_training(rng):
    encoder, head = lenet.multi_lenet_encoder(seed=1), lenet.multi_lenet_head(seed=2)
    x = rng.normal(size=(8, 28, 28, 1)).astype("float32")
    z = encoder(x, training=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(encoder(x, training=False)), keras.ops.convert_to_numpy(z)
    )
    assert not np.allclose(keras.ops.convert_to_numpy(encoder(x, training=True)), z)
    assert not np.allclose(
        keras.ops.convert_to_numpy(head(z, training=True)),
        keras.ops.convert_to_numpy(head(z, training=False)),
    )


def test_saved_model_file_round_trip(tmp_path, rng):
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, lenet.multi_lenet_head()(lenet.multi_lenet_encoder()(inputs)))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = rng.normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
