"""Every net layer of `mtl_tf.nets`, every balancer and every loss through the one shared serialisation check."""

import keras
import numpy as np
import pytest

from mtl_tf import losses
from mtl_tf.nets import initializers, lenet, pspnet, resnet, segnet
from tests.keras_checks import check_serialization

RNG = np.random.default_rng(0)

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
if ON_TENSORFLOW:
    from mtl_tf import balancers

LAYERS = [
    (lambda: lenet.MultiLeNetEncoder(dropout="official", initializer="torch", seed=1), (2, 28, 28, 1)),
    (lambda: lenet.MultiLeNetHead(num_classes=4, initializer="torch", seed=1), (2, 50)),
    (lambda: lenet.ParetoLeNetEncoder(initializer="torch"), (2, 36, 36, 1)),
    (lambda: lenet.ParetoLeNetHead(num_classes=3, initializer="torch"), (2, 50)),
    (lambda: resnet.ResNetEncoder(initializer="keras"), (1, 32, 32, 3)),
    (lambda: initializers.TorchDense(3, seed=3), (2, 5)),
    (lambda: pspnet.PyramidPoolingDecoder(3, channels=8), (1, 12, 12, 16)),
    (lambda: segnet.ConvBatchNormReLU(4), (1, 8, 8, 3)),
]


@pytest.mark.parametrize("make,shape", LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_net_layers(make, shape, tmp_path):
    check_serialization(make(), RNG.normal(size=shape), tmp_path=tmp_path, atol=1e-5)


@pytest.mark.skipif(not ON_TENSORFLOW, reason="mtl_tf.balancers is checked under JAX by its own suite (issue 24)")
@pytest.mark.parametrize("method", balancers.available() if ON_TENSORFLOW else ["any"])
def test_balancers(method):
    options = {"static": {"weights": [0.2, 0.8]}}.get(method, {})
    check_serialization(balancers.get(method, **options))


@pytest.mark.parametrize("loss", [losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1), losses.MaskedL1(),
                                  losses.NormalCosineLoss(invalid_value=None)])
def test_losses(loss):
    check_serialization(loss)


def test_initializer():
    check_serialization(initializers.TorchUniform(fan_in=250, seed=4))
