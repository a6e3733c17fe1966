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

Each is a `keras.layers.Layer` whose `trainable_variables` are its own
parameters; encoders map `[batch, H, W, 1]` images to the shared
representation `Z = [batch, 50]`, heads map `Z` to `[batch, classes]`
logits.  Convolutions use "valid" padding and channels-last images.  All
layers serialise through `get_config` / `from_config` (registered under
package `mtl_tf`).

Initialisation (`initializer`, every net here; both official codes are
PyTorch and keep its defaults): `"keras"` (the default, as before this
option existed) gives Keras' glorot-uniform kernels and zero biases;
`"torch"` gives PyTorch's default, kernels and biases uniform in
`+-1/sqrt(fan_in)` (`mtl_tf.nets.initializers`), which the official
recipes train from.

Dropout of the MultiLeNet (`dropout`): `"keras"` (the default) is Keras'
`SpatialDropout2D` / `Dropout`: a mask per example, kept units scaled by
`1/(1 - rate)`.  `"official"` is what Sener's official code does
(`models/multi_lenet.py`): after conv2 one Bernoulli channel mask `[1, 1,
1, C]` shared by the whole batch, in the head an element mask after the first
dense layer, neither rescaled (:class:`UnscaledDropout`), so at evaluation the
network sees about twice the activations it was trained with.  The official
code draws its masks once per step and reuses them in every pass of that step;
here each layer draws once per call, and reusing them across the passes of a
step is the training step's business.
"""

from __future__ import annotations

import keras

from mtl_tf.nets import initializers as init_lib

__all__ = [
    "DROPOUTS",
    "MultiLeNetEncoder",
    "MultiLeNetHead",
    "ParetoLeNetEncoder",
    "ParetoLeNetHead",
    "UnscaledDropout",
    "multi_lenet_encoder",
    "multi_lenet_head",
    "pareto_lenet_encoder",
    "pareto_lenet_head",
]


DROPOUTS = ("keras", "official")


@keras.saving.register_keras_serializable(package="mtl_tf")
class UnscaledDropout(keras.layers.Layer):
    """Dropout whose kept units are *not* scaled by `1/(1 - rate)`, with a mask shared along chosen axes.

    In training the input is multiplied by a 0/1 mask, each entry kept with
    probability `1 - rate`; otherwise (`training` false or None) it is the
    identity.  Every call draws one mask from the layer's
    `keras.random.SeedGenerator` (layer state, so `stateless_call` returns
    the advanced state, which a caller may discard).

    Args:
      rate: probability of dropping an entry, in [0, 1].
      noise_shape: the mask's shape, one entry per input axis: `None` takes
        the input's size on that axis, `1` shares the mask along it.
        `None` (default): an independent mask per entry.  Sener's channel
        mask is `(1, 1, 1, None)`: one `[1, 1, 1, C]` mask for the whole
        batch and every spatial position.
      seed: seed of the layer's `SeedGenerator` (None: unseeded).

    Raises:
      ValueError: `rate` outside [0, 1], a `noise_shape` entry other than
        None or 1, or one whose length differs from the input's rank.

    Source: Sener & Koltun's official `models/multi_lenet.py` (the masks are
    `torch.bernoulli` of 0.5 and multiply the activations in training only).
    """

    def __init__(self, rate=0.5, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1]; got {rate}")
        if noise_shape is not None:
            noise_shape = tuple(None if d is None else int(d) for d in noise_shape)
            if any(d not in (None, 1) for d in noise_shape):
                raise ValueError(f"noise_shape entries must be None (input size) or 1 (shared); got {noise_shape}")
        self.noise_shape = noise_shape
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def _mask_shape(self, inputs):
        shape = keras.ops.shape(inputs)
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"{self.name}: noise_shape {self.noise_shape} has {len(self.noise_shape)} axes, "
                f"the input has {len(shape)} (shape {inputs.shape})"
            )
        return tuple(size if d is None else 1 for size, d in zip(shape, self.noise_shape))

    def call(self, inputs, training=None):
        if not training:
            return inputs
        draws = keras.random.uniform(self._mask_shape(inputs), seed=self.seed_generator)
        keep = keras.ops.cast(keras.ops.greater_equal(draws, self.rate), inputs.dtype)
        return inputs * keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            rate=self.rate,
            noise_shape=None if self.noise_shape is None else list(self.noise_shape),
            seed=self.seed,
        )
        return config


_DROPOUT_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout2D, UnscaledDropout)
_WEIGHTED_LAYERS = (keras.layers.Dense, keras.layers.Conv2D)


class _Stack(keras.layers.Layer):
    """Applies `self._stack` (a list of layers) in order and builds it eagerly.

    Dense and convolution layers get the initializers of `self.initializer`
    just before they are built, when their kernel's fan-in is known.
    """

    _stack: list
    initializer = "keras"

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack:
            if not layer.built:
                if isinstance(layer, _WEIGHTED_LAYERS):
                    init_lib.set_layer_initializers(layer, shape, self.initializer)
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._stack:
            if isinstance(layer, _DROPOUT_LAYERS):
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
    """Sener & Koltun's MultiLeNet trunk: `[B, 28, 28, 1] -> [B, units]`.

    Args:
      filters: channels of the two convolutions.
      kernel_size: side of both convolution kernels.
      units: size of the shared representation.
      dropout_rate: channel (spatial) dropout after the second convolution.
      seed: seed of the dropout masks (`None`: unseeded).
      initializer: `"keras"` (default) or `"torch"`; see the module doc.
      dropout: `"keras"` (default: `SpatialDropout2D`, a mask per
        example, rescaled) or `"official"` (one unscaled channel mask for
        the whole batch); see the module doc.

    Raises:
      ValueError: an unknown `initializer` or `dropout`.
    """

    def __init__(
        self, filters=(10, 20), kernel_size=5, units=50, dropout_rate=0.5, seed=None,
        initializer="keras", dropout="keras", **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.units = int(units)
        self.dropout_rate = float(dropout_rate)
        self.seed = seed
        self.initializer = init_lib.check_initializer(initializer)
        self.dropout = init_lib.check_initializer(dropout, DROPOUTS, "dropout")
        f1, f2 = self.filters
        self.conv1 = keras.layers.Conv2D(f1, self.kernel_size, name="conv1", dtype=self.dtype_policy)
        self.pool1 = keras.layers.MaxPooling2D(2, name="pool1", dtype=self.dtype_policy)
        self.relu1 = keras.layers.ReLU(name="relu1", dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(f2, self.kernel_size, name="conv2", dtype=self.dtype_policy)
        if self.dropout == "official":
            self.drop2 = UnscaledDropout(
                self.dropout_rate, noise_shape=(1, 1, 1, None), seed=seed,
                name="channel_dropout", dtype=self.dtype_policy,
            )
        else:
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
            initializer=self.initializer,
            dropout=self.dropout,
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class MultiLeNetHead(_Stack):
    """Sener & Koltun's MultiLeNet task head: `[B, features] -> [B, num_classes]` logits.

    Args:
      num_classes: number of logits.
      units: width of the hidden layer.
      dropout_rate: dropout after the hidden layer.
      seed: seed of the dropout mask (`None`: unseeded).
      initializer: `"keras"` (default) or `"torch"`; see the module doc.
      dropout: `"keras"` (default: `Dropout`, rescaled) or `"official"`
        (an unscaled element mask); see the module doc.

    Raises:
      ValueError: an unknown `initializer` or `dropout`.
    """

    def __init__(
        self, num_classes=10, units=50, dropout_rate=0.5, seed=None, initializer="keras", dropout="keras",
        **kwargs
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.units = int(units)
        self.dropout_rate = float(dropout_rate)
        self.seed = seed
        self.initializer = init_lib.check_initializer(initializer)
        self.dropout = init_lib.check_initializer(dropout, DROPOUTS, "dropout")
        self.fc1 = keras.layers.Dense(self.units, name="fc1", dtype=self.dtype_policy)
        self.relu = keras.layers.ReLU(name="relu", dtype=self.dtype_policy)
        if self.dropout == "official":
            self.drop = UnscaledDropout(self.dropout_rate, seed=seed, name="dropout", dtype=self.dtype_policy)
        else:
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
            initializer=self.initializer,
            dropout=self.dropout,
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class ParetoLeNetEncoder(_Stack):
    """Lin et al.'s Pareto-MTL LeNet trunk: `[B, 36, 36, 1] -> [B, units]`.

    Args:
      filters: channels of the two convolutions.
      kernel_sizes: kernel sides of the two convolutions.
      units: size of the shared representation.
      initializer: `"keras"` (default) or `"torch"` (the official
        recipe); see the module doc.

    Raises:
      ValueError: an unknown `initializer`.
    """

    def __init__(self, filters=(10, 20), kernel_sizes=(9, 5), units=50, initializer="keras", **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.units = int(units)
        self.initializer = init_lib.check_initializer(initializer)
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
            filters=list(self.filters), kernel_sizes=list(self.kernel_sizes), units=self.units,
            initializer=self.initializer,
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class ParetoLeNetHead(_Stack):
    """Lin et al.'s Pareto-MTL task head: one dense layer of `num_classes` logits.

    Args:
      num_classes: number of logits.
      initializer: `"keras"` (default) or `"torch"` (the official
        recipe); see the module doc.

    Raises:
      ValueError: an unknown `initializer`.
    """

    def __init__(self, num_classes=10, initializer="keras", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.initializer = init_lib.check_initializer(initializer)
        self.fc = keras.layers.Dense(self.num_classes, name="logits", dtype=self.dtype_policy)
        self._stack = [self.fc]

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, initializer=self.initializer)
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
