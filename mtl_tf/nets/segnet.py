"""SegNet with a shared encoder and one decoder per task, as Lee & Son ran the MTAN benchmark.

Lee & Son (section 4.2) take SegNet (Badrinarayanan et al., TPAMI 2017) in the
form of the MTAN benchmark (Liu, Johns & Davison, CVPR 2019) and "consider the
encoder as the shared layers and construct the decoders, the task-specific
layers, as the same number with the tasks". That is what this module builds:
`SegNetEncoder` is shared, and every task has a whole `SegNetDecoder`.
(MTAN's own "SegNet split" baseline is different: it shares the encoder *and*
the decoder and splits only the last two prediction convolutions. It is not
built here: it is a `SegNetDecoder` shared by all tasks followed by tiny
heads, which the current `MultiTaskModel` could express with a larger encoder.)

Encoder (VGG-16 with batch norm, 13 convolutions), filters (64, 128, 256, 512,
512) with (2, 2, 3, 3, 3) convolutions per block; every convolution is 3x3
"same" with bias -> batch norm -> ReLU, and every block ends with a 2x2
max-pooling of stride 2 that records where each maximum came from.

Decoder, from the deepest block up: unpool with that block's switches, then as
many conv-BN-ReLU as the encoder block had, all with the next shallower
block's width (the shallowest keeps 64): 512 -> 512 (x3), 256 (x3), 128 (x3),
64 (x2), 64 (x2). Then MTAN's prediction layers: conv 3x3 (64) -> conv 1x1
(num_outputs), with no normalisation or activation between them.
`output_activation` selects the last step: "linear" (segmentation logits, depth) or
"l2_normalize" (surface normals, unit vectors along the channel axis).

Representation. The encoder returns `{"features": [B, H/32, W/32, 512],
"switches": (s_1, ..., s_5)}`: the decoders need the pooling switches, so
they are part of the shared representation. A switch tensor holds, at the
pooled resolution, the position 0..3 (row-major in the 2x2 window) of each
maximum, as floats under `keras.ops.stop_gradient`: the decoders turn them into
one-hot masks through an integer cast, so no task loss has a gradient with
respect to them (`tape.gradient` returns None, which MGDA-UB reads as zero)
and the min-norm problem sees only the features.

Pooling and unpooling are hand-written (`MaxPoolingWithSwitches`,
`MaxUnpoolingWithSwitches`) rather than `tf.nn.max_pool_with_argmax` and a
scatter: they are reshapes, a max and a one-hot product in `keras.ops` (the
same TensorFlow ops as before on TensorFlow, and any other backend's), which XLA compiles,
which are deterministic on ties (the first maximum in row-major order wins, as
in PyTorch), and whose gradient reaches only that maximum. They need even
sizes, so the input's height and width must be multiples of 32 (MTAN's
128x256 and 288x384 are).

Initialisation (`initializer`, one of :data:`INITIALIZERS`): `"mtan"`, the
default, follows MTAN's official code, which re-initialises every convolution
after construction (`nn.init.xavier_normal_` kernels, not truncated; zero
biases); `"torch"` is PyTorch's layer default (kernels and biases uniform in
+-1/sqrt(fan_in), what the same PyTorch layers start from without that
re-initialisation); `"keras"` is Keras' (glorot-uniform kernels, zero
biases). Batch norm starts at scale 1 and offset 0 (as MTAN sets it), with
PyTorch's momentum 0.1 (Keras 0.9) and epsilon 1e-5. `filters` can be scaled
down for tests.
"""

from __future__ import annotations

import keras

from mtl_tf.backend import ops as engine_ops
from mtl_tf.nets import _checks
from mtl_tf.nets import initializers as init_lib

__all__ = [
    "INITIALIZERS",
    "ConvBatchNormReLU",
    "MaxPoolingWithSwitches",
    "MaxUnpoolingWithSwitches",
    "SegNetDecoder",
    "SegNetEncoder",
    "segnet_decoder",
    "segnet_encoder",
]

SEGNET_FILTERS = (64, 128, 256, 512, 512)
SEGNET_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
OUTPUT_ACTIVATIONS = ("linear", "l2_normalize")
INITIALIZERS = ("mtan", "torch", "keras")


def xavier_normal(seed=None):
    """PyTorch's `xavier_normal_`: normal with variance 2 / (fan_in + fan_out), not truncated."""
    return keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal", seed=seed)


def _check_initializer(initializer):
    return init_lib.check_initializer(initializer, INITIALIZERS)


def _conv(filters, kernel_size, initializer, seed, name, padding="same"):
    """A `Conv2D` with bias; "torch" initialisers are set at build (`_build_conv`)."""
    if initializer == "keras":
        kernel_initializer = keras.initializers.GlorotUniform(seed=seed)
    else:
        kernel_initializer = xavier_normal(seed)
    return keras.layers.Conv2D(
        filters, kernel_size, padding=padding, kernel_initializer=kernel_initializer, name=name
    )


def _build_conv(conv, input_shape, initializer, seed):
    if initializer == "torch":
        init_lib.set_layer_initializers(conv, input_shape, "torch", seed)
    conv.build(input_shape)


def _check_structure(filters, convs_per_block, owner="SegNet"):
    filters = _checks.counts(owner, "filters", filters)
    convs_per_block = _checks.counts(owner, "convs_per_block", convs_per_block)
    if len(filters) != len(convs_per_block):
        raise ValueError(
            f"{owner}: filters and convs_per_block must be equally long lists of positive integers; got "
            f"filters={filters}, convs_per_block={convs_per_block}"
        )
    return filters, convs_per_block


@keras.saving.register_keras_serializable(package="mtl_tf")
class ConvBatchNormReLU(keras.layers.Layer):
    """3x3 "same" convolution (with bias) -> batch norm -> ReLU, MTAN's `conv_layer`.

    Args:
      filters: output channels.
      seed: seed of the convolution's initialisers (None: unseeded).
      initializer: one of :data:`INITIALIZERS` (default `"mtan"`); see the module doc.

    Raises:
      ValueError: an unknown `initializer`.
    """

    def __init__(self, filters, seed=None, initializer="mtan", **kwargs):
        super().__init__(**kwargs)
        self.filters = _checks.count("ConvBatchNormReLU", "filters", filters)
        self.seed = _checks.seed("ConvBatchNormReLU", "seed", seed)
        self.initializer = _check_initializer(initializer)
        self.conv = _conv(self.filters, 3, self.initializer, seed, "conv")
        self.norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")

    def build(self, input_shape):
        _build_conv(self.conv, input_shape, self.initializer, self.seed)
        self.norm.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        return keras.ops.relu(self.norm(self.conv(inputs), training=training))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "seed": self.seed, "initializer": self.initializer}


def _windows(x):
    """[B, H, W, C] -> [B, H/2, W/2, C, 4], the 2x2 windows in row-major order."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if (height is not None and height % 2) or (width is not None and width % 2):
        raise ValueError(
            f"2x2 max-pooling with switches needs an even height and width; got {height}x{width} "
            "(SegNet inputs must have a height and width divisible by 32)"
        )
    shape = keras.ops.shape(x)
    h = shape[1] // 2 if height is None else height // 2
    w = shape[2] // 2 if width is None else width // 2
    c = shape[3] if channels is None else channels
    x = keras.ops.reshape(x, [-1, h, 2, w, 2, c])
    x = keras.ops.transpose(x, [0, 1, 3, 5, 2, 4])
    return keras.ops.reshape(x, [-1, h, w, c, 4])


@keras.saving.register_keras_serializable(package="mtl_tf")
class MaxPoolingWithSwitches(keras.layers.Layer):
    """2x2 / stride-2 max-pooling returning `(pooled, switches)`.

    `switches` has the pooled shape and holds the window position 0..3 of the
    (first) maximum as a float, under `keras.ops.stop_gradient`.
    """

    def call(self, inputs):
        windows = _windows(inputs)
        ops = keras.ops
        is_max = ops.equal(windows, ops.max(windows, axis=-1, keepdims=True))
        first = ops.logical_and(is_max, ops.equal(ops.cumsum(ops.cast(is_max, "int32"), axis=-1), 1))
        one_hot = ops.cast(first, inputs.dtype)
        # Multiplying by the one-hot mask (rather than taking the max) sends the
        # gradient to the selected maximum only.
        pooled = ops.sum(windows * one_hot, axis=-1)
        positions = ops.convert_to_tensor([0.0, 1.0, 2.0, 3.0], dtype=inputs.dtype)
        switches = ops.stop_gradient(ops.sum(one_hot * positions, axis=-1))
        return pooled, switches

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        pooled = (b, None if h is None else h // 2, None if w is None else w // 2, c)
        return pooled, pooled


@keras.saving.register_keras_serializable(package="mtl_tf")
class MaxUnpoolingWithSwitches(keras.layers.Layer):
    """Inverse of :class:`MaxPoolingWithSwitches`: `(x [B,h,w,C], switches) -> [B, 2h, 2w, C]`.

    Each value goes to the recorded position of its 2x2 window; the other three are zero.
    """

    def call(self, inputs, switches):
        ops = keras.ops
        switches = ops.cast(switches, "int32")  # integer cast: no gradient reaches the switches
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        shape = ops.shape(inputs)
        h = shape[1] if height is None else height
        w = shape[2] if width is None else width
        c = shape[3] if channels is None else channels
        spread = ops.expand_dims(inputs, -1) * ops.one_hot(switches, 4, dtype=inputs.dtype)
        spread = ops.reshape(spread, [-1, h, w, c, 2, 2])
        spread = ops.transpose(spread, [0, 1, 4, 2, 5, 3])
        return ops.reshape(spread, [-1, 2 * h, 2 * w, c])

    def compute_output_shape(self, input_shape, switches_shape=None):
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


@keras.saving.register_keras_serializable(package="mtl_tf")
class SegNetEncoder(keras.layers.Layer):
    """SegNet's VGG-16-BN encoder: `[B, H, W, 3] -> {"features", "switches"}` (H, W multiples of 32).

    Args:
      filters: widths of the five blocks (paper: 64, 128, 256, 512, 512).
      convs_per_block: convolutions per block (paper: 2, 2, 3, 3, 3).
      seed: seed of the kernel initialisers.
      initializer: one of :data:`INITIALIZERS` (default `"mtan"`); see the module doc.

    Raises:
      ValueError: an unknown `initializer` or a malformed structure.
    """

    def __init__(
        self, filters=SEGNET_FILTERS, convs_per_block=SEGNET_CONVS_PER_BLOCK, seed=None, initializer="mtan", **kwargs
    ):
        super().__init__(**kwargs)
        self.filters, self.convs_per_block = _check_structure(filters, convs_per_block, type(self).__name__)
        self.seed = seed
        self.initializer = _check_initializer(initializer)
        self.convs, self.pools = [], []
        for block, (width, count) in enumerate(zip(self.filters, self.convs_per_block), start=1):
            for i in range(1, count + 1):
                self.convs.append(ConvBatchNormReLU(
                    width, seed=_offset(seed, len(self.convs)), initializer=self.initializer,
                    name=f"block{block}_conv{i}",
                ))
            self.pools.append(MaxPoolingWithSwitches(name=f"block{block}_pool"))

    @property
    def downsampling(self):
        return 2 ** len(self.filters)

    def build(self, input_shape):
        _, height, width, _ = input_shape
        for size in (height, width):
            if size is not None and size % self.downsampling:
                raise ValueError(
                    f"{self.name}: input height and width must be multiples of {self.downsampling}; "
                    f"got {height}x{width}"
                )
        shape = tuple(input_shape)
        layers = iter(self.convs)
        for count in self.convs_per_block:
            for _ in range(count):
                conv = next(layers)
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
            shape = (shape[0], _half(shape[1]), _half(shape[2]), shape[3])
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        switches = []
        layers = iter(self.convs)
        for count, pool in zip(self.convs_per_block, self.pools):
            for _ in range(count):
                x = next(layers)(x, training=training)
            x, switch = pool(x)
            switches.append(switch)
        return {"features": x, "switches": tuple(switches)}

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        switches = []
        for level, width in enumerate(self.filters, start=1):
            factor = 2**level
            switches.append((b, None if h is None else h // factor, None if w is None else w // factor, width))
        return {"features": switches[-1], "switches": tuple(switches)}

    def get_config(self):
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "convs_per_block": list(self.convs_per_block),
            "seed": self.seed,
            "initializer": self.initializer,
        }


@keras.saving.register_keras_serializable(package="mtl_tf")
class SegNetDecoder(keras.layers.Layer):
    """One task's SegNet decoder: the encoder's dict -> `[B, H, W, num_outputs]`.

    Args:
      num_outputs: output channels (classes, 1 for depth, 3 for normals).
      output_activation: "linear" (logits / depth) or "l2_normalize" (unit normals).
      filters, convs_per_block: the encoder's structure (mirrored).
      seed: seed of the kernel initialisers.
      initializer: one of :data:`INITIALIZERS` (default `"mtan"`); see the module doc.

    Raises:
      ValueError: an unknown `initializer` or `output_activation`, a
        non-positive `num_outputs`, a malformed structure.
    """

    def __init__(
        self,
        num_outputs,
        output_activation="linear",
        filters=SEGNET_FILTERS,
        convs_per_block=SEGNET_CONVS_PER_BLOCK,
        seed=None,
        initializer="mtan",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_outputs = _checks.count(type(self).__name__, "num_outputs", num_outputs)
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={output_activation!r} is not valid; expected one of {list(OUTPUT_ACTIVATIONS)}"
            )
        self.output_activation = output_activation
        self.filters, self.convs_per_block = _check_structure(filters, convs_per_block, type(self).__name__)
        self.seed = seed
        self.initializer = _check_initializer(initializer)
        self.unpools, self.convs = [], []
        # Deepest block first; every conv of block k outputs block k-1's width.
        for block in reversed(range(len(self.filters))):
            width = self.filters[max(block - 1, 0)]
            self.unpools.append(MaxUnpoolingWithSwitches(name=f"block{block + 1}_unpool"))
            for i in range(1, self.convs_per_block[block] + 1):
                self.convs.append(ConvBatchNormReLU(
                    width, seed=_offset(seed, len(self.convs)), initializer=self.initializer,
                    name=f"block{block + 1}_conv{i}",
                ))
        self.prediction_conv = _conv(self.filters[0], 3, self.initializer, _offset(seed, 100), "pred_conv")
        self.prediction = _conv(self.num_outputs, 1, self.initializer, _offset(seed, 101), "pred", padding="valid")

    def _check_input(self, input_shape):
        if not isinstance(input_shape, dict) or "features" not in input_shape or "switches" not in input_shape:
            raise ValueError(
                f"{self.name} expects the SegNetEncoder's output {{'features': ..., 'switches': (...)}}; "
                f"got {input_shape!r}"
            )
        if len(input_shape["switches"]) != len(self.filters):
            raise ValueError(
                f"{self.name} has {len(self.filters)} blocks but the encoder gave "
                f"{len(input_shape['switches'])} switch tensors; build both with the same filters"
            )

    def build(self, input_shape):
        self._check_input(input_shape)
        shape = tuple(input_shape["features"])
        layers = iter(self.convs)
        for block in reversed(range(len(self.filters))):
            shape = (shape[0], _double(shape[1]), _double(shape[2]), shape[3])
            for _ in range(self.convs_per_block[block]):
                conv = next(layers)
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
        _build_conv(self.prediction_conv, shape, self.initializer, _offset(self.seed, 100))
        _build_conv(
            self.prediction, self.prediction_conv.compute_output_shape(shape), self.initializer, _offset(self.seed, 101)
        )
        self.built = True

    def call(self, inputs, training=None):
        x, switches = inputs["features"], inputs["switches"]
        layers = iter(self.convs)
        for unpool, block in zip(self.unpools, reversed(range(len(self.filters)))):
            x = unpool(x, switches[block])
            for _ in range(self.convs_per_block[block]):
                x = next(layers)(x, training=training)
        x = self.prediction(self.prediction_conv(x))
        if self.output_activation == "l2_normalize":
            x = engine_ops.l2_normalize(x, axis=-1, epsilon=1e-12)
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape["features"]
        factor = 2 ** len(self.filters)
        return (b, None if h is None else h * factor, None if w is None else w * factor, self.num_outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "output_activation": self.output_activation,
            "filters": list(self.filters),
            "convs_per_block": list(self.convs_per_block),
            "seed": self.seed,
            "initializer": self.initializer,
        }


def _offset(seed, i):
    return None if seed is None else int(seed) + i


def _half(size):
    return None if size is None else size // 2


def _double(size):
    return None if size is None else size * 2


def segnet_encoder(*, name="segnet_encoder", **kwargs) -> SegNetEncoder:
    """The shared SegNet encoder; see :class:`SegNetEncoder`."""
    return SegNetEncoder(name=name, **kwargs)


def segnet_decoder(num_outputs, output_activation="linear", *, name=None, **kwargs) -> SegNetDecoder:
    """One task's SegNet decoder; see :class:`SegNetDecoder`."""
    return SegNetDecoder(num_outputs, output_activation=output_activation, name=name, **kwargs)
