"""ResNet-18 encoder and attribute heads: hand-counted parameters, shapes, geometry, serialisation."""

import keras
import numpy as np
import pytest

from mtl_tf.nets import resnet


def conv_params(c_in, c_out, k):
    return k * k * c_in * c_out  # no bias


def resnet18_hand_count(width=64, in_channels=3):
    """Trainable parameters of the small-image ResNet-18: convolutions + 2 per BN channel."""
    convs, bn_channels = conv_params(in_channels, width, 3), width
    c_in = width
    for stage in range(4):
        c = width * 2**stage
        for block in range(2):
            convs += conv_params(c_in, c, 3) + conv_params(c, c, 3)
            bn_channels += 2 * c
            if c_in != c:  # projection shortcut
                convs += conv_params(c_in, c, 1)
                bn_channels += c
            c_in = c
    return convs, 2 * bn_channels, 2 * bn_channels


def test_hand_count_of_resnet18():
    convs, bn_trainable, bn_moving = resnet18_hand_count()
    # The numbers stated in the module docstring.
    assert convs == 11_159_232 and bn_trainable == 9_600
    assert convs + bn_trainable == 11_168_832 and bn_moving == 9_600


@pytest.fixture(scope="module")
def full_encoder():
    encoder = resnet.resnet18_encoder(seed=0)
    encoder.build((None, 64, 64, 3))
    return encoder


def test_full_resnet18_parameter_count_and_2048_representation(full_encoder, rng):
    convs, bn_trainable, bn_moving = resnet18_hand_count()
    trainable = sum(int(np.prod(v.shape)) for v in full_encoder.trainable_variables)
    moving = sum(int(np.prod(v.shape)) for v in full_encoder.non_trainable_variables)
    assert trainable == convs + bn_trainable == 11_168_832
    assert moving == bn_moving
    assert full_encoder.compute_output_shape((None, 64, 64, 3)) == (None, 2048)
    z = full_encoder(rng.normal(size=(2, 64, 64, 3)).astype("float32"))
    assert tuple(z.shape) == (2, 2048)
    assert np.all(keras.ops.convert_to_numpy(z) >= 0)  # mean of post-ReLU activations
    head = resnet.attribute_head(2)
    assert tuple(head(z).shape) == (2, 2)
    assert head.count_params() == 2048 * 2 + 2


def test_stage_geometry(full_encoder):
    """Stem stride 1, no max-pool, stages at 64/32/16/8, the 2x2 grid of the final pool."""
    expected = {"stage1": (64, 64), "stage2": (128, 32), "stage3": (256, 16), "stage4": (512, 8)}
    shape = full_encoder.stem_conv.compute_output_shape((None, 64, 64, 3))
    assert shape == (None, 64, 64, 64)
    for block in full_encoder.stages:
        shape = block.compute_output_shape(shape)
        channels, size = expected[block.name.split("_")[0]]
        assert shape == (None, size, size, channels)
    assert full_encoder.pool.compute_output_shape(shape) == (None, 2, 2, 512)
    projections = [b.name for b in full_encoder.stages if b.shortcut_conv is not None]
    assert projections == ["stage2_block1", "stage3_block1", "stage4_block1"]
    assert full_encoder.stem_bn.momentum == 0.9 and full_encoder.stem_bn.epsilon == 1e-5


def test_representation_is_the_flattened_2x2_average_of_stage4():
    """The 2048 features are 512 channels x 2 x 2 of a kernel-4 average pool (checked in numpy)."""
    encoder = resnet.resnet18_encoder(width=2, seed=3)  # stage 4 has 16 channels
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    z = keras.ops.convert_to_numpy(encoder(x))
    feature_map = x
    feature_map = encoder.stem_relu(encoder.stem_bn(encoder.stem_conv(feature_map)))
    for block in encoder.stages:
        feature_map = block(feature_map)
    feature_map = keras.ops.convert_to_numpy(feature_map)
    assert feature_map.shape == (2, 8, 8, 16)
    pooled = feature_map.reshape(2, 2, 4, 2, 4, 16).mean(axis=(2, 4))  # [B, 2, 2, C]
    np.testing.assert_allclose(z, pooled.reshape(2, 64), rtol=1e-5, atol=1e-6)


def test_stride2_padding_matches_pytorch():
    """A stride-2 3x3 conv pads one pixel on each side: output (i, j) centres on input (2i, 2j)."""
    block = resnet.BasicBlock(1, strides=2)
    block.build((None, 6, 6, 1))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0  # picks the centre pixel
    block.conv1.kernel.assign(kernel)
    x = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    y = keras.ops.convert_to_numpy(block.conv1(block.pad1(x)))
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


def test_basic_block_by_hand():
    """One block with identity shortcut, BN in inference mode at identity statistics."""
    block = resnet.BasicBlock(2, strides=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    block.build(x.shape)
    assert block.shortcut_conv is None
    k1 = rng.normal(size=(3, 3, 2, 2)).astype("float32")
    k2 = rng.normal(size=(3, 3, 2, 2)).astype("float32")
    block.conv1.kernel.assign(k1)
    block.conv2.kernel.assign(k2)

    def conv_same(inp, k):
        padded = np.pad(inp, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros(inp.shape[:3] + (k.shape[-1],), "float64")
        for i in range(inp.shape[1]):
            for j in range(inp.shape[2]):
                out[:, i, j] = np.einsum("bhwc,hwcd->bd", padded[:, i:i + 3, j:j + 3], k)
        return out

    bn_scale = 1.0 / np.sqrt(1.0 + 1e-5)  # moving mean 0, variance 1
    h = np.maximum(conv_same(x, k1) * bn_scale, 0)
    expected = np.maximum(conv_same(h, k2) * bn_scale + x, 0)
    got = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_width_scales_channels_and_representation(rng):
    encoder = resnet.resnet18_encoder(width=4)
    z = encoder(rng.normal(size=(3, 64, 64, 3)).astype("float32"))
    assert tuple(z.shape) == (3, 4 * 8 * 2 * 2)
    convs, bn, _ = resnet18_hand_count(width=4)
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == convs + bn
    # 32x32 inputs: the kernel-4 pool is global, as in the CIFAR network it comes from.
    assert encoder.compute_output_shape((None, 32, 32, 3)) == (None, 32)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="width"):
        resnet.ResNetEncoder(width=0)
    with pytest.raises(ValueError, match="blocks"):
        resnet.ResNetEncoder(blocks=())
    with pytest.raises(ValueError, match="smaller than the pooling kernel"):
        resnet.resnet18_encoder(width=2).build((None, 16, 16, 3))
    with pytest.raises(ValueError, match=r"\[batch, height, width, channels\]"):
        resnet.resnet18_encoder(width=2).build((None, 64, 3))


def test_seed_makes_initialisation_reproducible():
    a = resnet.resnet18_encoder(width=2, seed=5)
    b = resnet.resnet18_encoder(width=2, seed=5)
    c = resnet.resnet18_encoder(width=2, seed=6)
    for e in (a, b, c):
        e.build((None, 64, 64, 3))
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert not np.array_equal(a.stem_conv.kernel.numpy(), c.stem_conv.kernel.numpy())
    # Distinct seeds per layer: the blocks of one network do not share kernels.
    k1 = a.stages[0].conv1.kernel.numpy()
    k2 = a.stages[1].conv1.kernel.numpy()
    assert not np.array_equal(k1, k2)
    # PyTorch's default bound 1/sqrt(fan_in).
    bound = 1.0 / np.sqrt(3 * 3 * 3)
    kernel = a.stem_conv.kernel.numpy()
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound


def test_get_config_round_trip_and_keras_file(tmp_path, rng):
    encoder = resnet.resnet18_encoder(width=4, pool_size=4, seed=1)
    config = encoder.get_config()
    assert (config["blocks"], config["width"], config["pool_size"], config["seed"]) == ([2, 2, 2, 2], 4, 4, 1)
    clone = resnet.ResNetEncoder.from_config(config)
    assert clone.get_config() == config
    block = resnet.BasicBlock(8, strides=2, seed=3)
    assert resnet.BasicBlock.from_config(block.get_config()).get_config() == block.get_config()

    inputs = keras.Input((64, 64, 3))
    z = encoder(inputs)
    model = keras.Model(inputs, {"Male": resnet.attribute_head(name="Male")(z), "Young": resnet.attribute_head(name="Young")(z)})
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    model(x, training=True)  # moves the BN statistics away from their initial values
    before = model.predict(x, verbose=0)
    path = tmp_path / "resnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded.predict(x, verbose=0)
    for task in before:
        np.testing.assert_allclose(after[task], before[task], rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("resnet18_encoder"), resnet.ResNetEncoder)


def test_projection_is_a_strided_1x1_convolution_and_differentiates(rng):
    """The shortcut of a strided block: 1x1 conv of every 2nd pixel (PyTorch's 1x1 stride-2 conv)."""
    block = resnet.BasicBlock(6, strides=2, seed=0)
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    block.build(x.shape)
    kernel = block.shortcut_conv.kernel.numpy()
    assert kernel.shape == (1, 1, 4, 6)
    projected = keras.ops.convert_to_numpy(block.shortcut_conv(block._subsample(x)))
    np.testing.assert_allclose(projected, np.einsum("bhwc,cd->bhwd", x[:, ::2, ::2], kernel[0, 0]), rtol=1e-5, atol=1e-5)
    # The backward pass through a strided block on an even-sized input (a strided
    # 1x1 Conv2D crashes TensorFlow 2.21's oneDNN kernels here).
    if keras.backend.backend() == "tensorflow":  # GradientTape: the TensorFlow engine's
        import tensorflow as tf

        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(block(inputs, training=True) ** 2)
        grads = tape.gradient(loss, [inputs, *block.trainable_variables])
        assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
