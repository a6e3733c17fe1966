"""PyTorch's default initialisation (mtl_tf.nets.initializers) and the nets' `initializer` option.

The bounds are written out by hand from PyTorch's rule, bound = 1 / sqrt(fan_in)
with fan_in = in_features (dense) or in_channels * kh * kw (convolution), for
fixed shapes; a U(-b, b) sample has standard deviation b / sqrt(3).
"""

import math

import keras
import numpy as np
import pytest

from mtl_tf.nets import initializers, lenet


def _values(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _assert_uniform(values, bound):
    """Inside [-bound, bound], spread over it, std near bound / sqrt(3), centred, flat histogram."""
    values = values.ravel()
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert np.abs(values).max() > 0.9 * bound
    n = values.size
    # Standard errors of a U(-b, b) sample: std of the std ~ b / sqrt(3) * sqrt(0.2 / n),
    # std of the mean b / sqrt(3 n); 5 of them each.
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=5 * math.sqrt(0.2 / n))
    assert abs(values.mean()) < 5 * bound / math.sqrt(3 * n)
    counts, _ = np.histogram(values, bins=4, range=(-bound, bound))
    assert np.all(np.abs(counts - n / 4) < 5 * math.sqrt(n * 3 / 16))


def test_dense_kernel_and_bias_bounds():
    layer = keras.layers.Dense(300)
    initializers.set_layer_initializers(layer, (None, 64), "torch", seed=1)
    layer.build((None, 64))
    bound = 1 / 8.0  # 1 / sqrt(64)
    _assert_uniform(_values(layer.kernel), bound)  # 19,200 draws
    bias = _values(layer.bias)
    assert np.abs(bias).max() <= bound and np.count_nonzero(bias) == 300
    assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.25)


def test_conv2d_kernel_and_bias_bounds():
    # Conv2D(20, 5) on 10 input channels: fan_in = 10 * 5 * 5 = 250.
    layer = keras.layers.Conv2D(20, 5)
    initializers.set_layer_initializers(layer, (None, 12, 12, 10), "torch", seed=2)
    layer.build((None, 12, 12, 10))
    bound = 1 / math.sqrt(250)
    assert initializers.layer_fan_in(layer, (None, 12, 12, 10)) == 250
    _assert_uniform(_values(layer.kernel), bound)  # 5,000 draws
    bias = _values(layer.bias)
    assert np.abs(bias).max() <= bound and np.count_nonzero(bias) == 20
    # The bias does not use the bound its own shape would give (1 / sqrt(20) is 3.5x wider).
    assert bound < 1 / math.sqrt(20) / 3


def test_fan_in_from_the_kernel_shape():
    assert initializers.kernel_fan_in((64, 300)) == 64
    assert initializers.kernel_fan_in((5, 5, 10, 20)) == 250
    assert initializers.kernel_fan_in((9, 9, 1, 10)) == 81
    kernel = initializers.TorchUniform(seed=3)((9, 9, 1, 10))
    assert np.abs(_values(kernel)).max() <= 1 / 9
    with pytest.raises(ValueError, match="fan_in of its layer's kernel"):
        initializers.TorchUniform(seed=3)((20,))
    bias = initializers.TorchUniform(fan_in=250, seed=3)((2000,))
    _assert_uniform(_values(bias), 1 / math.sqrt(250))
    assert initializers.layer_fan_in(keras.layers.Conv2D(4, (3, 2), data_format="channels_first"), (None, 7, 9, 9)) == 42


def test_seeds_reproduce_and_kernel_and_bias_differ():
    a = initializers.TorchUniform(fan_in=16, seed=5)((16,))
    b = initializers.TorchUniform(fan_in=16, seed=5)((16,))
    np.testing.assert_array_equal(_values(a), _values(b))
    c = initializers.TorchUniform(fan_in=16, seed=6)((16,))
    assert not np.allclose(_values(a), _values(c))
    layer = keras.layers.Dense(16)
    initializers.set_layer_initializers(layer, (None, 16), "torch", seed=5)
    layer.build((None, 16))
    # Stateless draws with one seed share their leading values; the bias seed is derived.
    assert not np.allclose(_values(layer.kernel)[0], _values(layer.bias))
    keras.utils.set_random_seed(11)
    first = _values(initializers.TorchUniform(fan_in=4)((8,)))
    keras.utils.set_random_seed(11)
    np.testing.assert_array_equal(_values(initializers.TorchUniform(fan_in=4)((8,))), first)


def test_keras_choice_leaves_glorot_and_zeros():
    layer = keras.layers.Dense(300)
    initializers.set_layer_initializers(layer, (None, 64), "keras")
    assert isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform)
    layer.build((None, 64))
    limit = math.sqrt(6 / (64 + 300))
    kernel = _values(layer.kernel)
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    assert np.all(_values(layer.bias) == 0)


def test_choices_and_misuse_are_errors():
    with pytest.raises(ValueError, match=r"initializer='xavier' is not valid; expected one of \['keras', 'torch'\]"):
        initializers.set_layer_initializers(keras.layers.Dense(2), (None, 3), "xavier")
    built = keras.layers.Dense(2)
    built.build((None, 3))
    with pytest.raises(ValueError, match="already built"):
        initializers.set_layer_initializers(built, (None, 3), "torch")
    with pytest.raises(TypeError, match="not a Dense or convolution"):
        initializers.layer_fan_in(keras.layers.ReLU(), (None, 3))
    with pytest.raises(ValueError, match="positive"):
        initializers.TorchUniform(fan_in=0)
    with pytest.raises(ValueError, match="initializer='glorot'"):
        lenet.pareto_lenet_encoder(initializer="glorot")


def test_initializer_serialises():
    init = initializers.TorchUniform(fan_in=250, seed=4)
    restored = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert type(restored) is initializers.TorchUniform
    assert restored.get_config() == {"fan_in": 250, "seed": 4}
    np.testing.assert_array_equal(_values(restored((7,))), _values(init((7,))))


# -- the LeNets ---------------------------------------------------------------------------------

# (layer path, hand-computed fan_in) of each net with the papers' shapes.
LENET_FAN_INS = {
    "pareto_encoder": [("conv1", 1 * 9 * 9), ("conv2", 10 * 5 * 5), ("fc", 5 * 5 * 20)],
    "multi_encoder": [("conv1", 1 * 5 * 5), ("conv2", 10 * 5 * 5), ("fc", 4 * 4 * 20)],
    "multi_head": [("fc1", 50), ("fc2", 50)],
    "pareto_head": [("fc", 50)],
}


def _lenet(kind, **options):
    if kind == "pareto_encoder":
        return lenet.pareto_lenet_encoder(**options), (None, 36, 36, 1)
    if kind == "multi_encoder":
        return lenet.multi_lenet_encoder(**options), (None, 28, 28, 1)
    if kind == "multi_head":
        return lenet.multi_lenet_head(10, **options), (None, 50)
    return lenet.pareto_lenet_head(10, **options), (None, 50)


@pytest.mark.parametrize("kind", LENET_FAN_INS)
def test_lenet_torch_initialisation(kind):
    net, shape = _lenet(kind, initializer="torch")
    net.build(shape)
    for name, fan_in in LENET_FAN_INS[kind]:
        layer = getattr(net, name)
        bound = 1 / math.sqrt(fan_in)
        kernel, bias = _values(layer.kernel), _values(layer.bias)
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound, name
        assert np.abs(bias).max() <= bound and np.count_nonzero(bias) == bias.size, name
        if kernel.size >= 1000:
            assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1), name


@pytest.mark.parametrize("kind", LENET_FAN_INS)
def test_lenet_keras_initialisation_is_unchanged(kind):
    net, shape = _lenet(kind)
    assert net.initializer == "keras"
    net.build(shape)
    for name, _ in LENET_FAN_INS[kind]:
        layer = getattr(net, name)
        fan_in, fan_out = int(np.prod(layer.kernel.shape[:-1])), int(layer.kernel.shape[-1])
        receptive = int(np.prod(layer.kernel.shape[:-2]))
        limit = math.sqrt(6 / (fan_in + fan_out * receptive))  # glorot-uniform, Keras' fans
        assert np.abs(_values(layer.kernel)).max() <= limit * (1 + 1e-6), name
        assert np.all(_values(layer.bias) == 0), name


@pytest.mark.parametrize("kind", LENET_FAN_INS)
def test_lenet_option_survives_serialisation(kind, tmp_path, rng):
    net, shape = _lenet(kind, initializer="torch")
    net.build(shape)
    assert net.get_config()["initializer"] == "torch"
    clone = type(net).from_config(net.get_config())
    assert clone.initializer == "torch" and clone.get_config() == net.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert type(restored) is type(net) and restored.initializer == "torch"
    # A whole model in a .keras file keeps the option and the weights.
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, net(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].initializer == "torch"
    x = rng.normal(size=(2,) + shape[1:]).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


# -- standalone heads and the ResNet-18 -------------------------------------------------------------


def test_torch_dense_reads_its_fan_in_at_build(rng):
    head = initializers.TorchDense(2, seed=7, name="head")
    head.build((None, 96))
    bound = 1 / math.sqrt(96)
    assert np.abs(_values(head.kernel)).max() <= bound
    bias = _values(head.bias)
    assert np.abs(bias).max() <= bound and np.count_nonzero(bias) == 2
    config = head.get_config()
    assert config["seed"] == 7 and "kernel_initializer" not in config
    clone = initializers.TorchDense.from_config(config)
    clone.build((None, 96))
    np.testing.assert_array_equal(_values(clone.kernel), _values(head.kernel))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(restored) is initializers.TorchDense
    with pytest.raises(TypeError, match="sets its own initializers"):
        initializers.TorchDense(2, bias_initializer="zeros")


def test_resnet_choices():
    from mtl_tf.nets import resnet

    torch_net = resnet.resnet18_encoder(width=2, seed=5)  # "torch" is this net's default
    keras_net = resnet.resnet18_encoder(width=2, seed=5, initializer="keras")
    for net in (torch_net, keras_net):
        net.build((None, 64, 64, 3))
    # Stage 2's first conv: 3x3 on 2 channels -> fan_in 18; glorot: fan_in 18, fan_out 36.
    torch_kernel = _values(torch_net.stages[2].conv1.kernel)
    keras_kernel = _values(keras_net.stages[2].conv1.kernel)
    assert torch_kernel.shape == (3, 3, 2, 4)
    assert np.abs(torch_kernel).max() <= 1 / math.sqrt(18) and np.abs(torch_kernel).max() > 0.8 / math.sqrt(18)
    assert np.abs(keras_kernel).max() <= math.sqrt(6 / (18 + 36)) and np.abs(keras_kernel).max() > 1 / math.sqrt(18)
    assert keras_net.get_config()["initializer"] == "keras"
    assert resnet.ResNetEncoder.from_config(keras_net.get_config()).stages[0].initializer == "keras"
    head = resnet.attribute_head(2, seed=1)
    assert isinstance(head, initializers.TorchDense)
    plain = resnet.attribute_head(2, seed=1, initializer="keras")
    plain.build((None, 2048))
    assert type(plain) is keras.layers.Dense and np.all(_values(plain.bias) == 0)
    with pytest.raises(ValueError, match="initializer='pytorch'"):
        resnet.resnet18_encoder(initializer="pytorch")


# -- the Cityscapes nets ------------------------------------------------------------------------------


def test_pspnet_choices():
    from mtl_tf.nets import pspnet

    tiny = {"blocks": (1, 1, 1, 1), "width": 4}
    torch_net = pspnet.DilatedResNet50(initializer="torch", **tiny)
    keras_net = pspnet.DilatedResNet50(**tiny)
    # conv1: 7x7 on RGB -> fan_in 147; conv2_block1_2_conv: 3x3 on 4 channels -> 36.
    for name, fan_in in (("conv1_conv", 147), ("conv2_block1_2_conv", 36)):
        layer = torch_net.trunk.get_layer(name)
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(_values(layer.kernel)).max() <= bound and np.abs(_values(layer.kernel)).max() > 0.8 * bound
        assert np.abs(_values(layer.bias)).max() <= bound and np.count_nonzero(_values(layer.bias)) == layer.filters
        assert np.all(_values(keras_net.trunk.get_layer(name).bias) == 0)
    bn = torch_net.trunk.get_layer("conv1_bn")
    assert np.all(_values(bn.gamma) == 1) and np.all(_values(bn.beta) == 0)
    assert pspnet.DilatedResNet50.from_config(torch_net.get_config()).initializer == "torch"

    decoder = pspnet.PyramidPoolingDecoder(19, channels=8, seed=3, initializer="torch")
    decoder.build((None, 5, 7, 16))
    # Branch conv 1x1 on 16 channels: fan_in 16; fusion 3x3 on 16 + 4 * 8 = 48: 432; classifier 1x1 on 8: 8.
    for layer, fan_in in ((decoder.branch_convs[0], 16), (decoder.fuse_conv, 432), (decoder.classifier, 8)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(_values(layer.kernel)).max() <= bound and np.abs(_values(layer.kernel)).max() > 0.8 * bound
    classifier_bias = _values(decoder.classifier.bias)
    assert np.abs(classifier_bias).max() <= 1 / math.sqrt(8) and np.count_nonzero(classifier_bias) == 19
    assert np.all(_values(decoder.fuse_norm.gamma) == 1) and np.all(_values(decoder.fuse_norm.beta) == 0)
    again = pspnet.PyramidPoolingDecoder.from_config(decoder.get_config())
    again.build((None, 5, 7, 16))
    assert again.initializer == "torch"
    np.testing.assert_array_equal(_values(again.fuse_conv.kernel), _values(decoder.fuse_conv.kernel))  # seeded
    plain = pspnet.PyramidPoolingDecoder(19, channels=8)
    plain.build((None, 5, 7, 16))
    assert np.all(_values(plain.classifier.bias) == 0)


def test_segnet_choices():
    from mtl_tf.nets import segnet

    kw = {"filters": (4, 8), "convs_per_block": (1, 1), "seed": 2}
    shape = (None, 32, 32, 3)
    nets = {choice: segnet.SegNetEncoder(initializer=choice, **kw) for choice in segnet.INITIALIZERS}
    for net in nets.values():
        net.build(shape)
    assert nets["mtan"].initializer == segnet.SegNetEncoder(**kw).initializer == "mtan"  # the default
    # The second conv: 3x3 on 4 channels -> fan_in 36 (PyTorch); glorot fans 36 and 72 (Keras, MTAN).
    conv = {choice: net.convs[1].conv for choice, net in nets.items()}
    torch_kernel = _values(conv["torch"].kernel)
    assert np.abs(torch_kernel).max() <= 1 / 6 and np.abs(torch_kernel).max() > 0.8 / 6
    assert np.abs(_values(conv["torch"].bias)).max() <= 1 / 6 and np.count_nonzero(_values(conv["torch"].bias)) == 8
    assert np.abs(_values(conv["keras"].kernel)).max() <= math.sqrt(6 / (36 + 72))
    # xavier_normal_: N(0, 2 / (fan_in + fan_out)), not truncated.
    assert _values(conv["mtan"].kernel).std() == pytest.approx(math.sqrt(2 / (36 + 72)), rel=0.25)
    for choice in ("mtan", "keras"):
        assert np.all(_values(conv[choice].bias) == 0)
    decoder = segnet.SegNetDecoder(3, initializer="torch", **kw)
    decoder.build(nets["torch"].compute_output_shape(shape))
    # The 1x1 prediction conv on the 4-channel prediction_conv output: fan_in 4.
    assert np.abs(_values(decoder.prediction.bias)).max() <= 0.5 and np.count_nonzero(_values(decoder.prediction.bias)) == 3
    assert segnet.SegNetDecoder.from_config(decoder.get_config()).initializer == "torch"
    with pytest.raises(ValueError, match=r"expected one of \['mtan', 'torch', 'keras'\]"):
        segnet.SegNetEncoder(initializer="xavier")
