"""Dense metrics against hand-computed confusion matrices, errors and angles; Delta_m worked examples."""

import math

import keras
import numpy as np
import pytest

from mtl_tf import metrics
from mtl_tf.losses import INVALID_OFFSET


def _logits(class_ids, num_classes, rng):
    """Logits whose argmax is `class_ids`."""
    return (5.0 * np.eye(num_classes)[class_ids] + rng.uniform(0, 1, size=class_ids.shape + (num_classes,))).astype(
        "float32"
    )


# Two batches (the second at another size), void label 250:
#   batch 1 labels [[0, 0, 1], [2, 250, 1]], predictions [[0, 1, 1], [2, 0, 0]]
#   batch 2 labels [[1, 2, 2]],              predictions [[1, 2, 0]]
# (label, prediction) pairs: (0,0) (0,1) (1,1) (2,2) (1,0) | (1,1) (2,2) (2,0); the void pixel is dropped.
# Confusion matrix, rows = labels: [[1, 1, 0], [1, 2, 0], [1, 0, 2]].
# IoU = TP / (row + column - TP): class 0: 1 / (2 + 3 - 1) = 1/4, class 1: 2 / (3 + 3 - 2) = 1/2,
# class 2: 2 / (3 + 2 - 2) = 2/3; mIoU = (1/4 + 1/2 + 2/3) / 3 = 17/36; pixel accuracy = 5 / 8.
BATCHES = [
    (np.array([[[0, 0, 1], [2, 250, 1]]]), np.array([[[0, 1, 1], [2, 0, 0]]])),
    (np.array([[[1, 2, 2]]]), np.array([[[1, 2, 0]]])),
]
CONFUSION = np.array([[1, 1, 0], [1, 2, 0], [1, 0, 2]])


@pytest.mark.parametrize("num_classes", [3, 4])  # a 4th class absent from labels and predictions has no IoU
def test_confusion_matrix_metrics_by_hand(num_classes, rng):
    miou, accuracy = metrics.MeanIoU(num_classes), metrics.PixelAccuracy(num_classes)
    for labels, predicted in BATCHES:
        logits = _logits(predicted, num_classes, rng)
        miou.update_state(labels, logits)
        accuracy.update_state(labels[..., None], logits)  # [B, H, W, 1] labels too
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(miou.total_cm)[:3, :3], CONFUSION)
    assert float(miou.result()) == pytest.approx(17 / 36, rel=1e-5)
    assert float(accuracy.result()) == pytest.approx(5 / 8, rel=1e-6)
    miou.reset_state()
    assert float(miou.result()) == 0.0


def test_class_id_predictions_and_mtan_void_label():
    miou = metrics.MeanIoU(3, ignore_class=-1, sparse_y_pred=True)
    for labels, predicted in BATCHES:
        miou.update_state(np.where(labels == 250, -1, labels), predicted)
    assert float(miou.result()) == pytest.approx(17 / 36, rel=1e-5)


def test_per_image_weights_drop_an_image(rng):
    labels = np.array([[[0, 1]], [[1, 1]]])
    predicted = np.array([[[0, 1]], [[0, 0]]])
    accuracy = metrics.PixelAccuracy(2)
    accuracy.update_state(labels, _logits(predicted, 2, rng), sample_weight=np.array([1, 0]))
    assert float(accuracy.result()) == 1.0


def test_segmentation_shape_mismatch_is_named(rng):
    with pytest.raises(ValueError, match="at the predictions' resolution"):
        metrics.MeanIoU(3).update_state(np.zeros((1, 4, 4), "int32"), np.zeros((1, 2, 2, 3), "float32"))


def test_offset_error_accumulates_over_pixels_not_batches():
    # Batch 1: (1, 2) vs (0, 0) -> |e| (1, 2), e^2 (1, 4); a non-instance pixel; (0, 0) vs (3, -1) -> (3, 1), (9, 1).
    # Batch 2: (2, 2) vs (2, 0) -> (0, 2), (0, 4).
    # L1 = (1.5 + 2 + 1) / 3 = 1.5 (the mean of batch means would be 1.375); MSE = (2.5 + 5 + 2) / 3.
    first = (np.array([[[[1, 2], [INVALID_OFFSET] * 2, [0, 0]]]], "float32"), np.array([[[[0, 0], [7, 7], [3, -1]]]], "float32"))
    second = (np.array([[[[2, 2]]]], "float32"), np.array([[[[2, 0]]]], "float32"))
    l1, mse = metrics.OffsetError("l1", invalid_value=INVALID_OFFSET), metrics.OffsetError("mse", invalid_value=INVALID_OFFSET)
    for y_true, y_pred in (first, second):
        l1.update_state(y_true, y_pred)
        mse.update_state(y_true, y_pred)
    assert float(l1.result()) == pytest.approx(1.5)
    assert float(mse.result()) == pytest.approx(9.5 / 3)
    assert l1.name == "offset_l1" and not metrics.OffsetError.higher_is_better
    # NaN marks non-instance pixels too (the Cityscapes loader's convention), with the default invalid_value.
    nan_l1 = metrics.OffsetError("l1")
    for y_true, y_pred in (first, second):
        nan_l1.update_state(np.where(y_true == INVALID_OFFSET, np.nan, y_true), y_pred)
    assert float(nan_l1.result()) == pytest.approx(1.5)


def test_depth_errors_by_hand():
    # Batch 1: depths [2, 0 (missing), 4] vs [1, 5, 5]: |e| 1 and 1, relative 1/2 and 1/4.
    # Batch 2: depth 1 vs 3: |e| 2, relative 2.   abs = 4/3, rel = 2.75/3.
    batches = [
        (np.array([[[2.0, 0.0, 4.0]]], "float32")[..., None], np.array([[[1.0, 5.0, 5.0]]], "float32")[..., None]),
        (np.array([[[1.0]]], "float32"), np.array([[[3.0]]], "float32")[..., None]),  # [B, H, W] target
    ]
    absolute, relative = metrics.DepthAbsoluteError(), metrics.DepthRelativeError()
    for y_true, y_pred in batches:
        absolute.update_state(y_true, y_pred)
        relative.update_state(y_true, y_pred)
    assert float(absolute.result()) == pytest.approx(4 / 3)
    assert float(relative.result()) == pytest.approx(2.75 / 3)


def _unit(degrees_from_x, plane="xy"):
    r = math.radians(degrees_from_x)
    return [math.cos(r), math.sin(r), 0.0] if plane == "xy" else [math.sin(r), 0.0, math.cos(r)]


# Pairs (true, predicted) with known angles; one target has no normal.
NORMAL_PAIRS = [
    ([0, 0, 1], [0, 0, 1], 0.0),
    ([0, 0, 1], [0, 1, 1], 45.0),
    ([1, 0, 0], [0, 2, 0], 90.0),
    ([0, 0, 1], _unit(10, "xz"), 10.0),
    ([0, 0, 0], [1, 0, 0], None),
    ([0, 1, 0], [0, -1, 0], 180.0),
    ([1, 0, 0], [3 * c for c in _unit(25)], 25.0),
]


def test_normal_angles_by_hand():
    y_true = np.array([[p[0] for p in NORMAL_PAIRS]], "float32")[:, None]  # [1, 1, 7, 3]
    y_pred = np.array([[p[1] for p in NORMAL_PAIRS]], "float32")[:, None]
    angles = keras.ops.convert_to_numpy(metrics.normal_angles_degrees(y_true, y_pred))[0, 0]
    known = [p[2] for p in NORMAL_PAIRS]
    np.testing.assert_allclose([a for a, k in zip(angles, known) if k is not None], [k for k in known if k is not None], atol=1e-4)
    # Valid angles 0, 45, 90, 10, 180, 25: mean 350/6; median (25 + 45) / 2 = 35;
    # within 11.25: {0, 10}; within 22.5: {0, 10}; within 30: {0, 10, 25}.
    expected = {
        metrics.NormalAngleMean(): 350 / 6,
        metrics.NormalAngleMedian(): 35.0,
        metrics.NormalAngleWithin(11.25): 2 / 6,
        metrics.NormalAngleWithin(22.5): 2 / 6,
        metrics.NormalAngleWithin(30): 3 / 6,
    }
    for metric, value in expected.items():
        metric.update_state(y_true[:, :, :4], y_pred[:, :, :4])  # two batches
        metric.update_state(y_true[:, :, 4:], y_pred[:, :, 4:])
        assert float(metric.result()) == pytest.approx(value, abs=0.01 if "median" in metric.name else 1e-4), metric.name
    assert [m.name for m in expected][2:] == ["normal_within_11.25", "normal_within_22.5", "normal_within_30"]


@pytest.mark.parametrize("count", [4001, 4000])  # odd and even numbers of valid pixels
def test_histogram_median_within_bin_width_of_numpy(count, rng):
    target = rng.normal(size=(count, 3)).astype("float32")
    prediction = (target + rng.normal(scale=0.6, size=target.shape)).astype("float32")
    angles = keras.ops.convert_to_numpy(metrics.normal_angles_degrees(target, prediction))
    median = metrics.NormalAngleMedian(bin_width=0.01)
    for chunk in np.array_split(np.arange(count), 3):
        median.update_state(target[chunk][None, None], prediction[chunk][None, None])
    assert abs(float(median.result()) - np.median(angles)) <= 0.01
    coarse = metrics.NormalAngleMedian(bin_width=1.0)
    coarse.update_state(target[None, None], prediction[None, None])
    assert abs(float(coarse.result()) - np.median(angles)) <= 1.0


def test_bad_bin_width_is_named():
    with pytest.raises(ValueError, match="whole number of bins"):
        metrics.NormalAngleMedian(bin_width=0.07)


ALL_METRICS = [
    lambda: metrics.MeanIoU(3),
    lambda: metrics.PixelAccuracy(3, ignore_class=-1),
    lambda: metrics.OffsetError("mse"),
    lambda: metrics.DepthAbsoluteError(),
    lambda: metrics.DepthRelativeError(invalid_value=None),
    lambda: metrics.NormalAngleMean(),
    lambda: metrics.NormalAngleMedian(bin_width=0.5),
    lambda: metrics.NormalAngleWithin(22.5),
]


def _batch(metric, rng):
    if isinstance(metric, (metrics.MeanIoU, metrics.PixelAccuracy)):
        labels = rng.integers(0, 3, size=(2, 4, 6))
        labels[0, 0] = 250
        return labels, rng.normal(size=(2, 4, 6, 3)).astype("float32")
    channels = 2 if isinstance(metric, metrics.OffsetError) else 3 if "normal" in metric.name else 1
    target = rng.uniform(0.5, 2.0, size=(2, 4, 6, channels)).astype("float32")
    target[1, 2] = 0.0
    return target, rng.normal(size=target.shape).astype("float32")


@pytest.mark.parametrize("make", ALL_METRICS, ids=lambda m: type(m()).__name__)
def test_config_round_trip_and_xla(make, rng):
    metric = make()
    y_true, y_pred = _batch(metric, rng)
    metric.update_state(y_true, y_pred)
    # MultiTaskModel renames metrics through get_config / from_config.
    config = metric.get_config()
    config["name"] = "task_" + config["name"]
    clone = type(metric).from_config(config)
    assert clone.name == "task_" + metric.name
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(clone.update_state, jit_compile=True)
        compiled(tf.constant(y_true), tf.constant(y_pred))
    else:  # the XLA check is TensorFlow's (tf.function); elsewhere the eager update must agree
        clone.update_state(keras.ops.convert_to_tensor(y_true), keras.ops.convert_to_tensor(y_pred))
    assert float(clone.result()) == pytest.approx(float(metric.result()), rel=1e-5, abs=1e-6)
    assert isinstance(type(metric).higher_is_better, bool)


def test_delta_m_worked_examples():
    # Higher-is-better a: 60 vs 50 -> -(60 - 50) / 50 = -0.2; lower-is-better b: 0.5 vs 0.4 -> +0.25.
    # Delta_m = 100 * (-0.2 + 0.25) / 2 = 2.5 (worse than the baseline on average).
    assert metrics.delta_m({"a": 60, "b": 0.5}, {"a": 50, "b": 0.4}, {"a": True, "b": False}) == pytest.approx(2.5)
    # Lee & Son Table 2 (Cityscapes), "Proposed" against "Ordinary" as if it were the baseline:
    # mIoU 53.80 vs 52.47 and pixel accuracy 90.96 vs 90.59 (higher is better),
    # abs. error 0.0140 vs 0.0147 and rel. error 22.99 vs 24.62 (lower is better).
    terms = [-(53.80 - 52.47) / 52.47, -(90.96 - 90.59) / 90.59, (0.0140 - 0.0147) / 0.0147, (22.99 - 24.62) / 24.62]
    value = metrics.delta_m(
        {"miou": 53.80, "pixel_accuracy": 90.96, "abs": 0.0140, "rel": 22.99},
        {"miou": 52.47, "pixel_accuracy": 90.59, "abs": 0.0147, "rel": 24.62},
        {"miou": True, "pixel_accuracy": True, "abs": False, "rel": False},
    )
    assert value == pytest.approx(100 * sum(terms) / 4) and value == pytest.approx(-3.5814, abs=1e-4)


def test_delta_m_errors_name_the_problem():
    with pytest.raises(ValueError, match="missing: \\['b'\\]"):
        metrics.delta_m({"a": 1.0, "b": 2.0}, {"a": 1.0}, {"a": True, "b": False})
    with pytest.raises(ValueError, match="baseline of metric 'a' is 0"):
        metrics.delta_m({"a": 1.0}, {"a": 0.0}, {"a": True})
    with pytest.raises(ValueError, match="missing"):
        metrics.delta_m({"a": 1.0}, {"a": 2.0}, {})
