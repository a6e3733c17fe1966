"""Dense-prediction losses of the scene-understanding benchmarks.

Sener & Koltun (NeurIPS 2018, section 4.3) train Cityscapes with a per-pixel
cross-entropy for semantic segmentation (void pixels ignored), an L1 loss on
the instance-centroid offsets of instance pixels and an L1 loss on the
disparity of pixels with a measurement. Lee & Son (section 4.2), on the MTAN
benchmark (Liu et al., CVPR 2019), use the pixel-wise cross-entropy, an L1 loss
for depth and an "element-wise dot product" for surface normals, i.e.
`1 - cos` between the predicted and the true normal, over valid pixels.

Every loss here is a `keras.losses.Loss` whose value is the mean over the
*valid* pixels of the batch a replica sees:

* `MaskedSparseCategoricalCrossentropy`: Keras'
  `SparseCategoricalCrossentropy(ignore_class=...)` (which already masks and
  averages over the kept pixels), with logits by default, labels of shape
  `[B, H, W]` or `[B, H, W, 1]` and a check that labels and logits have the
  same spatial size.
* `MaskedL1`: mean of `|y_pred - y_true|` over the valid pixels and the
  channels (depth / disparity `[B, H, W, 1]`, offsets `[B, H, W, 2]`).
* `NormalCosineLoss`: mean of `1 - <n_pred, n_true> / (|n_pred| |n_true|)`
  over the valid pixels. Both vectors are normalised inside the loss, so the
  value is a true cosine whatever the head outputs (SegNet's normal head is
  already L2-normalised; normalising twice changes nothing).

Validity of regression targets (one rule for the losses and for
`mtl_tf.metrics`): a pixel is invalid when any channel of its target is NaN,
or when every channel equals `invalid_value` (`None`: only NaN marks a
pixel invalid). Defaults: `0.0` for depth (0 means "no measurement" in
the MTAN depth maps) and for normals (MTAN marks pixels
without a normal by the zero vector). Instance offsets are exactly zero at an
instance's centroid and Cityscapes disparity can be zero, so their invalid
pixels are NaN (`invalid_value=None`; what `mtl_tf.data.cityscapes` writes)
or a sentinel such as `INVALID_OFFSET` (250.0 in every channel).

Distribution. Keras divides a `Loss` value by the number of replicas, and the
optimizer sums the replicas' gradients, so the applied gradient is that of the
mean over replicas of each replica's masked mean. This is Keras' own convention
for masked losses (`SparseCategoricalCrossentropy(ignore_class=...)` does the
same); it equals the masked mean over the global batch when every replica sees
the same number of valid pixels and is a mean of per-replica means otherwise.
Making it exact in general would need an all-reduce of the valid-pixel count
inside every loss, i.e. collectives with no fixed order between tasks, which
the step cannot afford (see `mtl_tf.balancers.base`).

Deviations: Sener's code and MTAN average over the valid pixels of the whole
batch on one GPU, which is what one replica computes here. A batch without
a valid pixel gives a loss of 0 (and a zero gradient) instead
of NaN.

Backends: written in `keras.ops` (the one backend-specific helper,
`l2_normalize`, is in `mtl_tf.backend.ops`); the values on JAX equal
TensorFlow's to float32 rounding (`tests/engines/test_same_values.py`).
"""

from __future__ import annotations

import math

import keras

from mtl_tf.backend import ops as engine_ops

__all__ = [
    "IGNORE_LABEL",
    "INVALID_DEPTH",
    "INVALID_NORMAL",
    "INVALID_OFFSET",
    "MaskedL1",
    "MaskedSparseCategoricalCrossentropy",
    "NormalCosineLoss",
    "align_target",
    "valid_pixel_mask",
]

IGNORE_LABEL = 250  # Sener's void label for Cityscapes train ids (REFERENCE.md section 3).
INVALID_DEPTH = 0.0
INVALID_NORMAL = 0.0
INVALID_OFFSET = 250.0


def _check_invalid_value(invalid_value):
    if invalid_value is None:
        return None
    value = float(invalid_value)
    if math.isnan(value):
        return None  # NaN always marks invalid pixels; no extra rule needed.
    return value


def align_target(y_true, y_pred, what):
    """`y_true` with a channel axis like `y_pred` ([B, H, W] -> [B, H, W, 1]), shapes checked.

    Raises a ValueError naming `what` when the known dimensions differ.
    """
    y_true = keras.ops.convert_to_tensor(y_true)
    y_pred = keras.ops.convert_to_tensor(y_pred)
    if _rank(y_true) is not None and _rank(y_pred) is not None:
        if _rank(y_true) == _rank(y_pred) - 1:
            y_true = y_true[..., None]
        if _rank(y_true) != _rank(y_pred) or not _compatible(y_true.shape, y_pred.shape):
            raise ValueError(
                f"{what}: the target has shape {tuple(y_true.shape)} and the prediction "
                f"{tuple(y_pred.shape)}; expected the same [batch, height, width, channels] "
                "(targets must be at the prediction's resolution)"
            )
    return y_true, y_pred


def _rank(x):
    """The number of axes of `x` (None when unknown, as a TensorFlow graph can leave it)."""
    shape = x.shape
    if shape is None:
        return None
    try:
        return len(shape)
    except (TypeError, ValueError):  # tf.TensorShape of unknown rank
        return None


def _compatible(shape_a, shape_b):
    """Whether two shapes of equal length agree on every axis known in both (`TensorShape.is_compatible_with`)."""
    shape_a, shape_b = tuple(shape_a), tuple(shape_b)
    return len(shape_a) == len(shape_b) and all(a is None or b is None or a == b for a, b in zip(shape_a, shape_b))


def valid_pixel_mask(y_true, invalid_value):
    """[B, H, W] bool: pixels whose target has no NaN and is not `invalid_value` in every channel."""
    invalid_value = _check_invalid_value(invalid_value)
    ops = keras.ops
    finite = ops.all(ops.logical_not(ops.isnan(y_true)), axis=-1)
    if invalid_value is None:
        return finite
    sentinel = ops.all(ops.equal(y_true, ops.cast(invalid_value, y_true.dtype)), axis=-1)
    return ops.logical_and(finite, ops.logical_not(sentinel))


def _masked_mean_values(per_pixel, valid):
    """Per-pixel values rescaled so that Keras' `sum_over_batch_size` gives the masked mean.

    Keras divides the sum of the returned values by their number (B*H*W) and
    then by the number of replicas; scaling the valid pixels by
    `count / valid_count` (and zeroing the others) turns that into the mean
    over the valid pixels, the same rescaling Keras applies for a Keras mask.
    """
    valid = keras.ops.cast(valid, per_pixel.dtype)
    total = keras.ops.cast(keras.ops.size(valid), per_pixel.dtype)
    scale = keras.ops.divide_no_nan(total, keras.ops.sum(valid))
    return per_pixel * valid * scale


@keras.saving.register_keras_serializable(package="mtl_tf")
class MaskedSparseCategoricalCrossentropy(keras.losses.SparseCategoricalCrossentropy):
    """Per-pixel cross-entropy averaged over the pixels whose label is not `ignore_class`.

    Args:
      ignore_class: the void label (`IGNORE_LABEL` = 250, Sener's; MTAN's data use -1).
      from_logits: whether predictions are logits (the nets here output logits).
    """

    def __init__(self, ignore_class=IGNORE_LABEL, from_logits=True, name="masked_cross_entropy", **kwargs):
        if ignore_class is None:
            raise ValueError("ignore_class must be an integer label; use "
                             "keras.losses.SparseCategoricalCrossentropy for labels without a void class")
        super().__init__(from_logits=from_logits, ignore_class=int(ignore_class), name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = keras.ops.convert_to_tensor(y_true)
        if _rank(y_true) == _rank(y_pred) and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        spatial_true, spatial_pred = y_true.shape[1:], y_pred.shape[1:-1]
        if _rank(y_true) is not None and not _compatible(spatial_true, spatial_pred):
            raise ValueError(
                f"{self.name}: labels of shape {tuple(y_true.shape)} do not match logits of shape "
                f"{tuple(y_pred.shape)}; expected labels [batch, height, width] (or with a trailing 1) "
                "at the logits' resolution"
            )
        return super().call(y_true, y_pred)


class _MaskedRegressionLoss(keras.losses.Loss):
    # Read by `uncertainty` (Kendall's regression form).
    likelihood = "regression"

    def __init__(self, invalid_value, name, **kwargs):
        super().__init__(name=name, **kwargs)
        _check_invalid_value(invalid_value)
        self.invalid_value = None if invalid_value is None else float(invalid_value)

    def per_pixel(self, y_true, y_pred):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        y_true, y_pred = align_target(y_true, y_pred, self.name)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        valid = valid_pixel_mask(y_true, self.invalid_value)
        # Invalid targets (NaN, sentinels) are replaced before any arithmetic,
        # so no NaN reaches the gradient through the masked-out branch.
        clean_true = keras.ops.where(valid[..., None], y_true, keras.ops.zeros_like(y_true))
        return _masked_mean_values(self.per_pixel(clean_true, y_pred), valid)

    def labelled_count(self, y_true, sample_weight=None):
        """The number of valid target pixels (sample-weighted): 0 means the task has no label here."""
        ops = keras.ops
        valid = ops.cast(valid_pixel_mask(ops.cast(y_true, "float32"), self.invalid_value), "float32")
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            while _rank(weight) is not None and _rank(weight) < _rank(valid):
                weight = weight[..., None]
            valid = valid * weight
        return ops.sum(valid)

    def get_config(self):
        return {**super().get_config(), "invalid_value": self.invalid_value}


@keras.saving.register_keras_serializable(package="mtl_tf")
class MaskedL1(_MaskedRegressionLoss):
    """Mean absolute error over valid pixels and channels.

    Args:
      invalid_value: target value (in every channel) that marks a pixel without
        a target: 0.0 for MTAN depth; `None` (NaN only) for Cityscapes
        disparity and offsets as `mtl_tf.data.cityscapes` writes them.
    """

    def __init__(self, invalid_value=INVALID_DEPTH, name="masked_l1", **kwargs):
        super().__init__(invalid_value, name=name, **kwargs)

    def per_pixel(self, y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_pred - y_true), axis=-1)


@keras.saving.register_keras_serializable(package="mtl_tf")
class NormalCosineLoss(_MaskedRegressionLoss):
    """Mean of `1 - cos(n_pred, n_true)` over valid pixels (normals in the last axis).

    Args:
      invalid_value: the value of every component of a missing normal (0.0:
        the zero vector, MTAN's convention); `None` for NaN only.
      epsilon: added to the squared norms before normalising, so a zero
        prediction gives a finite gradient.
    """

    def __init__(self, invalid_value=INVALID_NORMAL, epsilon=1e-12, name="normal_cosine", **kwargs):
        super().__init__(invalid_value, name=name, **kwargs)
        self.epsilon = float(epsilon)

    def per_pixel(self, y_true, y_pred):
        n_pred = engine_ops.l2_normalize(y_pred, axis=-1, epsilon=self.epsilon)
        n_true = engine_ops.l2_normalize(y_true, axis=-1, epsilon=self.epsilon)
        return 1.0 - keras.ops.sum(n_pred * n_true, axis=-1)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
