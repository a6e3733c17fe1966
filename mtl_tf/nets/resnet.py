"""ResNet-18 encoder and linear attribute heads of the CelebA benchmark.

Sener & Koltun (NeurIPS 2018, section 4.2 and supplement) use ResNet-18
(He et al., CVPR 2016) without its final layer as the shared representation of
the 40 CelebA attributes, with a linear layer per attribute. The network is the
small-image ("CIFAR") variant of their official code, for 64x64 RGB inputs:

  stem     conv 3x3, 64, stride 1 -> batch norm -> relu        (no max-pool)
  stage 1  2 basic blocks,  64 channels, stride 1               64x64 -> 64x64
  stage 2  2 basic blocks, 128 channels, first block stride 2   -> 32x32
  stage 3  2 basic blocks, 256 channels, first block stride 2   -> 16x16
  stage 4  2 basic blocks, 512 channels, first block stride 2   ->  8x8
  average pooling with kernel 4 and stride 4                    ->  2x2x512
  flatten                                                       -> 2048

The 2048-d representation is therefore 512 channels x 2 x 2: the pooling
kernel is 4 (sized for 32x32 inputs, where it gives a global pool), and at
64x64 it leaves a 2x2 grid. A basic block is conv 3x3 -> BN -> relu -> conv 3x3
-> BN, plus the input (or a 1x1 strided conv -> BN projection when the shape
changes), then relu. Convolutions have no bias. The heads are
`keras.layers.Dense(2)` logits (the official code puts a log-softmax on them
and uses the NLL loss, i.e. cross-entropy from logits).

Parameter count at width 64 (trainable; batch-norm moving statistics are not
counted): convolutions 11,159,232 + batch-norm scales and offsets 9,600 =
11,168,832; each head 2048 * 2 + 2 = 4,098.

Details chosen to match the official PyTorch network, stated because Keras'
defaults differ:

* stride-2 3x3 convolutions pad one pixel on every side (`ZeroPadding2D(1)` then
  a "valid" conv), as PyTorch's `padding=1`; Keras' "same" would pad only the
  bottom/right at even sizes and shift the sampling grid by one pixel;
* batch norm uses momentum 0.9 and epsilon 1e-5 (PyTorch's 0.1 / 1e-5);
* initialisation (`initializer`): `"torch"`, the default, is PyTorch's
  default, which the official code keeps: kernels, and the heads' biases,
  uniform in +-1/sqrt(fan_in) (`mtl_tf.nets.initializers`); the convolutions
  have no bias. `"keras"` gives glorot-uniform kernels and zero biases. Unlike
  the LeNets, whose default is `"keras"`, this net started from PyTorch's
  kernels before the option existed, and the default keeps them (the heads'
  biases, zero before, are now drawn as PyTorch does); batch norm starts at
  scale 1 and offset 0 either way;
* the 1x1 projection of a strided block subsamples its input and then applies
  a stride-1 1x1 convolution, which is the same function with the same
  weights as PyTorch's 1x1 stride-2 convolution; a strided 1x1 `Conv2D` would
  crash TensorFlow 2.21's oneDNN CPU kernels in the backward pass (see
  `BasicBlock._subsample`).

`width` scales every stage (64 gives ResNet-18; tests use small widths for
speed), and `pool_size` the final average pooling.
"""

from __future__ import annotations

import keras

from mtl_tf.nets import initializers as init_lib

__all__ = [
    "BasicBlock",
    "ResNetEncoder",
    "attribute_head",
    "resnet18_encoder",
    "torch_default_initializer",
]

RESNET18_BLOCKS = (2, 2, 2, 2)


def torch_default_initializer(seed=None):
    """Uniform in +-1/sqrt(fan_in): PyTorch's default for conv and linear kernels."""
    return init_lib.TorchUniform(seed=seed)


def _kernel_initializer(choice, seed):
    if choice == "torch":
        return torch_default_initializer(seed)
    return keras.initializers.GlorotUniform(seed=seed)


def _batch_norm(name, dtype):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="mtl_tf")
class BasicBlock(keras.layers.Layer):
    """ResNet basic block: two 3x3 convolutions with a residual connection.

    Args:
      filters: output channels.
      strides: stride of the first convolution (and of the projection).
      seed: seed of the kernel initialisers (`None`: unseeded).
      initializer: `"torch"` (default) or `"keras"`; see the module doc.

    Raises:
      ValueError: an unknown `initializer`.
    """

    def __init__(self, filters, strides=1, seed=None, initializer="torch", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.seed = seed
        self.initializer = init_lib.check_initializer(initializer)
        dtype = self.dtype_policy

        def conv(filters, kernel_size, strides, padding, name, offset):
            return keras.layers.Conv2D(
                filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                kernel_initializer=_kernel_initializer(self.initializer, None if seed is None else seed + offset),
                name=name, dtype=dtype,
            )

        if self.strides == 1:
            self.pad1 = None
            self.conv1 = conv(self.filters, 3, 1, "same", "conv1", 0)
        else:
            self.pad1 = keras.layers.ZeroPadding2D(1, name="pad1", dtype=dtype)
            self.conv1 = conv(self.filters, 3, self.strides, "valid", "conv1", 0)
        self.bn1 = _batch_norm("bn1", dtype)
        self.relu1 = keras.layers.ReLU(name="relu1", dtype=dtype)
        self.conv2 = conv(self.filters, 3, 1, "same", "conv2", 1)
        self.bn2 = _batch_norm("bn2", dtype)
        self.add = keras.layers.Add(name="add", dtype=dtype)
        self.relu2 = keras.layers.ReLU(name="relu2", dtype=dtype)
        # Whether the shortcut needs a projection is known only from the input
        # channels, so it is decided in `build`.
        self.shortcut_conv = None
        self.shortcut_bn = None
        self._conv_factory = conv

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.strides != 1 or shape[-1] != self.filters:
            # Stride 1 on the subsampled input; see `_subsample`.
            self.shortcut_conv = self._conv_factory(self.filters, 1, 1, "valid", "shortcut_conv", 2)
            self.shortcut_bn = _batch_norm("shortcut_bn", self.dtype_policy)
            subsampled = self.compute_output_shape(shape)[:3] + (shape[-1],)
            self.shortcut_conv.build(subsampled)
            self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(subsampled))
        x = shape
        if self.pad1 is not None:
            self.pad1.build(x)
            x = self.pad1.compute_output_shape(x)
        self.conv1.build(x)
        x = self.conv1.compute_output_shape(x)
        self.bn1.build(x)
        self.conv2.build(x)
        self.bn2.build(x)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs if self.pad1 is None else self.pad1(inputs)
        x = self.relu1(self.bn1(self.conv1(x), training=training))
        x = self.bn2(self.conv2(x), training=training)
        shortcut = inputs
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(self._subsample(inputs)), training=training)
        return self.relu2(self.add([x, shortcut]))

    def _subsample(self, inputs):
        """Every `strides`-th pixel: the input of the 1x1 projection.

        A 1x1 convolution with stride s equals a 1x1 stride-1 convolution of the
        input subsampled by s. The projection is written that way because the
        gradient of a 1x1 stride-2 "valid" `Conv2D` on an even-sized input
        crashes the process (segfault / heap corruption) in TensorFlow 2.21's
        oneDNN CPU kernels; the weights and the result are the same.
        """
        if self.strides == 1:
            return inputs
        return inputs[:, :: self.strides, :: self.strides, :]

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def reduce(size):
            return None if size is None else (size - 1) // self.strides + 1

        return (batch, reduce(height), reduce(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides, seed=self.seed, initializer=self.initializer)
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class ResNetEncoder(keras.layers.Layer):
    """Small-image ResNet trunk: `[B, H, W, C] -> [B, 8 * width * (H // 8 // pool) * (W // 8 // pool)]`.

    With the defaults and 64x64 inputs this is Sener & Koltun's CelebA
    ResNet-18 and the representation has 512 * 2 * 2 = 2048 features.

    Args:
      blocks: basic blocks per stage; (2, 2, 2, 2) is ResNet-18.
      width: channels of the stem and the first stage; stage s has
        `width * 2**s` channels.
      pool_size: kernel and stride of the final average pooling.
      seed: seed of the kernel initialisers (`None`: unseeded).
      initializer: `"torch"` (default) or `"keras"`; see the module doc.

    Raises:
      ValueError: an unknown `initializer`, empty or non-positive
        `blocks`, a non-positive `width`; at build, inputs too small for
        the pooling.
    """

    def __init__(self, blocks=RESNET18_BLOCKS, width=64, pool_size=4, seed=None, initializer="torch", **kwargs):
        super().__init__(**kwargs)
        self.blocks = tuple(int(b) for b in blocks)
        if not self.blocks or any(b < 1 for b in self.blocks):
            raise ValueError(f"blocks must be a non-empty list of positive counts per stage; got {list(blocks)}")
        self.width = int(width)
        if self.width < 1:
            raise ValueError(f"width must be a positive number of channels; got {width}")
        self.pool_size = int(pool_size)
        self.seed = seed
        self.initializer = init_lib.check_initializer(initializer)
        dtype = self.dtype_policy
        self.stem_conv = keras.layers.Conv2D(
            self.width, 3, strides=1, padding="same", use_bias=False,
            kernel_initializer=_kernel_initializer(self.initializer, seed), name="stem_conv", dtype=dtype,
        )
        self.stem_bn = _batch_norm("stem_bn", dtype)
        self.stem_relu = keras.layers.ReLU(name="stem_relu", dtype=dtype)
        self.stages = []
        index = 0
        for stage, count in enumerate(self.blocks):
            for block in range(count):
                index += 1
                self.stages.append(BasicBlock(
                    self.width * 2**stage,
                    strides=2 if stage > 0 and block == 0 else 1,
                    seed=None if seed is None else seed + 10 * index,
                    initializer=self.initializer,
                    name=f"stage{stage + 1}_block{block + 1}",
                    dtype=dtype,
                ))
        self.pool = keras.layers.AveragePooling2D(self.pool_size, name="pool", dtype=dtype)
        self.flatten = keras.layers.Flatten(name="flatten", dtype=dtype)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(f"ResNetEncoder expects images [batch, height, width, channels]; got shape {shape}")
        self.stem_conv.build(shape)
        shape = self.stem_conv.compute_output_shape(shape)
        self.stem_bn.build(shape)
        for block in self.stages:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        for size in shape[1:3]:
            if size is not None and size < self.pool_size:
                raise ValueError(
                    f"the last stage's feature map is {shape[1]}x{shape[2]}, smaller than the "
                    f"pooling kernel {self.pool_size}; expected inputs of at least "
                    f"{self.pool_size * 2 ** (len(self.blocks) - 1)} pixels a side (64x64 for CelebA)"
                )
        self.built = True

    def call(self, inputs, training=None):
        x = self.stem_relu(self.stem_bn(self.stem_conv(inputs), training=training))
        for block in self.stages:
            x = block(x, training=training)
        return self.flatten(self.pool(x))

    def compute_output_shape(self, input_shape):
        shape = self.stem_conv.compute_output_shape(tuple(input_shape))
        for block in self.stages:
            shape = block.compute_output_shape(shape)
        return self.flatten.compute_output_shape(self.pool.compute_output_shape(shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            blocks=list(self.blocks), width=self.width, pool_size=self.pool_size, seed=self.seed,
            initializer=self.initializer,
        )
        return config


def resnet18_encoder(
    *, width=64, pool_size=4, seed=None, initializer="torch", name="resnet18_encoder"
) -> ResNetEncoder:
    """Sener's CelebA ResNet-18 trunk (64x64x3 -> 2048 at width 64); see :class:`ResNetEncoder`."""
    return ResNetEncoder(
        blocks=RESNET18_BLOCKS, width=width, pool_size=pool_size, seed=seed, initializer=initializer, name=name
    )


def attribute_head(num_classes=2, *, seed=None, initializer="torch", name=None) -> keras.layers.Dense:
    """A linear attribute head of `num_classes` logits, a `keras.layers.Dense`.

    `initializer="torch"` (default): a :class:`mtl_tf.nets.initializers.TorchDense`,
    kernel and bias uniform in +-1/sqrt(input features), as the official
    `nn.Linear`; `"keras"`: glorot-uniform kernel (seeded) and zero bias.

    Raises:
      ValueError: an unknown `initializer`.
    """
    init_lib.check_initializer(initializer)
    if initializer == "torch":
        return init_lib.TorchDense(num_classes, seed=seed, name=name)
    return keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name=name)
