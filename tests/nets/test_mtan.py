"""MTAN on SegNet: shapes, hand-counted parameters, serialisation, the attention rule, fit with mgda_ub / pcgrad."""

import keras
import numpy as np
import pytest

import mtl_tf
from mtl_tf.nets import mtan
from tests.keras_checks import check_serialization
from tests.nets import arch_checks

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
if ON_TENSORFLOW:
    import tensorflow as tf
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

F = (4, 8, 8, 16, 16)
SMALL = {"filters": F}


def conv_bn(cin, cout, k=3):
    """A conv (with bias) + batch norm: trainable kernel, bias, gamma, beta."""
    return k * k * cin * cout + cout + 2 * cout


def attention(cin, width):
    return conv_bn(cin, width, 1) + conv_bn(width, width, 1)


def test_backbone_shapes_and_hand_count(rng):
    backbone = mtan.mtan_backbone(**SMALL)
    out = backbone(rng.normal(size=(2, 32, 64, 3)).astype("float32"))
    shapes = {k: [tuple(t.shape) for t in v] for k, v in out.items()}
    sizes = [(32, 64), (16, 32), (8, 16), (4, 8), (2, 4)]  # block j before its pooling
    assert shapes["encoder_first"] == shapes["encoder_last"] == [(2, *sizes[j], F[j]) for j in range(5)]
    assert shapes["decoder_unpooled"] == [(2, *sizes[j], F[j]) for j in reversed(range(5))]
    assert shapes["decoder_last"] == [(2, *sizes[j], F[max(j - 1, 0)]) for j in reversed(range(5))]
    assert {k: list(v) for k, v in backbone.compute_output_shape((2, 32, 64, 3)).items()} == shapes
    # SegNet encoder 3-4-4 | 4-8-8 | 8-8-8-8 | 8-16-16-16 | 16-16-16-16, decoder (deepest first)
    # 16-16-16-16 | 16-8-8-8 | 8-8-8-8 | 8-4-4 | 4-4-4.
    encoder = [(3, 4), (4, 4), (4, 8), (8, 8), (8, 8), (8, 8), (8, 8), (8, 16), (16, 16), (16, 16),
               (16, 16), (16, 16), (16, 16)]
    decoder = [(16, 16), (16, 16), (16, 16), (16, 8), (8, 8), (8, 8), (8, 8), (8, 8), (8, 8), (8, 4), (4, 4),
               (4, 4), (4, 4)]
    trainable = sum(conv_bn(a, b) for a, b in encoder + decoder)
    moving = sum(2 * b for _, b in encoder + decoder)
    assert arch_checks.count(backbone) == (trainable, moving)


def test_head_hand_count_and_shapes(rng):
    backbone, head = mtan.mtan_backbone(**SMALL), mtan.mtan_head(3, **SMALL)
    maps = backbone(rng.normal(size=(2, 32, 32, 3)).astype("float32"))
    assert tuple(head(maps).shape) == (2, 32, 32, 3)
    # Encoder attention: 4 on u_1 (4 channels), then f_j on [u_j ; previous] (2 f_j); f layers to f_{j+1}.
    enc_att = attention(4, 4) + sum(attention(2 * F[j], F[j]) for j in range(1, 5))
    enc_f = conv_bn(4, 8) + conv_bn(8, 8) + conv_bn(8, 16) + conv_bn(16, 16) + conv_bn(16, 16)
    # Decoder, deepest first: f 16->16 then att on [unpooled 16 ; 16] of the block width 16; 16->8, att [16; 8] -> 8;
    # 8->8, att [8; 8] -> 8; 8->4, att [8; 4] -> 4; 4->4, att [4; 4] -> 4.
    dec_f = conv_bn(16, 16) + conv_bn(16, 8) + conv_bn(8, 8) + conv_bn(8, 4) + conv_bn(4, 4)
    dec_att = attention(32, 16) + attention(24, 8) + attention(16, 8) + attention(12, 4) + attention(8, 4)
    prediction = (9 * 4 * 4 + 4) + (4 * 3 + 3)
    assert arch_checks.count(head)[0] == enc_att + enc_f + dec_f + dec_att + prediction
    # (batch statistics: at initialisation the inference-mode maps of 26 xavier-initialised layers are ~1e-8)
    normal = mtan.mtan_head(3, "l2_normalize", **SMALL)
    maps = backbone(rng.normal(size=(2, 32, 32, 3)).astype("float32"), training=True)
    np.testing.assert_allclose(
        np.linalg.norm(keras.ops.convert_to_numpy(normal(maps, training=True)), axis=-1), 1.0, rtol=1e-4
    )


def test_default_widths_hand_count():
    # The official widths: per task, the f layers alone are 10,220,160 trainable parameters (module doc).
    backbone, head = mtan.MTANBackbone(), mtan.MTANHead(13)
    shapes = backbone.compute_output_shape((None, 32, 32, 3))
    head.build(shapes)
    f = (64, 128, 256, 512, 512)
    enc_f = sum(conv_bn(f[j], f[min(j + 1, 4)]) for j in range(5))
    dec_f = conv_bn(512, 512) + conv_bn(512, 256) + conv_bn(256, 128) + conv_bn(128, 64) + conv_bn(64, 64)
    assert enc_f + dec_f == 10_220_160
    enc_att = attention(64, 64) + sum(attention(2 * f[j], f[j]) for j in range(1, 5))
    # official decoder_att: [f_{j+1} + f_j, f_j, f_j] and [2 f_0, f_0, f_0].
    dec_att = attention(1024, 512) + attention(512 + 256, 256) + attention(256 + 128, 128) + attention(
        128 + 64, 64) + attention(128, 64)
    assert arch_checks.count(head)[0] == enc_att + enc_f + dec_att + dec_f + (9 * 64 * 64 + 64) + (64 * 13 + 13)


@tensorflow_only
def test_attention_is_the_papers_rule(rng):
    # a^_1 = g_1(u_1) (.) p_1 with g a sigmoid mask: feed hand-made maps through a 1-block head.
    head = mtan.MTANHead(2, filters=(4,), convs_per_block=(1,))
    u = rng.normal(size=(1, 4, 4, 4)).astype("float32")
    p = rng.normal(size=(1, 4, 4, 4)).astype("float32")
    up = rng.normal(size=(1, 4, 4, 4)).astype("float32")
    d = rng.normal(size=(1, 4, 4, 4)).astype("float32")
    maps = {"encoder_first": (u,), "encoder_last": (p,), "decoder_unpooled": (up,), "decoder_last": (d,)}
    out = head(maps, training=False)
    mask = head.encoder_attention[0](u, training=False)
    x = tf.nn.max_pool2d(head.encoder_convs[0](mask * p, training=False), 2, 2, "VALID")
    x = tf.compat.v1.image.resize_bilinear(x, [4, 4], align_corners=True)  # PyTorch align_corners=True
    x = head.decoder_convs[0](x, training=False)
    x = head.decoder_attention[0](tf.concat([up, x], -1), training=False) * d
    np.testing.assert_allclose(out.numpy(), head.prediction(head.prediction_conv(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert 0.0 < float(tf.reduce_min(mask)) and float(tf.reduce_max(mask)) < 1.0


def test_round_trip(rng):
    backbone = mtan.MTANBackbone(seed=1, **SMALL)
    x = rng.normal(size=(1, 32, 32, 3)).astype("float32")
    arch_checks.check_round_trip(backbone, x)
    head = mtan.MTANHead(3, "l2_normalize", seed=2, initializer="torch", **SMALL)
    maps = backbone(x, training=False)
    expected = keras.ops.convert_to_numpy(head(maps, training=False))
    clone = check_serialization(head)
    clone(maps, training=False)
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(maps, training=False)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="MTANBackbone"):
        mtan.MTANHead(2).build((None, 8, 8, 4))
    with pytest.raises(ValueError, match="multiples of 32"):
        mtan.MTANBackbone(**SMALL).build((None, 30, 32, 3))


@pytest.mark.parametrize("method", ["mgda_ub", "pcgrad"])
@tensorflow_only
def test_fit_epoch(rng, method):
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = {"segmentation": rng.integers(0, 3, size=(4, 32, 32)).astype("int32"),
         "depth": rng.normal(size=(4, 32, 32, 1)).astype("float32")}
    heads = {"segmentation": mtan.mtan_head(3, name="segmentation", **SMALL), "depth": mtan.mtan_head(1, name="depth", **SMALL)}
    model = mtl_tf.MultiTaskModel(
        encoder=mtan.mtan_backbone(**SMALL), heads=heads,
        losses={"segmentation": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "depth": "mae"},
        balancer=method,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    before = [v.numpy().copy() for v in model.encoder.trainable_variables] if model.built else None
    logs = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    assert all(np.isfinite(logs[f"{t}_loss"][-1]) for t in heads)
    if method == "mgda_ub":  # the representation (the backbone's maps) is shared: alpha on the simplex
        assert abs(logs["segmentation_weight"][-1] + logs["depth_weight"][-1] - 1) < 1e-5
    assert before is None or any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.encoder.trainable_variables))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: mtan.MTANHead(0), r"^MTANHead: num_outputs must be an integer >= 1; got 0$"),
        (lambda: mtan.MTANHead(float("nan")), r"^MTANHead: num_outputs must be an integer >= 1; got nan$"),
        (lambda: mtan.MTANBackbone(filters=(8, -8), convs_per_block=(1, 1)),
         r"^MTANBackbone: filters must be a non-empty list of integers >= 1; got \[8, -8\]$"),
        (lambda: mtan.MTANBackbone(filters=(8,), convs_per_block=(0,)),
         r"^MTANBackbone: convs_per_block must be a non-empty list of integers >= 1; got \[0\]$"),
        (lambda: mtan.MTANHead(3, filters=(8, 8), convs_per_block=(1,)),
         r"^MTANHead: filters and convs_per_block must be equally long"),
        (lambda: mtan.MTANBackbone(seed="1"), r"^MTANBackbone: seed must be an integer or None; got '1'$"),
    ],
)
def test_bad_numeric_options_are_refused_naming_the_option(make, message):
    with pytest.raises(ValueError, match=message):
        make()
