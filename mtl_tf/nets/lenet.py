"""LeNet trunks and heads of the multi-digit benchmarks.

* Sener & Koltun (2018) MultiLeNet, 28x28x1 input:

  - encoder: conv(10, 5x5) -> maxpool 2 -> relu -> conv(20, 5x5) -> channel
    dropout 0.5 -> maxpool 2 -> relu -> flatten (4*4*20 = 320) -> dense(50)
    -> relu; 260 + 5,020 + 16,050 = 21,330 parameters;
  - head: dense(50) -> relu -> dropout 0.5 -> dense(10) logits;
    2,550 + 510 = 3,060 parameters.

* Lin et al. (2019) Pareto-MTL LeNet, 36x36x1 input:

  - encoder: conv(10, 9x9) -> relu -> maxpool 2 -> conv(20, 5x5) -> relu ->
    maxpool 2 -> flatten (5*5*20 = 500) -> dense(50) -> relu;
    820 + 5,020 + 25,050 = 30,890 parameters;
  - head: dense(10) logits; 510 parameters.

Each is a ``keras.layers.Layer`` whose ``trainable_variables`` are its own
parameters; encoders map ``[batch, H, W, 1]`` images to the shared
representation ``Z = [batch, 50]``, heads map ``Z`` to ``[batch, classes]``
logits.  Convolutions use "valid" padding and channels-last images.  All
layers serialise through ``get_config`` / ``from_config`` (registered under
package ``mtl_tf``).
"""

from __future__ import annotations

import keras

__all__ = [
    "MultiLeNetEncoder",
    "MultiLeNetHead",
    "ParetoLeNetEncoder",
    "ParetoLeNetHead",
    "multi_lenet_encoder",
    "multi_lenet_head",
    "pareto_lenet_encoder",
    "pareto_lenet_head",
]


class _Stack(keras.layers.Layer):
    """Applies ``self._stack`` (a list of layers) in order and builds it eagerly."""

    _stack: list

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._stack:
            if isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D)):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack:
            shape = tuple(layer.compute_output_shape(shape))
        return shape


@keras.saving.register_keras_serializable(package="mtl_tf")
class MultiLeNetEncoder(_Stack):
    """Sener & Koltun's MultiLeNet trunk: ``[B, 28, 28, 1] -> [B, units]``.

    Args:
      filters: channels of the two convolutions.
      kernel_size: side of both convolution kernels.
      units: size of the shared representation.
      dropout_rate: channel (spatial) dropout after the second convolution.
      seed: seed of the dropout masks (``None``: unseeded).
    """

    def __init__(
        self, filters=(10, 20), kernel_size=5, units=50, dropout_rate=0.5, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.units = int(units)
        self.dropout_rate = float(dropout_rate)
        self.seed = seed
        f1, f2 = self.filters
        self.conv1 = keras.layers.Conv2D(f1, self.kernel_size, name="conv1", dtype=self.dtype_policy)
        self.pool1 = keras.layers.MaxPooling2D(2, name="pool1", dtype=self.dtype_policy)
        self.relu1 = keras.layers.ReLU(name="relu1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(f2, self.kernel_size, name="conv2", dtype=self.dtype_policy)
        self.drop2 = keras.layers.SpatialDropout2D(
            self.dropout_rate, seed=seed, name="channel_dropout", dtype=self.dtype_policy
        )
        self.pool2 = keras.layers.MaxPooling2D(2, name="pool2", dtype=self.dtype_policy)
        self.relu2 = keras.layers.ReLU(name="relu2", dtype=self.dtype_policy)
        self.flatten = keras.layers.Flatten(name="flatten", dtype=self.dtype_policy)
        self.fc = keras.layers.Dense(self.units, name="fc", dtype=self.dtype_policy)
        self.relu3 = keras.layers.ReLU(name="relu3", dtype=self.dtype_policy)
        self._stack = [
            self.conv1, self.pool1, self.relu1, self.conv2, self.drop2, self.pool2,
            self.relu2, self.flatten, self.fc, self.relu3,
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            kernel_size=self.kernel_size,
            units=self.units,
            dropout_rate=self.dropout_rate,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class MultiLeNetHead(_Stack):
    """Sener & Koltun's MultiLeNet task head: ``[B, features] -> [B, num_classes]`` logits.

    Args:
      num_classes: number of logits.
      units: width of the hidden layer.
      dropout_rate: dropout after the hidden layer.
      seed: seed of the dropout mask (``None``: unseeded).
    """

    def __init__(self, num_classes=10, units=50, dropout_rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.units = int(units)
        self.dropout_rate = float(dropout_rate)
        self.seed = seed
        self.fc1 = keras.layers.Dense(self.units, name="fc1", dtype=self.dtype_policy)
        self.relu = keras.layers.ReLU(name="relu", dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(
            self.dropout_rate, seed=seed, name="dropout", dtype=self.dtype_policy
        )
        self.fc2 = keras.layers.Dense(self.num_classes, name="logits", dtype=self.dtype_policy)
        self._stack = [self.fc1, self.relu, self.drop, self.fc2]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            units=self.units,
            dropout_rate=self.dropout_rate,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class ParetoLeNetEncoder(_Stack):
    """Lin et al.'s Pareto-MTL LeNet trunk: ``[B, 36, 36, 1] -> [B, units]``.

    Args:
      filters: channels of the two convolutions.
      kernel_sizes: kernel sides of the two convolutions.
      units: size of the shared representation.
    """

    def __init__(self, filters=(10, 20), kernel_sizes=(9, 5), units=50, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.units = int(units)
        (f1, f2), (k1, k2) = self.filters, self.kernel_sizes
        self.conv1 = keras.layers.Conv2D(f1, k1, name="conv1", dtype=self.dtype_policy)
        self.relu1 = keras.layers.ReLU(name="relu1", dtype=self.dtype_policy)
        self.pool1 = keras.layers.MaxPooling2D(2, name="pool1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(f2, k2, name="conv2", dtype=self.dtype_policy)
        self.relu2 = keras.layers.ReLU(name="relu2", dtype=self.dtype_policy)
        self.pool2 = keras.layers.MaxPooling2D(2, name="pool2", dtype=self.dtype_policy)
        self.flatten = keras.layers.Flatten(name="flatten", dtype=self.dtype_policy)
        self.fc = keras.layers.Dense(self.units, name="fc", dtype=self.dtype_policy)
        self.relu3 = keras.layers.ReLU(name="relu3", dtype=self.dtype_policy)
        self._stack = [
            self.conv1, self.relu1, self.pool1, self.conv2, self.relu2, self.pool2,
            self.flatten, self.fc, self.relu3,
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters), kernel_sizes=list(self.kernel_sizes), units=self.units
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class ParetoLeNetHead(_Stack):
    """Lin et al.'s Pareto-MTL task head: one dense layer of ``num_classes`` logits."""

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.fc = keras.layers.Dense(self.num_classes, name="logits", dtype=self.dtype_policy)
        self._stack = [self.fc]

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


def multi_lenet_encoder(*, name="multi_lenet_encoder", **kwargs) -> MultiLeNetEncoder:
    """Sener's MultiLeNet trunk (28x28x1 -> 50); see :class:`MultiLeNetEncoder`."""
    return MultiLeNetEncoder(name=name, **kwargs)


def multi_lenet_head(num_classes=10, *, name=None, **kwargs) -> MultiLeNetHead:
    """Sener's MultiLeNet task head (50 -> num_classes logits)."""
    return MultiLeNetHead(num_classes=num_classes, name=name, **kwargs)


def pareto_lenet_encoder(*, name="pareto_lenet_encoder", **kwargs) -> ParetoLeNetEncoder:
    """Pareto-MTL LeNet trunk (36x36x1 -> 50); see :class:`ParetoLeNetEncoder`."""
    return ParetoLeNetEncoder(name=name, **kwargs)


def pareto_lenet_head(num_classes=10, *, name=None, **kwargs) -> ParetoLeNetHead:
    """Pareto-MTL LeNet task head (50 -> num_classes logits)."""
    return ParetoLeNetHead(num_classes=num_classes, name=name, **kwargs)
