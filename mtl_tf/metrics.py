"""Dense-prediction metrics of the scene-understanding benchmarks, and Delta_m.

Metrics are `keras.metrics.Metric` objects that accumulate exact sufficient
statistics over batches (and replicas: Keras sums metric variables across
replicas), so the value after an epoch is the value on the whole data set, not
a mean of per-batch values:

* `MeanIoU` and `PixelAccuracy` (Sener Table 4, Lee & Son Tables 2 and 3)
  subclass `keras.metrics.MeanIoU`, which accumulates an integer confusion
  matrix and already supports a void label (`ignore_class`): pixels with that
  label are left out, and so are labels outside `[0, num_classes)` (Keras
  drops them). Predictions are logits `[B, H, W, K]` (argmax taken) or class
  ids (`sparse_y_pred=True`); labels `[B, H, W]` or `[B, H, W, 1]`.
  mIoU is the mean IoU over the classes that occur in the labels or in the
  predictions (Keras' rule; a class absent from both has no IoU), pixel
  accuracy is trace / sum of the confusion matrix.
* `OffsetError` (Sener's instance task): mean over instance pixels and the
  two channels of `|e|` (`kind="l1"`) or `e**2` (`kind="mse"`).
* `DepthAbsoluteError` (mean `|d - d*|`) and `DepthRelativeError` (mean
  `|d - d*| / d*`) over pixels with a depth (Lee & Son), also used for
  Sener's disparity error.
* `NormalAngleMean`, `NormalAngleMedian` and `NormalAngleWithin(t)` (share
  of valid pixels with an angle below t degrees; Lee & Son use 11.25, 22.5 and
  30) on the angle between predicted and true normals, in degrees.

Every metric says whether higher is better (`higher_is_better`, and Keras'
`_direction`, which `EarlyStopping` / `ModelCheckpoint` with `mode="auto"` read).

Valid pixels follow one rule with `mtl_tf.losses`: a target pixel is invalid
when a channel is NaN or every channel equals `invalid_value`. Sums and
counts are accumulated in float64, so the counts stay exact beyond 2**24
pixels.

Backends and precision: the metrics are written in `keras.ops` (the one
backend-specific helper, `l2_normalize`, is in `mtl_tf.backend.ops`) and give
TensorFlow's values on JAX (`tests/engines/test_same_values.py`). JAX without
`jax_enable_x64` (its default; TPUs have no float64) turns the float64
accumulators into float32, with JAX's warning: sums then carry float32
rounding (relative 6e-8 per addition) and pixel counts stay exact up to 2**24
(16.7M) valid pixels per accumulator -- about 500 images of 128x256 for a
depth or normal metric -- beyond which the counts round. Set
`jax_enable_x64` (`JAX_ENABLE_X64=1`) to evaluate larger sets exactly on JAX.
The confusion matrix of `MeanIoU` / `PixelAccuracy` is Keras' own, in the
metric's dtype (float32 by default) on every backend.

The angle is `2 * atan2(|a - b|, |a + b|)` on the unit vectors (Kahan's
formula: accurate near 0 and 180 degrees, where `acos` of a float32 dot
product loses up to ~0.02 degrees). A zero prediction counts as 90 degrees
from every normal.

The median cannot be accumulated exactly in constant memory, so
`NormalAngleMedian` keeps a histogram of the angles (`bin_width` degrees per
bin over [0, 180]; 0.01 gives 18,000 bins) and reads the middle order
statistic(s) from it, placing each inside its bin by linear interpolation. Each
order statistic lies in the bin the histogram finds, so the result is within
`bin_width` degrees of the exact median (`numpy.median` of all valid
angles; with an even count, the mean of the two middle ones).

Deviations from the reference code: MTAN averages per-batch values of the depth
and normal errors (and per-batch medians) over the epoch; Sener's code averages
per-batch errors too. Both are batch-size dependent; the values here are those
of the whole evaluation set.

`delta_m(results, baseline, higher_is_better)` is the multi-task performance
of REFERENCE.md section 3 (introduced by Maninis et al., CVPR 2019):
`100 * mean_k (-1)**s_k (M_k - B_k) / B_k` with `s_k = 1` when higher is
better, against single-task baselines `B`. Lower is better; negative means
better than the single-task models on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np

from mtl_tf.backend import ops as engine_ops
from mtl_tf.losses import IGNORE_LABEL, INVALID_DEPTH, INVALID_NORMAL, _compatible, _rank, align_target, valid_pixel_mask

__all__ = [
    "DepthAbsoluteError",
    "DepthRelativeError",
    "MeanIoU",
    "NormalAngleMean",
    "NormalAngleMedian",
    "NormalAngleWithin",
    "OffsetError",
    "PixelAccuracy",
    "delta_m",
    "normal_angles_degrees",
]


# -- segmentation ------------------------------------------------------------------------


class _ConfusionMatrixMetric(keras.metrics.MeanIoU):
    """Keras' confusion matrix with a void label, logits by default and per-image weights."""

    higher_is_better = True

    def __init__(self, num_classes, ignore_class=IGNORE_LABEL, sparse_y_pred=False, name=None, dtype=None, **kwargs):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
        super().__init__(
            num_classes=int(num_classes),
            ignore_class=None if ignore_class is None else int(ignore_class),
            sparse_y_pred=bool(sparse_y_pred),
            name=name,
            dtype=dtype,
            **kwargs,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if _rank(y_true) is not None and _rank(y_true) >= 2 and y_true.shape[-1] == 1 and (
            _rank(y_true) == _rank(y_pred) + (1 if self.sparse_y_pred else 0)
        ):
            y_true = y_true[..., 0]
        spatial_pred = y_pred.shape if self.sparse_y_pred else y_pred.shape[:-1]
        if _rank(y_true) is not None and not _compatible(y_true.shape, spatial_pred):
            raise ValueError(
                f"{self.name}: labels of shape {tuple(y_true.shape)} do not match predictions of shape "
                f"{tuple(y_pred.shape)}; expected labels [batch, height, width] (or with a trailing 1) "
                "at the predictions' resolution, and logits with the classes last"
            )
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            # Per-image weights [B] apply to every pixel of the image.
            while _rank(sample_weight) < _rank(y_true):
                sample_weight = sample_weight[..., None]
            sample_weight = ops.broadcast_to(sample_weight, ops.shape(y_true))
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("target_class_ids", None)
        return config


@keras.saving.register_keras_serializable(package="mtl_tf")
class MeanIoU(_ConfusionMatrixMetric):
    """Mean intersection over union (in [0, 1]) from the accumulated confusion matrix.

    Args:
      num_classes: number of classes (19 for Sener's Cityscapes, 7 / 13 for MTAN's).
      ignore_class: the void label (`IGNORE_LABEL` = 250; MTAN's data use -1).
      sparse_y_pred: True if predictions are class ids rather than logits.
    """

    def __init__(self, num_classes, ignore_class=IGNORE_LABEL, sparse_y_pred=False, name="miou", dtype=None, **kwargs):
        super().__init__(num_classes, ignore_class, sparse_y_pred, name=name, dtype=dtype, **kwargs)


@keras.saving.register_keras_serializable(package="mtl_tf")
class PixelAccuracy(_ConfusionMatrixMetric):
    """Share of non-void pixels whose predicted class is right (trace / sum of the confusion matrix)."""

    def __init__(
        self, num_classes, ignore_class=IGNORE_LABEL, sparse_y_pred=False, name="pixel_accuracy", dtype=None, **kwargs
    ):
        super().__init__(num_classes, ignore_class, sparse_y_pred, name=name, dtype=dtype, **kwargs)

    def result(self):
        ops = keras.ops
        matrix = ops.cast(self.total_cm, "float64")
        return ops.cast(ops.divide_no_nan(ops.trace(matrix), ops.sum(matrix)), "float32")


# -- masked regression errors ----------------------------------------------------------------


class _MaskedMean(keras.metrics.Metric):
    """Mean of a per-pixel value over valid pixels, accumulated as float64 sum and count."""

    higher_is_better = False

    def __init__(self, invalid_value, name, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        # Keras' own direction flag: callbacks with mode="auto" (EarlyStopping,
        # ModelCheckpoint) read it to know whether higher is better.
        self._direction = "up" if self.higher_is_better else "down"
        if invalid_value is not None:
            invalid_value = float(invalid_value)
            if math.isnan(invalid_value):
                invalid_value = None
        self.invalid_value = invalid_value
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def per_pixel(self, y_true, y_pred):
        """[B, H, W] values at every pixel (targets of invalid pixels are zeros)."""
        raise NotImplementedError

    def _valid_values(self, y_true, y_pred, sample_weight):
        y_true, y_pred = align_target(y_true, y_pred, self.name)
        ops = keras.ops
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        valid = valid_pixel_mask(y_true, self.invalid_value)
        clean_true = ops.where(valid[..., None], y_true, ops.zeros_like(y_true))
        weights = ops.cast(valid, "float64")
        if sample_weight is not None:
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float64")
            while _rank(sample_weight) < _rank(weights):
                sample_weight = sample_weight[..., None]
            weights = weights * sample_weight
        values = self.per_pixel(clean_true, y_pred)
        # Zero the invalid pixels' values too: a NaN there must not leak into the sum.
        values = ops.where(valid, values, ops.zeros_like(values))
        return values, weights

    def update_state(self, y_true, y_pred, sample_weight=None):
        values, weights = self._valid_values(y_true, y_pred, sample_weight)
        self.total.assign_add(keras.ops.sum(keras.ops.cast(values, "float64") * weights))
        self.count.assign_add(keras.ops.sum(weights))

    def result(self):
        return keras.ops.cast(keras.ops.divide_no_nan(self.total, self.count), self.dtype)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "invalid_value": self.invalid_value}


@keras.saving.register_keras_serializable(package="mtl_tf")
class OffsetError(_MaskedMean):
    """Instance-offset error over instance pixels: mean of `|e|` or `e**2` over pixels and channels.

    Args:
      kind: "l1" or "mse".
      invalid_value: the target value (every channel) of non-instance pixels,
        e.g. `INVALID_OFFSET`; None (default): only NaN targets are invalid.
    """

    KINDS = ("l1", "mse")

    def __init__(self, kind="l1", invalid_value=None, name=None, dtype=None, **kwargs):
        if kind not in self.KINDS:
            raise ValueError(f"kind={kind!r} is not valid; expected one of {list(self.KINDS)}")
        super().__init__(invalid_value, name=name or f"offset_{kind}", dtype=dtype, **kwargs)
        self.kind = kind

    def per_pixel(self, y_true, y_pred):
        error = y_pred - y_true
        per_channel = keras.ops.abs(error) if self.kind == "l1" else keras.ops.square(error)
        return keras.ops.mean(per_channel, axis=-1)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package="mtl_tf")
class DepthAbsoluteError(_MaskedMean):
    """Mean `|d - d*|` over pixels with a depth (target != `invalid_value`, 0 by default)."""

    def __init__(self, invalid_value=INVALID_DEPTH, name="depth_abs_error", dtype=None, **kwargs):
        super().__init__(invalid_value, name=name, dtype=dtype, **kwargs)

    def per_pixel(self, y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_pred - y_true), axis=-1)


@keras.saving.register_keras_serializable(package="mtl_tf")
class DepthRelativeError(_MaskedMean):
    """Mean `|d - d*| / |d*|` over pixels with a depth (a zero target contributes 0)."""

    def __init__(self, invalid_value=INVALID_DEPTH, name="depth_rel_error", dtype=None, **kwargs):
        super().__init__(invalid_value, name=name, dtype=dtype, **kwargs)

    def per_pixel(self, y_true, y_pred):
        ops = keras.ops
        return ops.mean(ops.divide_no_nan(ops.abs(y_pred - y_true), ops.abs(y_true)), axis=-1)


# -- surface normals ----------------------------------------------------------------------


def normal_angles_degrees(n_true, n_pred):
    """Angle in degrees between vectors along the last axis (any norms; zero prediction -> 90)."""
    ops = keras.ops
    a = engine_ops.l2_normalize(ops.cast(n_pred, "float32"), axis=-1)
    b = engine_ops.l2_normalize(ops.cast(n_true, "float32"), axis=-1)
    radians = 2.0 * ops.arctan2(_euclidean_norm(a - b), _euclidean_norm(a + b))
    return radians * (180.0 / math.pi)


def _euclidean_norm(x):
    """`sqrt(sum(x * x))` over the last axis, the ops of `tf.norm(x, axis=-1)`."""
    return keras.ops.sqrt(keras.ops.sum(x * x, axis=-1))


class _NormalAngleMetric(_MaskedMean):
    def __init__(self, invalid_value, name, dtype=None, **kwargs):
        super().__init__(invalid_value, name=name, dtype=dtype, **kwargs)

    def angles(self, y_true, y_pred):
        return normal_angles_degrees(y_true, y_pred)


@keras.saving.register_keras_serializable(package="mtl_tf")
class NormalAngleMean(_NormalAngleMetric):
    """Mean angle (degrees) between predicted and true normals over valid pixels."""

    def __init__(self, invalid_value=INVALID_NORMAL, name="normal_angle_mean", dtype=None, **kwargs):
        super().__init__(invalid_value, name=name, dtype=dtype, **kwargs)

    def per_pixel(self, y_true, y_pred):
        return self.angles(y_true, y_pred)


@keras.saving.register_keras_serializable(package="mtl_tf")
class NormalAngleWithin(_NormalAngleMetric):
    """Share (in [0, 1]) of valid pixels whose angle is below `threshold` degrees."""

    higher_is_better = True

    def __init__(self, threshold=11.25, invalid_value=INVALID_NORMAL, name=None, dtype=None, **kwargs):
        threshold = float(threshold)
        if not 0.0 < threshold <= 180.0:
            raise ValueError(f"threshold must be in (0, 180] degrees; got {threshold}")
        super().__init__(invalid_value, name=name or f"normal_within_{threshold:g}", dtype=dtype, **kwargs)
        self.threshold = threshold

    def per_pixel(self, y_true, y_pred):
        return keras.ops.cast(self.angles(y_true, y_pred) < self.threshold, "float32")

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="mtl_tf")
class NormalAngleMedian(_NormalAngleMetric):
    """Median angle (degrees) over valid pixels, from a histogram; within `bin_width` of the exact median.

    Args:
      bin_width: histogram bin in degrees; 180 / bin_width must be an integer
        (0.01 -> 18,000 float64 counters).
    """

    def __init__(self, bin_width=0.01, invalid_value=INVALID_NORMAL, name="normal_angle_median", dtype=None, **kwargs):
        bin_width = float(bin_width)
        num_bins = 180.0 / bin_width if bin_width > 0 else float("nan")
        if not (bin_width > 0 and abs(num_bins - round(num_bins)) < 1e-6 * num_bins):
            raise ValueError(f"bin_width must divide 180 degrees into a whole number of bins; got {bin_width}")
        super().__init__(invalid_value, name=name, dtype=dtype, **kwargs)
        self.bin_width = bin_width
        self.num_bins = int(round(num_bins))
        self.histogram = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", dtype="float64", name="histogram"
        )

    def per_pixel(self, y_true, y_pred):
        return self.angles(y_true, y_pred)

    def update_state(self, y_true, y_pred, sample_weight=None):
        angles, weights = self._valid_values(y_true, y_pred, sample_weight)
        ops = keras.ops
        bins = ops.clip(ops.cast(ops.floor(angles / self.bin_width), "int32"), 0, self.num_bins - 1)
        counts = ops.segment_sum(ops.reshape(weights, [-1]), ops.reshape(bins, [-1]), num_segments=self.num_bins)
        self.histogram.assign_add(counts)
        self.count.assign_add(ops.sum(weights))

    def result(self):
        ops = keras.ops
        counts = ops.convert_to_tensor(self.histogram)
        cumulative = ops.cumsum(counts)
        n = ops.convert_to_tensor(self.count)

        def order_statistic(rank):
            # The rank-th smallest angle (1-based) lies in the first bin whose
            # cumulative count reaches rank; spread that bin's angles evenly.
            index = ops.minimum(ops.sum(ops.cast(cumulative < rank, "int32")), self.num_bins - 1)
            in_bin = ops.take(counts, index)
            before = ops.take(cumulative, index) - in_bin
            fraction = ops.clip(ops.divide_no_nan(rank - before - 0.5, in_bin), 0.0, 1.0)
            return (ops.cast(index, counts.dtype) + fraction) * self.bin_width

        lower = order_statistic(ops.floor((n + 1.0) / 2.0))
        upper = order_statistic(ops.floor(n / 2.0) + 1.0)
        median = ops.where(n > 0, 0.5 * (lower + upper), ops.zeros_like(n))
        return ops.cast(median, self.dtype)

    def reset_state(self):
        super().reset_state()
        self.histogram.assign(keras.ops.zeros(self.histogram.shape, self.histogram.dtype))

    def get_config(self):
        return {**super().get_config(), "bin_width": self.bin_width}


# -- multi-task performance --------------------------------------------------------------


def delta_m(results: Mapping[str, float], baseline: Mapping[str, float], higher_is_better: Mapping[str, bool]) -> float:
    """Delta_m in percent: `100 * mean_k (-1)**s_k (M_k - B_k) / B_k`; lower is better.

    Args:
      results: metric name -> value of the multi-task model.
      baseline: metric name -> value of the single-task baseline (same names, non-zero).
      higher_is_better: metric name -> True when a higher value is better
        (mIoU, pixel accuracy, share within t degrees), False for errors.

    Values must be in the same units in both dicts (e.g. mIoU as a fraction in both).
    """
    for what, mapping in (("results", results), ("baseline", baseline), ("higher_is_better", higher_is_better)):
        if not isinstance(mapping, Mapping):
            raise TypeError(f"delta_m: {what} must be a mapping metric name -> value; got {type(mapping).__name__}")
    names = list(results)
    if not names:
        raise ValueError("delta_m: results is empty; expected at least one metric")
    for what, mapping in (("baseline", baseline), ("higher_is_better", higher_is_better)):
        missing = [k for k in names if k not in mapping]
        extra = sorted(set(mapping) - set(names))
        if missing or (extra and what == "baseline"):
            raise ValueError(
                f"delta_m: {what} has metrics {sorted(mapping)} but results has {sorted(names)}"
                + (f"; missing: {missing}" if missing else "")
                + (f"; not in results: {extra}" if extra and what == "baseline" else "")
            )
    terms = []
    for name in names:
        value, base = float(results[name]), float(baseline[name])
        if not (math.isfinite(value) and math.isfinite(base)):
            raise ValueError(f"delta_m: metric {name!r} is {value} (result) / {base} (baseline); expected finite values")
        if base == 0.0:
            raise ValueError(f"delta_m: the baseline of metric {name!r} is 0; a relative change needs a non-zero baseline")
        sign = -1.0 if bool(higher_is_better[name]) else 1.0
        terms.append(sign * (value - base) / base)
    return float(100.0 * np.mean(terms))
