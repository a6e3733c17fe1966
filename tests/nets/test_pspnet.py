"""Dilated ResNet-50 and pyramid-pooling decoders: keras.applications equivalence, stride 8, shapes, MGDA-UB step."""

import math

import keras
import numpy as np
import pytest

import mtl_tf
from mtl_tf import losses, metrics
from mtl_tf.nets import pspnet

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
if ON_TENSORFLOW:
    import tensorflow as tf
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

TINY = {"blocks": (1, 1, 1, 1), "width": 4}  # 128 output channels


def _numpy_adaptive_pool(x, out_h, out_w):
    """PyTorch's AdaptiveAvgPool2d rule: bin i spans [floor(i n / s), ceil((i + 1) n / s))."""
    b, h, w, c = x.shape
    out = np.zeros((b, out_h, out_w, c), x.dtype)
    for i in range(out_h):
        r0, r1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            c0, c1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "size, output_size",
    [((7, 5), 3), ((8, 16), 6), ((2, 3), 6), ((6, 6), (2, 3)), ((32, 64), 1)],
)
def test_adaptive_pooling_matches_bin_means(size, output_size, rng):
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    layer = pspnet.AdaptiveAveragePooling2D(output_size)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    expected = _numpy_adaptive_pool(x, out_h, out_w)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)
    if ON_TENSORFLOW:  # GradientTape / tf.function (XLA, run-time shapes): the TensorFlow engine's
        # Unknown spatial size (runtime matrices) and XLA (constant matrices) agree.
        dynamic = tf.function(layer.call, input_signature=[tf.TensorSpec([None, None, None, 3])])
        np.testing.assert_allclose(dynamic(x).numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tf.function(layer.call, jit_compile=True)(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((2, *size, 3)) == (2, out_h, out_w, 3)


def test_encoder_is_keras_applications_resnet50_dilated_to_stride_8(tmp_path, rng):
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    weights_file = str(tmp_path / "resnet50_notop.weights.h5")
    reference.save_weights(weights_file)
    dilated = pspnet.DilatedResNet50(output_stride=8, weights_path=weights_file)
    plain = pspnet.DilatedResNet50(output_stride=32)

    # Same network: parameter count, layer names, weights read from a keras.applications file.
    assert dilated.count_params() == reference.count_params() == 23_587_712
    assert sum(int(np.prod(v.shape)) for v in dilated.trainable_variables) == sum(
        int(np.prod(v.shape)) for v in reference.trainable_variables
    )
    names = {layer.name for layer in reference.layers if layer.weights}
    assert names == {layer.name for layer in dilated.trunk.layers if layer.weights}
    for name in ("conv1_conv", "conv4_block3_2_conv", "conv5_block3_3_bn"):
        for ours, theirs in zip(dilated.trunk.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    plain.trunk.set_weights(reference.get_weights())

    x = rng.normal(size=(1, 64, 96, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    at_32 = keras.ops.convert_to_numpy(plain(x, training=False))
    at_8 = keras.ops.convert_to_numpy(dilated(x, training=False))
    assert expected.shape == (1, 2, 3, 2048)
    np.testing.assert_array_equal(at_32, expected)
    # Output stride 8: 64x96 -> 8x12, and every 4th position is the undilated network's output
    # (removing a stride and dilating the following 3x3 convolutions computes the same values
    # on a 2x finer grid), which holds only if the strides and dilations are right.
    assert at_8.shape == (1, 8, 12, 2048)
    assert dilated.compute_output_shape((None, 64, 96, 3)) == (None, 8, 12, 2048)
    np.testing.assert_allclose(at_8[:, ::4, ::4], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(at_8[:, 1::4, 1::4], expected, atol=1e-3)  # the extra positions are new values


def test_encoder_weight_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not download"):
        pspnet.DilatedResNet50(weights_path="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        pspnet.DilatedResNet50(weights_path=str(tmp_path / "missing.h5"))
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="fit only ResNet-50 itself"):
        pspnet.DilatedResNet50(weights_path=str(tmp_path / "w.h5"), **TINY)
    with pytest.raises(ValueError, match="output_stride"):
        pspnet.DilatedResNet50(output_stride=4, **TINY)


@pytest.mark.parametrize("output_stride, size", [(8, (64, 128)), (8, (60, 100)), (16, (64, 128))])
def test_tiny_encoder_shapes(output_stride, size, rng):
    encoder = pspnet.dilated_resnet50_encoder(output_stride=output_stride, **TINY)
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    z = encoder(x)
    expected = (2, math.ceil(size[0] / output_stride), math.ceil(size[1] / output_stride), 128)
    assert tuple(z.shape) == expected == encoder.compute_output_shape(x.shape)


def test_encoder_config_round_trip(rng):
    encoder = pspnet.DilatedResNet50(output_stride=16, batch_norm_momentum=0.9, **TINY)
    clone = pspnet.DilatedResNet50.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    clone.set_weights(encoder.get_weights())
    x = rng.normal(size=(1, 32, 48, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x, training=False)),
        keras.ops.convert_to_numpy(encoder(x, training=False)),
        rtol=1e-6, atol=1e-6,
    )
    assert clone.trunk.get_layer("conv1_bn").momentum == 0.9


def _decoder_parameters(features, channels, outputs, scales=4, trainable=False):
    """By hand: 1x1 branch convs (no bias) + BN, 3x3 fusion conv (no bias) + BN, 1x1 classifier with bias."""
    bn = 2 if trainable else 4
    branches = scales * (features * channels + bn * channels)
    fuse = 9 * (features + scales * channels) * channels + bn * channels
    return branches + fuse + channels * outputs + outputs


def test_decoder_shapes_parameters_config_and_xla(rng):
    decoder = pspnet.pyramid_pooling_decoder(19, channels=8, name="segmentation")
    features = rng.normal(size=(2, 5, 7, 16)).astype("float32")  # 5x7: pooling bins overlap
    logits = decoder(features, training=False)
    assert tuple(logits.shape) == (2, 5, 7, 19) == decoder.compute_output_shape(features.shape)
    assert decoder.count_params() == _decoder_parameters(16, 8, 19)
    assert sum(int(np.prod(v.shape)) for v in decoder.trainable_variables) == _decoder_parameters(16, 8, 19, trainable=True)
    clone = pspnet.PyramidPoolingDecoder.from_config(decoder.get_config())
    clone.build(features.shape)
    clone.set_weights(decoder.get_weights())
    expected = keras.ops.convert_to_numpy(logits)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(features, training=False)), expected, rtol=1e-5, atol=1e-5)
    if ON_TENSORFLOW:  # GradientTape / tf.function (XLA, run-time shapes): the TensorFlow engine's
        compiled = tf.function(lambda x: decoder(x, training=False), jit_compile=True)
        np.testing.assert_allclose(compiled(features).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert decoder.get_config()["pool_scales"] == [1, 2, 3, 6]


def test_decoder_default_width_is_psp():
    decoder = pspnet.PyramidPoolingDecoder(1)
    decoder.build((None, 32, 64, 2048))
    assert decoder.count_params() == _decoder_parameters(2048, 512, 1)
    assert decoder.dropout.rate == 0.1


@tensorflow_only
def test_mgda_ub_fit_step_on_three_cityscapes_tasks(rng):
    """Sener's set-up at a tiny size: 19-class segmentation, 2-channel offsets, disparity."""
    encoder = pspnet.dilated_resnet50_encoder(**TINY)
    heads = {
        "segmentation": pspnet.pyramid_pooling_decoder(19, channels=8, name="segmentation"),
        "instance": pspnet.pyramid_pooling_decoder(2, channels=8, name="instance"),
        "disparity": pspnet.pyramid_pooling_decoder(1, channels=8, name="disparity"),
    }
    model = mtl_tf.MultiTaskModel(
        encoder,
        heads,
        losses={
            "segmentation": losses.MaskedSparseCategoricalCrossentropy(),
            "instance": losses.MaskedL1(invalid_value=losses.INVALID_OFFSET),
            "disparity": losses.MaskedL1(),
        },
        metrics={
            "segmentation": [metrics.MeanIoU(19)],
            "instance": [metrics.OffsetError("mse")],
            "disparity": [metrics.DepthAbsoluteError()],
        },
        balancer="mgda_ub",
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-4), jit_compile=False)
    x = rng.normal(size=(2, 64, 128, 3)).astype("float32")
    labels = rng.integers(0, 19, size=(2, 8, 16))
    labels[:, 0] = losses.IGNORE_LABEL
    offsets = rng.normal(size=(2, 8, 16, 2)).astype("float32")
    offsets[:, :, :4] = losses.INVALID_OFFSET
    disparity = rng.uniform(0.5, 2.0, size=(2, 8, 16, 1)).astype("float32")
    disparity[:, -1] = 0.0
    y = {"segmentation": labels, "instance": offsets, "disparity": disparity}
    model.build(x.shape)
    # Built before fit: variables created inside the first trace make tf.function trace the step twice.
    model.optimizer.build(model.trainable_variables)
    before = [v.numpy().copy() for v in encoder.trainable_variables]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    weights = [history[f"{t}_weight"][-1] for t in heads]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5) and min(weights) >= 0.0
    for key in ("loss", "segmentation_miou", "instance_offset_mse", "disparity_depth_abs_error"):
        assert np.isfinite(history[key][-1]), key
    assert history["skipped_update"][-1] == 0.0
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, encoder.trainable_variables))
    predictions = model(x, training=False)
    assert {t: tuple(p.shape) for t, p in predictions.items()} == {
        "segmentation": (2, 8, 16, 19), "instance": (2, 8, 16, 2), "disparity": (2, 8, 16, 1)
    }


@pytest.mark.slow
@tensorflow_only
def test_mgda_ub_step_compiles_with_xla(rng):
    encoder = pspnet.dilated_resnet50_encoder(**TINY)
    heads = {"segmentation": pspnet.pyramid_pooling_decoder(5, channels=4, name="segmentation"),
             "disparity": pspnet.pyramid_pooling_decoder(1, channels=4, name="disparity")}
    model = mtl_tf.MultiTaskModel(
        encoder,
        heads,
        losses={"segmentation": losses.MaskedSparseCategoricalCrossentropy(), "disparity": losses.MaskedL1(invalid_value=None)},
        metrics={"segmentation": [metrics.MeanIoU(5)], "disparity": [metrics.DepthAbsoluteError(invalid_value=None)]},
        balancer="mgda_ub",
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=True)
    x = rng.normal(size=(2, 32, 48, 3)).astype("float32")
    disparity = rng.normal(size=(2, 4, 6, 1)).astype("float32")
    disparity[:, 0] = np.nan  # NaN marks pixels without a measurement
    y = {"segmentation": rng.integers(0, 5, size=(2, 4, 6)), "disparity": disparity}
    model.build(x.shape)
    model.optimizer.build(model.trainable_variables)
    history = model.fit(x, y, batch_size=2, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values()) and history["skipped_update"][-1] == 0.0
