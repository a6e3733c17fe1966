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


# -- Sener's official dropout ---------------------------------------------------------------------


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_official_channel_mask_is_shared_by_batch_and_positions_and_unscaled(rng):
    layer = lenet.UnscaledDropout(0.5, noise_shape=(1, 1, 1, None), seed=3)
    x = rng.uniform(0.5, 1.5, size=(8, 6, 6, 64)).astype("float32")
    masks = []
    for _ in range(3):
        y = _np(layer(x, training=True))
        kept = np.all(y == x, axis=(0, 1, 2))
        dropped = np.all(y == 0, axis=(0, 1, 2))
        # Every channel is either kept everywhere (exactly the input: no 1 / (1 - rate)) or zero everywhere.
        assert np.all(kept | dropped)
        assert 16 <= kept.sum() <= 48  # Binomial(64, 0.5): mean 32, sd 4
        masks.append(kept)
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])  # a new mask per call
    for training in (False, None):
        np.testing.assert_array_equal(_np(layer(x, training=training)), x)


def test_official_element_mask_is_unscaled_and_halves_the_training_activations(rng):
    layer = lenet.UnscaledDropout(0.5, seed=4)
    x = np.ones((256, 50), "float32")
    y = _np(layer(x, training=True))
    assert set(np.unique(y)) == {0.0, 1.0}
    assert y.mean() == pytest.approx(0.5, abs=0.02)  # 12,800 draws: sd 0.0044
    assert not np.array_equal(y[0], y[1])  # one mask per example and unit
    # Evaluation sees the whole input: about twice what training sees.
    assert _np(layer(x, training=False)).mean() / y.mean() == pytest.approx(2.0, rel=0.1)


def test_official_dropout_in_the_multilenet(rng):
    encoder = lenet.multi_lenet_encoder(dropout="official", seed=1)
    head = lenet.multi_lenet_head(dropout="official", seed=2)
    assert isinstance(encoder.drop2, lenet.UnscaledDropout) and encoder.drop2.noise_shape == (1, 1, 1, None)
    assert isinstance(head.drop, lenet.UnscaledDropout) and head.drop.noise_shape is None
    assert isinstance(lenet.multi_lenet_encoder().drop2, keras.layers.SpatialDropout2D)
    assert isinstance(lenet.multi_lenet_head().drop, keras.layers.Dropout)
    x = rng.normal(size=(4, 28, 28, 1)).astype("float32")
    z = encoder(x, training=False)
    np.testing.assert_array_equal(_np(encoder(x, training=False)), _np(z))
    assert not np.allclose(_np(encoder(x, training=True)), _np(z))
    np.testing.assert_array_equal(_np(head(z, training=False)), _np(head(z)))
    for net in (encoder, head):
        config = net.get_config()
        assert config["dropout"] == "official"
        clone = type(net).from_config(config)
        assert clone.get_config() == config
        assert any(isinstance(layer, lenet.UnscaledDropout) for layer in clone._stack)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder.drop2))
    assert restored.get_config() == encoder.drop2.get_config()
    with pytest.raises(ValueError, match=r"dropout='sener' is not valid; expected one of \['keras', 'official'\]"):
        lenet.multi_lenet_head(dropout="sener")
    with pytest.raises(ValueError, match="None .* or 1"):
        lenet.UnscaledDropout(0.5, noise_shape=(2, None))


def test_official_dropout_state_under_stateless_call(rng):
    layer = lenet.UnscaledDropout(0.5, noise_shape=(1, None), seed=5)
    x = np.ones((4, 32), "float32")
    before = [_np(v) for v in layer.non_trainable_variables]
    assert before, "the seed state must be a non-trainable variable of the layer"
    y1, state1 = layer.stateless_call(layer.trainable_variables, layer.non_trainable_variables, x, training=True)
    y2, _ = layer.stateless_call(layer.trainable_variables, layer.non_trainable_variables, x, training=True)
    # The layer's own state did not move, so the same state gives the same mask ...
    np.testing.assert_array_equal(_np(y1), _np(y2))
    for b, v in zip(before, layer.non_trainable_variables):
        np.testing.assert_array_equal(_np(v), b)
    # ... and the returned state is the advanced one, which gives another mask.
    y3, _ = layer.stateless_call(layer.trainable_variables, state1, x, training=True)
    assert not np.array_equal(_np(y3), _np(y1))  # equal masks of 32 entries: probability 2**-32
