"""MTAN: the Multi-Task Attention Network on SegNet (Liu, Johns & Davison, CVPR 2019).

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, section 3 and Figure 2: a shared network (the global feature pool,
here SegNet's encoder and decoder) and, per task, soft attention modules that
pick features from it block by block. In encoder block j (section 3.2, eq. 1):

  a_j = g_j([u_j ; f_{j-1}(a^_{j-1})]),   a^_j = a_j (.) p_j

u_j the block's first convolution output, p_j its last (before pooling), g_j
two 1x1 conv-BN layers with ReLU then sigmoid, f_j a 3x3 conv-BN-ReLU (then a
2x2 max-pooling) to the next block's width; the decoder side mirrors it with
bilinear upsampling, the unpooled shared map in place of u_j and the decoder
block's last output in place of p_j. Each task predicts from its last
attended map (MTAN's prediction layers: conv 3x3 -> conv 1x1).

Shapes and widths follow the official code (`im2im_pred/model_segnet_mtan.py`
of lorenmt/mtan): encoder attention j has width filters[j] and input [u_j ;
previous] (u_1 alone for j = 1); encoder f_j maps to filters[j + 1] (the
deepest keeps filters[-1]); decoder step k (deepest first) upsamples the
previous attended map (bilinear, align_corners=True as `F.interpolate`),
applies f (to filters[k - 1]; the deepest keeps filters[-1], the shallowest
filters[0]), concatenates the unpooled shared map, and its attention has the
decoder block's width.

Encoder / heads split (how `MultiTaskModel` and the balancers see it):

  * encoder = :class:`MTANBackbone`, the shared SegNet (encoder and decoder,
    `mtl_tf.nets.segnet`'s blocks). It returns its intermediate maps, the
    representation: `{"encoder_first": (u_1..u_5), "encoder_last":
    (p_1..p_5), "decoder_unpooled": (5 maps, deepest first), "decoder_last":
    (5 maps, deepest first)}` -- the same for every task.
  * head t = :class:`MTANHead`, task t's attention modules, its f layers and
    its prediction layers.

  So "shared parameters" are the SegNet's, and the representation methods
  (`mgda_ub`, `gradient_at="representation"`) work on the backbone's maps,
  which every task reads: their Gramian is the tasks' conflicts on the
  global feature pool.

Deviation from the paper's and the official parameter sharing: the official
code shares the f layers (`encoder_block_att`, `decoder_block_att`) between
the tasks; here every task has its own (they act on task-attended maps, so
they cannot sit in the shared encoder, and a `MultiTaskModel` head owns its
variables). With the default widths that is 6,272,640 + 3,947,520 = 10,220,160
extra trainable parameters per task beyond the first. Other deviations: the
segmentation head returns logits (the official code returns log-softmax;
our losses take logits), normals are L2-normalised as in the official code.
LibMTL's `MTAN` (on ResNets) builds each level's attention with
`[module] * task_num`, which repeats one module, so its tasks share their
attention modules; here each task has its own, as in the paper.

Input height and width must be multiples of 32 (five poolings); `filters` and
`convs_per_block` can be scaled down for tests. Initialisation as
`mtl_tf.nets.segnet` (`initializer`, default "mtan": xavier-normal kernels,
zero biases, as the official code re-initialises every convolution).
"""

from __future__ import annotations

import keras

from mtl_tf.backend import ops as engine_ops
from mtl_tf.nets import _checks, segnet

__all__ = ["MTANBackbone", "MTANHead", "mtan_backbone", "mtan_head"]


def _offset(seed, i):
    return None if seed is None else int(seed) + i


@keras.saving.register_keras_serializable(package="mtl_tf")
class MTANBackbone(keras.layers.Layer):
    """MTAN's shared SegNet: `[B, H, W, C] -> dict of its intermediate maps` (H, W multiples of 32).

    Output, with k blocks, widths f = `filters` and block j counted from 0
    at the top: a dict of four tuples of k maps. `encoder_first`: block j's
    first conv output, [B, H/2^j, W/2^j, f_j]; `encoder_last`: block j's last
    conv output (before pooling), same shapes; `decoder_unpooled` (deepest
    first): the unpooled input of decoder block j, [B, H/2^j, W/2^j, f_j];
    `decoder_last` (deepest first): decoder block j's last output,
    [B, H/2^j, W/2^j, f_{max(j-1, 0)}].

    Args:
      filters, convs_per_block: SegNet's structure (default (64, 128, 256,
        512, 512) and (2, 2, 3, 3, 3)).
      seed: seed of the kernel initialisers (None: unseeded).
      initializer: one of `mtl_tf.nets.segnet.INITIALIZERS` (default "mtan").

    Parameters: those of a `SegNetEncoder` plus the decoder blocks of a
    `SegNetDecoder` (without its prediction layers).
    """

    def __init__(self, filters=segnet.SEGNET_FILTERS, convs_per_block=segnet.SEGNET_CONVS_PER_BLOCK, seed=None,
                 initializer="mtan", **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.filters, self.convs_per_block = segnet._check_structure(filters, convs_per_block, owner)
        self.seed = _checks.seed(owner, "seed", seed)
        self.initializer = segnet._check_initializer(initializer)
        conv = lambda width, i, name: segnet.ConvBatchNormReLU(  # noqa: E731
            width, seed=_offset(seed, i), initializer=self.initializer, name=name
        )
        self.encoder_blocks, self.pools, self.decoder_blocks, self.unpools = [], [], [], []
        count = 0
        for block, (width, n) in enumerate(zip(self.filters, self.convs_per_block)):
            self.encoder_blocks.append([conv(width, count + i, f"encoder{block + 1}_conv{i + 1}") for i in range(n)])
            count += n
            self.pools.append(segnet.MaxPoolingWithSwitches(name=f"encoder{block + 1}_pool"))
        for block in reversed(range(len(self.filters))):
            width = self.filters[max(block - 1, 0)]
            n = self.convs_per_block[block]
            self.unpools.append(segnet.MaxUnpoolingWithSwitches(name=f"decoder{block + 1}_unpool"))
            self.decoder_blocks.append([conv(width, count + i, f"decoder{block + 1}_conv{i + 1}") for i in range(n)])
            count += n

    def build(self, input_shape):
        _, height, width, _ = input_shape
        factor = 2 ** len(self.filters)
        for size in (height, width):
            if size is not None and size % factor:
                raise ValueError(f"{self.name}: input height and width must be multiples of {factor}; got {height}x{width}")
        shape = tuple(input_shape)
        for block in self.encoder_blocks:
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            shape = (shape[0], _half(shape[1]), _half(shape[2]), shape[3])
        for block in self.decoder_blocks:
            shape = (shape[0], _double(shape[1]), _double(shape[2]), shape[3])
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        first, last, switches = [], [], []
        for block, pool in zip(self.encoder_blocks, self.pools):
            for i, layer in enumerate(block):
                x = layer(x, training=training)
                if i == 0:
                    first.append(x)
            last.append(x)
            x, switch = pool(x)
            switches.append(switch)
        unpooled, decoded = [], []
        for step, (unpool, block) in enumerate(zip(self.unpools, self.decoder_blocks)):
            x = unpool(x, switches[-1 - step])
            unpooled.append(x)
            for layer in block:
                x = layer(x, training=training)
            decoded.append(x)
        return {
            "encoder_first": tuple(first), "encoder_last": tuple(last),
            "decoder_unpooled": tuple(unpooled), "decoder_last": tuple(decoded),
        }

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        k = len(self.filters)

        def at(level, width):
            scale = 2**level
            return (b, None if h is None else h // scale, None if w is None else w // scale, width)

        encoder = tuple(at(j, self.filters[j]) for j in range(k))
        return {
            "encoder_first": encoder, "encoder_last": encoder,
            "decoder_unpooled": tuple(at(j, self.filters[j]) for j in reversed(range(k))),
            "decoder_last": tuple(at(j, self.filters[max(j - 1, 0)]) for j in reversed(range(k))),
        }

    def get_config(self):
        return {
            **super().get_config(), "filters": list(self.filters), "convs_per_block": list(self.convs_per_block),
            "seed": self.seed, "initializer": self.initializer,
        }


@keras.saving.register_keras_serializable(package="mtl_tf")
class AttentionModule(keras.layers.Layer):
    """MTAN's attention g: conv 1x1 -> BN -> ReLU -> conv 1x1 -> BN -> sigmoid, `[B, h, w, *] -> [B, h, w, width]`.

    Parameters: `c_in * width + width` + 2 * width (BN) + `width * width + width` + 2 * width (BN), and 4 * width
    moving statistics.
    """

    def __init__(self, width, seed=None, initializer="mtan", **kwargs):
        super().__init__(**kwargs)
        self.width = _checks.count("AttentionModule", "width", width)
        self.seed = _checks.seed("AttentionModule", "seed", seed)
        self.initializer = segnet._check_initializer(initializer)
        self.conv1 = segnet._conv(self.width, 1, self.initializer, _offset(seed, 0), "conv1", padding="valid")
        self.norm1 = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn1")
        self.conv2 = segnet._conv(self.width, 1, self.initializer, _offset(seed, 1), "conv2", padding="valid")
        self.norm2 = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn2")

    def build(self, input_shape):
        segnet._build_conv(self.conv1, input_shape, self.initializer, _offset(self.seed, 0))
        shape = self.conv1.compute_output_shape(input_shape)
        self.norm1.build(shape)
        segnet._build_conv(self.conv2, shape, self.initializer, _offset(self.seed, 1))
        self.norm2.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = keras.ops.relu(self.norm1(self.conv1(inputs), training=training))
        return keras.ops.sigmoid(self.norm2(self.conv2(x), training=training))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.width)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "seed": self.seed, "initializer": self.initializer}


@keras.saving.register_keras_serializable(package="mtl_tf")
class MTANHead(keras.layers.Layer):
    """One task's MTAN branch: the backbone's maps -> `[B, H, W, num_outputs]`.

    Args:
      num_outputs: output channels (classes, 1 for depth, 3 for normals).
      output_activation: "linear" (logits / depth) or "l2_normalize" (unit normals).
      filters, convs_per_block: the backbone's structure (only `filters`
        sets widths here; both are checked against the backbone's maps).
      seed, initializer: as `MTANBackbone`.

    Parameters (f = filters, k blocks): encoder attention j: AttentionModule(f_j)
    on 2 f_j channels (f_1 on f_1 for the first); encoder f_j: 3x3 conv-BN to
    f_{j+1} (the last to f_k); decoder step (deepest first) f: 3x3 conv-BN to
    f_{k-1} for the deepest, then f_{j-1}, f_1 for the top, and its attention
    the decoder block's width on [unpooled ; f output]; prediction conv 3x3
    (f_1 -> f_1) and conv 1x1 (f_1 -> num_outputs).

    Raises:
      ValueError: an unknown `initializer` or `output_activation`, a
        non-positive `num_outputs`, input that is not an `MTANBackbone`'s.
    """

    def __init__(self, num_outputs, output_activation="linear", filters=segnet.SEGNET_FILTERS,
                 convs_per_block=segnet.SEGNET_CONVS_PER_BLOCK, seed=None, initializer="mtan", **kwargs):
        super().__init__(**kwargs)
        self.num_outputs = _checks.count("MTANHead", "num_outputs", num_outputs)
        if output_activation not in segnet.OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={output_activation!r} is not valid; expected one of {list(segnet.OUTPUT_ACTIVATIONS)}"
            )
        self.output_activation = output_activation
        owner = type(self).__name__
        self.filters, self.convs_per_block = segnet._check_structure(filters, convs_per_block, owner)
        self.seed = _checks.seed(owner, "seed", seed)
        self.initializer = segnet._check_initializer(initializer)
        f, k = self.filters, len(self.filters)
        init = self.initializer
        self.encoder_attention = [AttentionModule(f[j], _offset(seed, 10 * j), init, name=f"encoder_att{j + 1}")
                                  for j in range(k)]
        self.encoder_convs = [
            segnet.ConvBatchNormReLU(f[min(j + 1, k - 1)], seed=_offset(seed, 10 * j + 2), initializer=init,
                                     name=f"encoder_block_att{j + 1}")
            for j in range(k)
        ]
        self.decoder_convs, self.decoder_attention = [], []
        for step, block in enumerate(reversed(range(k))):
            # The official decoder_block_att: the deepest keeps f_k, block j maps to f_{j-1}, the top keeps f_1.
            width = f[-1] if block == k - 1 else f[block - 1] if block > 0 else f[0]
            self.decoder_convs.append(segnet.ConvBatchNormReLU(
                width, seed=_offset(seed, 100 + 10 * step), initializer=init, name=f"decoder_block_att{block + 1}"
            ))
            self.decoder_attention.append(AttentionModule(
                f[max(block - 1, 0)], _offset(seed, 102 + 10 * step), init, name=f"decoder_att{block + 1}"
            ))
        self.prediction_conv = segnet._conv(f[0], 3, init, _offset(seed, 200), "pred_conv")
        self.prediction = segnet._conv(self.num_outputs, 1, init, _offset(seed, 201), "pred", padding="valid")

    def _check_input(self, input_shape):
        keys = ("encoder_first", "encoder_last", "decoder_unpooled", "decoder_last")
        if not isinstance(input_shape, dict) or any(key not in input_shape for key in keys):
            raise ValueError(f"{self.name} expects an MTANBackbone's output, a dict with keys {list(keys)}; "
                             f"got {input_shape!r}")
        if any(len(input_shape[key]) != len(self.filters) for key in keys):
            raise ValueError(f"{self.name} has {len(self.filters)} blocks but the backbone's maps do not; "
                             "build both with the same filters")

    def build(self, input_shape):
        self._check_input(input_shape)
        k = len(self.filters)
        previous = None
        for j in range(k):
            u = tuple(input_shape["encoder_first"][j])
            att_in = u if j == 0 else (*u[:3], u[3] + previous[3])
            self.encoder_attention[j].build(att_in)
            p = tuple(input_shape["encoder_last"][j])
            self.encoder_convs[j].build((*p[:3], self.encoder_attention[j].width))
            conv_out = self.encoder_convs[j].compute_output_shape(p)
            previous = (conv_out[0], _half(conv_out[1]), _half(conv_out[2]), conv_out[3])
        for step in range(k):
            up = tuple(input_shape["decoder_unpooled"][step])
            upsampled = (up[0], up[1], up[2], previous[3])
            self.decoder_convs[step].build(upsampled)
            conv_out = self.decoder_convs[step].compute_output_shape(upsampled)
            self.decoder_attention[step].build((*up[:3], up[3] + conv_out[3]))
            previous = tuple(input_shape["decoder_last"][step])
        segnet._build_conv(self.prediction_conv, previous, self.initializer, _offset(self.seed, 200))
        segnet._build_conv(self.prediction, self.prediction_conv.compute_output_shape(previous), self.initializer,
                           _offset(self.seed, 201))
        self.built = True

    def call(self, inputs, training=None):
        k = len(self.filters)
        x = None
        for j in range(k):
            u, p = inputs["encoder_first"][j], inputs["encoder_last"][j]
            mask = self.encoder_attention[j](u if j == 0 else keras.ops.concatenate([u, x], axis=-1), training=training)
            x = self.encoder_convs[j](mask * p, training=training)
            x = keras.ops.max_pool(x, 2, 2, "valid", data_format="channels_last")
        for step in range(k):
            up, d = inputs["decoder_unpooled"][step], inputs["decoder_last"][step]
            x = _upsample_align_corners(x)
            x = self.decoder_convs[step](x, training=training)
            mask = self.decoder_attention[step](keras.ops.concatenate([up, x], axis=-1), training=training)
            x = mask * d
        x = self.prediction(self.prediction_conv(x))
        if self.output_activation == "l2_normalize":
            x = engine_ops.l2_normalize(x, axis=-1, epsilon=1e-12)
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape["encoder_first"][0]
        return (b, h, w, self.num_outputs)

    def get_config(self):
        return {
            **super().get_config(), "num_outputs": self.num_outputs, "output_activation": self.output_activation,
            "filters": list(self.filters), "convs_per_block": list(self.convs_per_block), "seed": self.seed,
            "initializer": self.initializer,
        }


def _upsample_align_corners(x):
    """2x bilinear upsampling with align_corners=True (PyTorch's `F.interpolate(..., align_corners=True)`).

    Backend-specific (no `keras.ops` equivalent): `mtl_tf.backend.ops.upsample2x_align_corners`.
    """
    return engine_ops.upsample2x_align_corners(x)


def _half(size):
    return None if size is None else size // 2


def _double(size):
    return None if size is None else size * 2


def mtan_backbone(*, name="mtan_backbone", **kwargs) -> MTANBackbone:
    """MTAN's shared SegNet; see :class:`MTANBackbone`."""
    return MTANBackbone(name=name, **kwargs)


def mtan_head(num_outputs, output_activation="linear", *, name=None, **kwargs) -> MTANHead:
    """One task's MTAN attention branch and prediction; see :class:`MTANHead`."""
    return MTANHead(num_outputs, output_activation=output_activation, name=name, **kwargs)
