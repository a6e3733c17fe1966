"""ResNet-50 dilated to output stride 8 with a pyramid-pooling decoder per task.

Sener & Koltun (NeurIPS 2018, section 4.3) follow Kendall et al.
(CVPR 2018) on Cityscapes: a ResNet-50 encoder shared by the three tasks,
dilated so that it keeps 1/8 of the input resolution, and one decoder per task
built on the pyramid pooling module of PSPNet (Zhao et al., CVPR 2017) with pool
scales 1, 2, 3 and 6. Targets are at 1/8 of the 256x512 input, so the decoders
predict at the feature resolution (32x64) without upsampling.

Encoder (`DilatedResNet50`). The network is keras.applications' ResNet50
(v1, `include_top=False`): the same layers, names and defaults, built here
because keras.applications offers neither dilation nor the width and depth
scaling that lets tests run the encoder cheaply. (Rebuilding
`keras.applications.ResNet50` with `keras.models.clone_model` and
modified conv configs works too; it was tried, but it fixes the 175-layer
network, and the first MGDA-UB `fit` step over it took 28-34 CPU-seconds
here, mostly tracing: too much for the default tests.) Tests check that at the default size this is
keras.applications' network: the same parameter count (23,587,712 with
batch-norm statistics) and identical outputs with the same weights.

Dilation: in the stages that keep their resolution (conv4 and conv5 for
output stride 8, conv5 for 16) the stride-2 convolutions of the first block
(its 1x1 `_1_conv` and the 1x1 projection `_0_conv`) get stride 1 and every
3x3 convolution of the stage gets dilation 2 (conv4) or 4 (conv5). In this
ResNet (v1) the stride sits on the first 1x1 convolution, so the first block's
3x3 convolution already runs on the reduced grid and takes the stage's full
dilation; the dilated network then computes exactly the undilated one's
outputs at every 4th position (the "a trous" identity, checked in the tests).
torchvision's ResNet-50 (v1.5), which Sener's code dilates, has the stride on
the 3x3 convolution instead and gives that one convolution half the dilation;
the parameter count is the same. Dilation changes no weight shape, so
ImageNet weights load unchanged. The output is `[B, ceil(H/8), ceil(W/8),
2048]` (exactly H/8 x W/8 when H and W are multiples of 8) for any input
size.

Weights: `weights_path=None` gives a random initialisation, chosen by
`initializer`: `"keras"` (the default) is keras.applications' (glorot-uniform
kernels, zero biases), `"torch"` PyTorch's default (kernels and biases uniform
in +-1/sqrt(fan_in), `mtl_tf.nets.initializers`). Sener's code starts the
encoder from ImageNet weights (its ResNet is torchvision-style and
re-initialises itself before loading them, so neither choice is its random
start); a path to a keras.applications ResNet50 "notop" weights file (e.g.
`resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`) is read by
`keras.applications.ResNet50(weights=path)` and copied layer by layer by
name. Nothing is downloaded. Those weights expect `keras.applications
.resnet50.preprocess_input` (caffe-style BGR mean subtraction) on the inputs.
Batch norm keeps keras.applications' settings (momentum 0.99, epsilon
1.001e-5); `batch_norm_momentum=0.9` gives PyTorch's default, which Sener's
code trains with.

Decoder (`PyramidPoolingDecoder`), for features `[B, h, w, C]`::

  for each scale s in (1, 2, 3, 6):
    adaptive average pooling to s x s -> conv 1x1 (channels, no bias) -> BN -> ReLU
    -> bilinear resize back to h x w (half-pixel centres, PyTorch's align_corners=False)
  concat [features, 4 branches] -> conv 3x3 (channels, no bias) -> BN -> ReLU
  -> channel dropout (0.1) -> conv 1x1 (num_outputs, with bias)

with 512 channels by default (PSPNet's and Sener's code's). Outputs are logits
for segmentation and linear values for offsets and disparity. Decoder batch
norm uses PyTorch's defaults (momentum 0.1 = Keras 0.9, epsilon 1e-5). The
decoder's `initializer` is `"keras"` (default: glorot-uniform kernels, zero
bias) or `"torch"`: PyTorch's default, which Sener's decoders keep (they are
not re-initialised), so `"torch"` is the official random start.

`AdaptiveAveragePooling2D` is hand-written because Keras has no adaptive
pooling: bin i of an axis of length n covers `[floor(i n / s), ceil((i+1) n
/ s))` (PyTorch's `AdaptiveAvgPool2d` rule), computed as two small averaging
matrices applied with `einsum`. It works for every input size (bins overlap
when n is not a multiple of s, and repeat when n < s) and compiles with XLA:
with static spatial sizes (as in a traced training step) the matrices are
constants; with unknown sizes they are built from the runtime shape.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from mtl_tf.backend import ops as engine_ops
from mtl_tf.nets import initializers as init_lib

__all__ = [
    "AdaptiveAveragePooling2D",
    "DilatedResNet50",
    "PyramidPoolingDecoder",
    "adaptive_pooling_matrix",
    "build_resnet50_trunk",
    "dilated_resnet50_encoder",
    "pyramid_pooling_decoder",
]

PSP_POOL_SCALES = (1, 2, 3, 6)
RESNET50_BLOCKS = (3, 4, 6, 3)
# Stage -> dilation of its 3x3 convolutions, per output stride.
STAGE_DILATIONS = {8: {"conv4": 2, "conv5": 4}, 16: {"conv5": 2}, 32: {}}


def adaptive_pooling_matrix(size_in, size_out, dtype="float32"):
    """[size_out, size_in] averaging matrix of adaptive pooling along one axis (NumPy)."""
    size_in, size_out = int(size_in), int(size_out)
    matrix = np.zeros((size_out, size_in), dtype=dtype)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)  # ceil((i + 1) n / s)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adaptive_pooling_matrix_tensor(size_in, size_out, dtype):
    """The same matrix from a runtime (scalar tensor) input size."""
    ops = keras.ops
    size_in = ops.cast(size_in, "int32")
    rows = ops.arange(size_out, dtype="int32")
    start = (rows * size_in) // size_out
    end = -((-(rows + 1) * size_in) // size_out)
    positions = ops.arange(size_in, dtype="int32")
    inside = ops.logical_and(positions[None, :] >= start[:, None], positions[None, :] < end[:, None])
    return ops.cast(inside, dtype) / ops.cast(end - start, dtype)[:, None]


@keras.saving.register_keras_serializable(package="mtl_tf")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling of `[B, H, W, C]` to `[B, s, s, C]` (or `s_h x s_w`) for any H, W."""

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)
        if len(self.output_size) != 2 or min(self.output_size) < 1:
            raise ValueError(f"output_size must be a positive int or a pair of them; got {output_size!r}")

    def _matrix(self, inputs, axis):
        size_out = self.output_size[axis - 1]
        static = inputs.shape[axis]
        if static is not None:
            return keras.ops.convert_to_tensor(adaptive_pooling_matrix(static, size_out), dtype=inputs.dtype)
        return _adaptive_pooling_matrix_tensor(keras.ops.shape(inputs)[axis], size_out, inputs.dtype)

    def call(self, inputs):
        rows, cols = self._matrix(inputs, 1), self._matrix(inputs, 2)
        pooled = keras.ops.einsum("ih,bhwc->biwc", rows, inputs)
        return keras.ops.einsum("jw,biwc->bijc", cols, pooled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}


def _check_weights_path(weights_path):
    if weights_path is None:
        return None
    weights_path = os.fspath(weights_path)
    if weights_path == "imagenet":
        raise ValueError(
            "weights_path='imagenet' would download weights; this library does not download. Download "
            "keras.applications' resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 yourself and pass its path"
        )
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"ResNet-50 weights file {weights_path!r} does not exist; expected a keras.applications ResNet50 "
            "(include_top=False) weights file, or weights_path=None for a random initialisation"
        )
    return weights_path


def _conv(x, filters, kernel_size, initializer, **kwargs):
    """`keras.layers.Conv2D(filters, kernel_size, **kwargs)` applied to `x`.

    `"torch"` initialisers take their fan-in from `x`'s channels;
    `"keras"` leaves the layer's defaults (keras.applications' own).
    """
    if initializer == "torch":
        kwargs.update(init_lib.torch_initializers(kernel_size * kernel_size * int(x.shape[-1])))
    return keras.layers.Conv2D(filters, kernel_size, **kwargs)(x)


def _bottleneck(x, filters, stride, dilation, projection, name, batch_norm_momentum, initializer="keras"):
    """keras.applications' ResNet v1 bottleneck block (same layers and names), with dilation."""

    def norm(suffix):
        return keras.layers.BatchNormalization(
            axis=3, epsilon=1.001e-5, momentum=batch_norm_momentum, name=f"{name}_{suffix}_bn"
        )

    if projection:
        shortcut = _conv(x, 4 * filters, 1, initializer, strides=stride, name=f"{name}_0_conv")
        shortcut = norm(0)(shortcut)
    else:
        shortcut = x
    x = _conv(x, filters, 1, initializer, strides=stride, name=f"{name}_1_conv")
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(norm(1)(x))
    x = _conv(x, filters, 3, initializer, padding="same", dilation_rate=dilation, name=f"{name}_2_conv")
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(norm(2)(x))
    x = _conv(x, 4 * filters, 1, initializer, name=f"{name}_3_conv")
    x = norm(3)(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def build_resnet50_trunk(
    output_stride=8, blocks=RESNET50_BLOCKS, width=64, batch_norm_momentum=0.99, name="resnet50_trunk",
    initializer="keras",
):
    """Functional ResNet-50 trunk (keras.applications' layers and names), dilated to `output_stride`.

    Returns a `keras.Model` mapping `[B, H, W, 3]` to `[B, ceil(H/s), ceil(W/s), 32 * width]`.
    `initializer`: `"keras"` (keras.applications' defaults) or `"torch"`.
    """
    init_lib.check_initializer(initializer)
    if output_stride not in STAGE_DILATIONS:
        raise ValueError(f"output_stride must be one of {sorted(STAGE_DILATIONS)}; got {output_stride!r}")
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != 4 or min(blocks) < 1 or int(width) < 1:
        raise ValueError(f"blocks must be 4 positive integers and width positive; got blocks={blocks}, width={width}")
    width = int(width)
    dilations = STAGE_DILATIONS[output_stride]
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = _conv(x, width, 7, initializer, strides=2, name="conv1_conv")
    x = keras.layers.BatchNormalization(axis=3, epsilon=1.001e-5, momentum=batch_norm_momentum, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (count, multiplier) in enumerate(zip(blocks, (1, 2, 4, 8)), start=2):
        stage_name = f"conv{stage}"
        dilation = dilations.get(stage_name, 1)
        # conv2 keeps the pooled resolution; conv3..conv5 halve it unless dilated instead.
        stride = 1 if stage == 2 or stage_name in dilations else 2
        for block in range(1, count + 1):
            x = _bottleneck(
                x,
                width * multiplier,
                stride=stride if block == 1 else 1,
                dilation=dilation,
                projection=block == 1,
                name=f"{stage_name}_block{block}",
                batch_norm_momentum=batch_norm_momentum,
                initializer=initializer,
            )
    return keras.Model(inputs, x, name=name)


def load_resnet50_weights(trunk, weights_path):
    """Copies keras.applications ResNet50 (no top) weights from a file into `trunk`, layer by layer by name."""
    reference = keras.applications.ResNet50(
        include_top=False, weights=_check_weights_path(weights_path), input_shape=(None, None, 3)
    )
    for layer in trunk.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())


@keras.saving.register_keras_serializable(package="mtl_tf")
class DilatedResNet50(keras.layers.Layer):
    """ResNet-50 trunk dilated to `output_stride`: `[B, H, W, 3] -> [B, ceil(H/8), ceil(W/8), 2048]`.

    Args:
      output_stride: 8 (Sener's), 16 or 32 (the plain ResNet-50 trunk).
      weights_path: None for random weights, or a keras.applications ResNet50
        (include_top=False) weights file (needs the default blocks and width).
      blocks: bottleneck blocks of stages conv2..conv5 (ResNet-50: 3, 4, 6, 3).
      width: channels of the stem and of conv2's bottlenecks (64; the output
        has 32 * width channels). Smaller values are for tests.
      batch_norm_momentum: Keras momentum of the batch norms (keras.applications'
        0.99; PyTorch's default, which Sener's code trains with, is 0.9).
      initializer: random initialisation without `weights_path`: `"keras"`
        (default, keras.applications') or `"torch"` (PyTorch's default).

    Raises:
      ValueError: an unknown `initializer` or `output_stride`; ImageNet
        weights with a non-default structure.
    """

    def __init__(
        self, output_stride=8, weights_path=None, blocks=RESNET50_BLOCKS, width=64, batch_norm_momentum=0.99,
        initializer="keras", **kwargs
    ):
        super().__init__(**kwargs)
        self.output_stride = int(output_stride)
        self.blocks = tuple(int(b) for b in blocks)
        self.width = int(width)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.initializer = init_lib.check_initializer(initializer)
        weights_path = _check_weights_path(weights_path)
        if weights_path is not None and (self.blocks != RESNET50_BLOCKS or self.width != 64):
            raise ValueError(
                f"{self.name}: ImageNet weights fit only ResNet-50 itself (blocks={RESNET50_BLOCKS}, width=64); "
                f"got blocks={self.blocks}, width={self.width}"
            )
        self.trunk = build_resnet50_trunk(
            self.output_stride, self.blocks, self.width, self.batch_norm_momentum, initializer=self.initializer
        )
        if weights_path is not None:
            load_resnet50_weights(self.trunk, weights_path)
        self.built = True  # The functional trunk is built for any input size.

    @property
    def output_channels(self):
        return 32 * self.width

    def call(self, inputs, training=None):
        if len(inputs.shape) != 4 or inputs.shape[-1] not in (None, 3):
            raise ValueError(f"{self.name} expects RGB images [batch, height, width, 3]; got shape {inputs.shape}")
        return self.trunk(inputs, training=training)

    def compute_output_shape(self, input_shape):
        def reduce(size):
            return None if size is None else math.ceil(size / self.output_stride)

        return (input_shape[0], reduce(input_shape[1]), reduce(input_shape[2]), self.output_channels)

    def get_config(self):
        # The weights file is not part of the configuration: a saved model
        # carries its weights, and reloading must not need the original file.
        return {
            **super().get_config(),
            "output_stride": self.output_stride,
            "blocks": list(self.blocks),
            "width": self.width,
            "batch_norm_momentum": self.batch_norm_momentum,
            "initializer": self.initializer,
        }


def _batch_norm(name):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


@keras.saving.register_keras_serializable(package="mtl_tf")
class PyramidPoolingDecoder(keras.layers.Layer):
    """PSPNet pyramid pooling head: `[B, h, w, C] -> [B, h, w, num_outputs]`.

    Args:
      num_outputs: output channels (19 segmentation logits, 2 offsets, 1 disparity).
      pool_scales: side lengths of the pooled grids.
      channels: width of the branch and fusion convolutions (512 in the paper's net;
        tests use a few).
      dropout_rate: channel dropout before the classifier.
      seed: seed of the dropout mask and, with `initializer="torch"`, of
        the initialisers (None: unseeded).
      initializer: `"keras"` (default: glorot-uniform kernels, zero bias) or
        `"torch"` (PyTorch's default, the official decoders' start).

    Raises:
      ValueError: an unknown `initializer`, non-positive sizes; at build,
        unknown input channels.
    """

    def __init__(
        self, num_outputs, pool_scales=PSP_POOL_SCALES, channels=512, dropout_rate=0.1, seed=None,
        initializer="keras", **kwargs
    ):
        super().__init__(**kwargs)
        self.num_outputs = int(num_outputs)
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.channels = int(channels)
        self.dropout_rate = float(dropout_rate)
        self.seed = seed
        self.initializer = init_lib.check_initializer(initializer)
        if self.num_outputs < 1 or self.channels < 1 or not self.pool_scales or min(self.pool_scales) < 1:
            raise ValueError(
                f"{type(self).__name__}: num_outputs, channels and pool_scales must be positive; got "
                f"num_outputs={num_outputs}, channels={channels}, pool_scales={pool_scales}"
            )
        self.pools, self.branch_convs, self.branch_norms = [], [], []
        for s in self.pool_scales:
            self.pools.append(AdaptiveAveragePooling2D(s, name=f"pool_{s}"))
            self.branch_convs.append(keras.layers.Conv2D(self.channels, 1, use_bias=False, name=f"pool_{s}_conv"))
            self.branch_norms.append(_batch_norm(f"pool_{s}_bn"))
        self.fuse_conv = keras.layers.Conv2D(self.channels, 3, padding="same", use_bias=False, name="fuse_conv")
        self.fuse_norm = _batch_norm("fuse_bn")
        self.dropout = keras.layers.SpatialDropout2D(self.dropout_rate, seed=seed, name="dropout")
        self.classifier = keras.layers.Conv2D(self.num_outputs, 1, name="classifier")

    def build(self, input_shape):
        batch, height, width, channels = input_shape
        if channels is None:
            raise ValueError(f"{self.name}: the number of input channels must be known; got shape {input_shape}")
        for pool, conv, norm in zip(self.pools, self.branch_convs, self.branch_norms):
            pooled = pool.compute_output_shape(input_shape)
            self._build_conv(conv, pooled)
            norm.build(conv.compute_output_shape(pooled))
        fused_in = (batch, height, width, channels + self.channels * len(self.pool_scales))
        self._build_conv(self.fuse_conv, fused_in)
        fused = self.fuse_conv.compute_output_shape(fused_in)
        self.fuse_norm.build(fused)
        self._build_conv(self.classifier, fused)
        self.built = True

    def _build_conv(self, conv, input_shape):
        init_lib.set_layer_initializers(
            conv, input_shape, self.initializer, seed=init_lib.derive_seed(self.seed, conv.name)
        )
        conv.build(input_shape)

    def call(self, inputs, training=None):
        size = keras.ops.shape(inputs)[1:3]  # static ints where known, run-time sizes (TensorFlow) otherwise
        features = [inputs]
        for pool, conv, norm in zip(self.pools, self.branch_convs, self.branch_norms):
            branch = keras.ops.relu(norm(conv(pool(inputs)), training=training))
            branch = engine_ops.resize_bilinear(branch, size)
            features.append(keras.ops.cast(branch, inputs.dtype))
        x = keras.ops.concatenate(features, axis=-1)
        x = keras.ops.relu(self.fuse_norm(self.fuse_conv(x), training=training))
        x = self.dropout(x, training=training)
        return self.classifier(x)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.num_outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "pool_scales": list(self.pool_scales),
            "channels": self.channels,
            "dropout_rate": self.dropout_rate,
            "seed": self.seed,
            "initializer": self.initializer,
        }


def dilated_resnet50_encoder(*, name="dilated_resnet50", **kwargs) -> DilatedResNet50:
    """Sener's Cityscapes encoder (output stride 8); see :class:`DilatedResNet50`."""
    return DilatedResNet50(name=name, **kwargs)


def pyramid_pooling_decoder(num_outputs, *, name=None, **kwargs) -> PyramidPoolingDecoder:
    """One task's pyramid-pooling decoder; see :class:`PyramidPoolingDecoder`."""
    return PyramidPoolingDecoder(num_outputs, name=name, **kwargs)
