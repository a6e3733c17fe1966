"""SegNet: pooling switches by hand, shapes, hand-counted parameters, serialisation, an MGDA-UB step."""

import keras
import numpy as np
import pytest

import mtl_tf
from mtl_tf import losses, metrics
from mtl_tf.nets import segnet

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
if ON_TENSORFLOW:
    import tensorflow as tf
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

SMALL = {"filters": (4, 8, 8, 16, 16)}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_pooling_switches_and_unpooling_by_hand():
    x = np.array(
        [
            [1, 2, 0, 0],
            [3, 0, 5, 5],  # a tie in the top-right window: the first (row-major) 5 wins
            [0, 0, -1, -2],
            [0, 0, -3, -1],  # all-zero window: position 0; the bottom-right maximum -1 is at 0
        ],
        "float32",
    )[None, :, :, None]
    pooled, switches = segnet.MaxPoolingWithSwitches()(x)
    np.testing.assert_array_equal(_np(pooled)[0, :, :, 0], [[3, 5], [0, -1]])
    np.testing.assert_array_equal(_np(switches)[0, :, :, 0], [[2, 2], [0, 0]])
    unpooled = segnet.MaxUnpoolingWithSwitches()(pooled, switches)
    np.testing.assert_array_equal(
        _np(unpooled)[0, :, :, 0], [[0, 0, 0, 0], [3, 0, 5, 0], [0, 0, -1, 0], [0, 0, 0, 0]]
    )
    if ON_TENSORFLOW:  # GradientTape / tf.function (XLA, run-time shapes): the TensorFlow engine's
        # The gradient reaches the selected maximum only (one per window, ties included).
        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(segnet.MaxPoolingWithSwitches()(variable)[0])
        np.testing.assert_array_equal(
            tape.gradient(value, variable).numpy()[0, :, :, 0],
            [[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]],
        )


@tensorflow_only
def test_pooling_matches_max_pool_and_compiles(rng):
    x = rng.normal(size=(2, 6, 8, 5)).astype("float32")
    layer, unpool = segnet.MaxPoolingWithSwitches(), segnet.MaxUnpoolingWithSwitches()

    def round_trip(inputs):
        pooled, switches = layer(inputs)
        return pooled, unpool(pooled, switches)

    pooled, unpooled = (t.numpy() for t in tf.function(round_trip, jit_compile=True)(x))
    np.testing.assert_array_equal(pooled, tf.nn.max_pool2d(x, 2, 2, "VALID").numpy())
    # Unpooling puts every maximum back in place and zeros elsewhere.
    np.testing.assert_array_equal(unpooled, np.where(unpooled != 0, x, 0))
    assert np.count_nonzero(unpooled) == pooled.size
    dynamic = tf.function(round_trip, input_signature=[tf.TensorSpec([None, None, None, 5])])
    np.testing.assert_array_equal(dynamic(x)[1].numpy(), unpooled)


def _conv_parameters(c_in, c_out, trainable=False):
    """3x3 conv with bias, then batch norm (2 trainable + 2 moving statistics per channel)."""
    return 9 * c_in * c_out + c_out + (2 if trainable else 4) * c_out


def _expected_counts(filters=(64, 128, 256, 512, 512), convs=(2, 2, 3, 3, 3), outputs=13):
    encoder, c_in = 0, 3
    for width, count in zip(filters, convs):
        for _ in range(count):
            encoder += _conv_parameters(c_in, width)
            c_in = width
    decoder = 0
    for block in reversed(range(len(filters))):
        width = filters[max(block - 1, 0)]
        for _ in range(convs[block]):
            decoder += _conv_parameters(c_in, width)
            c_in = width
    decoder += 9 * filters[0] * filters[0] + filters[0] + filters[0] * outputs + outputs  # prediction layers
    return encoder, decoder


def test_default_parameter_counts_by_hand():
    encoder, decoder = _expected_counts()
    # VGG-16's 13 convolutions have 14,714,688 parameters; batch norm adds 4 per channel (4,224 channels).
    assert encoder == 14_714_688 + 4 * 4_224
    net = segnet.segnet_encoder()
    net.build((None, 288, 384, 3))
    head = segnet.segnet_decoder(13)
    head.build(net.compute_output_shape((None, 288, 384, 3)))
    assert net.count_params() == encoder and head.count_params() == decoder
    assert [c.filters for c in head.convs] == [512] * 3 + [256] * 3 + [128] * 3 + [64] * 2 + [64] * 2


def test_shapes_and_normal_head(rng):
    encoder = segnet.segnet_encoder(**SMALL)
    heads = {
        "segmentation": segnet.segnet_decoder(13, **SMALL),
        "depth": segnet.segnet_decoder(1, **SMALL),
        "normal": segnet.segnet_decoder(3, "l2_normalize", **SMALL),
    }
    x = rng.normal(size=(2, 32, 64, 3)).astype("float32")
    z = encoder(x, training=True)
    assert tuple(z["features"].shape) == (2, 1, 2, 16)
    assert [tuple(s.shape) for s in z["switches"]] == [(2, 16, 32, 4), (2, 8, 16, 8), (2, 4, 8, 8), (2, 2, 4, 16), (2, 1, 2, 16)]
    spec = encoder.compute_output_shape((2, 32, 64, 3))
    assert spec["features"] == (2, 1, 2, 16) and len(spec["switches"]) == 5
    outputs = {t: _np(h(z, training=True)) for t, h in heads.items()}
    assert {t: o.shape for t, o in outputs.items()} == {
        "segmentation": (2, 32, 64, 13), "depth": (2, 32, 64, 1), "normal": (2, 32, 64, 3)
    }
    np.testing.assert_allclose(np.linalg.norm(outputs["normal"], axis=-1), 1.0, rtol=1e-5)
    assert heads["depth"].compute_output_shape(spec) == (2, 32, 64, 1)


@tensorflow_only
def test_switches_carry_no_gradient(rng):
    encoder, decoder = segnet.segnet_encoder(**SMALL), segnet.segnet_decoder(1, **SMALL)
    x = rng.normal(size=(1, 32, 32, 3)).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        z = encoder(x, training=True)
        loss = tf.reduce_mean(tf.square(decoder(z, training=True)))
    assert all(g is None for g in tape.gradient(loss, list(z["switches"])))
    assert tape.gradient(loss, z["features"]) is not None


def test_sizes_must_be_multiples_of_32(rng):
    with pytest.raises(ValueError, match="multiples of 32; got 48x64"):
        segnet.segnet_encoder(**SMALL)(rng.normal(size=(1, 48, 64, 3)).astype("float32"))
    with pytest.raises(ValueError, match="output_activation"):
        segnet.segnet_decoder(3, "softmax")


def test_config_round_trip(rng):
    encoder = segnet.SegNetEncoder(filters=(4, 8), convs_per_block=(1, 2), seed=3)
    decoder = segnet.SegNetDecoder(3, output_activation="l2_normalize", filters=(4, 8), convs_per_block=(1, 2))
    x = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    z = encoder(x, training=False)
    expected = _np(decoder(z, training=False))
    encoder_clone = segnet.SegNetEncoder.from_config(encoder.get_config())
    decoder_clone = segnet.SegNetDecoder.from_config(decoder.get_config())
    encoder_clone.build(x.shape)
    decoder_clone.build(encoder.compute_output_shape(x.shape))
    encoder_clone.set_weights(encoder.get_weights())
    decoder_clone.set_weights(decoder.get_weights())
    np.testing.assert_allclose(_np(decoder_clone(encoder_clone(x, training=False), training=False)), expected, rtol=1e-5, atol=1e-6)
    assert decoder_clone.get_config()["output_activation"] == "l2_normalize"
    if ON_TENSORFLOW:  # GradientTape / tf.function (XLA, run-time shapes): the TensorFlow engine's
        compiled = tf.function(lambda inputs: decoder(encoder(inputs, training=False), training=False), jit_compile=True)
        np.testing.assert_allclose(compiled(x).numpy(), expected, rtol=1e-4, atol=1e-5)


@tensorflow_only
def test_mgda_ub_fit_step_on_nyuv2_tasks(rng):
    """Lee & Son's NYUv2 tasks at a tiny size (3 blocks of 1 conv): shared encoder, three decoders."""
    tiny = {"filters": (4, 8, 8), "convs_per_block": (1, 1, 1)}
    encoder = segnet.segnet_encoder(**tiny)
    heads = {
        "segmentation": segnet.segnet_decoder(13, name="segmentation", **tiny),
        "depth": segnet.segnet_decoder(1, name="depth", **tiny),
        "normal": segnet.segnet_decoder(3, "l2_normalize", name="normal", **tiny),
    }
    model = mtl_tf.MultiTaskModel(
        encoder,
        heads,
        losses={
            "segmentation": losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1),
            "depth": losses.MaskedL1(),
            "normal": losses.NormalCosineLoss(),
        },
        metrics={
            "segmentation": [metrics.MeanIoU(13, ignore_class=-1), metrics.PixelAccuracy(13, ignore_class=-1)],
            "depth": [metrics.DepthAbsoluteError(), metrics.DepthRelativeError()],
            "normal": [metrics.NormalAngleMean(), metrics.NormalAngleMedian(), metrics.NormalAngleWithin(11.25)],
        },
        balancer="mgda_ub",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=False)
    x = rng.normal(size=(2, 16, 24, 3)).astype("float32")
    labels = rng.integers(-1, 13, size=(2, 16, 24))
    depth = rng.uniform(0.5, 5.0, size=(2, 16, 24, 1)).astype("float32")
    depth[:, :4] = 0.0
    normal = rng.normal(size=(2, 16, 24, 3)).astype("float32")
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[:, :, :3] = 0.0
    model.build(x.shape)
    model.optimizer.build(model.trainable_variables)  # before fit: one trace of the step
    history = model.fit(x, {"segmentation": labels, "depth": depth, "normal": normal}, batch_size=2, verbose=0).history
    weights = [history[f"{t}_weight"][-1] for t in heads]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert all(np.isfinite(v[-1]) for v in history.values())
    assert 0.0 <= history["normal_normal_within_11.25"][-1] <= 1.0
    assert history["skipped_update"][-1] == 0.0


@tensorflow_only
def test_multi_task_model_saves_and_reloads(tmp_path, rng):
    """The dict representation (features + switches) survives a .keras round trip."""
    tiny = {"filters": (4, 8), "convs_per_block": (1, 1)}
    model = mtl_tf.MultiTaskModel(
        segnet.segnet_encoder(**tiny),
        {"segmentation": segnet.segnet_decoder(5, name="segmentation", **tiny),
         "normal": segnet.segnet_decoder(3, "l2_normalize", name="normal", **tiny)},
        losses={"segmentation": losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1), "normal": losses.NormalCosineLoss()},
        metrics={"normal": [metrics.NormalAngleMedian(bin_width=0.5)]},
        balancer="mgda_ub",
    )
    x = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    model.build(x.shape)
    expected = {t: _np(v) for t, v in model(x, training=False).items()}
    model.save(tmp_path / "segnet.keras")
    reloaded = keras.saving.load_model(tmp_path / "segnet.keras")
    for task, value in reloaded(x, training=False).items():
        np.testing.assert_allclose(_np(value), expected[task], rtol=1e-6, atol=1e-6)
    assert reloaded.task_metrics["normal"][0].bin_width == 0.5


@pytest.mark.slow
@tensorflow_only
def test_mgda_ub_step_compiles_with_xla(rng):
    tiny = {"filters": (4, 8), "convs_per_block": (1, 1)}
    encoder = segnet.segnet_encoder(**tiny)
    heads = {"segmentation": segnet.segnet_decoder(5, name="segmentation", **tiny),
             "normal": segnet.segnet_decoder(3, "l2_normalize", name="normal", **tiny)}
    model = mtl_tf.MultiTaskModel(
        encoder,
        heads,
        losses={"segmentation": losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1), "normal": losses.NormalCosineLoss()},
        metrics={"segmentation": [metrics.MeanIoU(5, ignore_class=-1)], "normal": [metrics.NormalAngleMedian()]},
        balancer="mgda_ub",
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=True)
    x = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    y = {"segmentation": rng.integers(-1, 5, size=(2, 8, 12)), "normal": rng.normal(size=(2, 8, 12, 3)).astype("float32")}
    model.build(x.shape)
    model.optimizer.build(model.trainable_variables)
    history = model.fit(x, y, batch_size=2, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values()) and history["skipped_update"][-1] == 0.0
