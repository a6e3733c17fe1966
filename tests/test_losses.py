"""Masked dense losses against NumPy, with void labels, sentinels and NaN targets."""

import keras
import numpy as np
import pytest

from mtl_tf import losses

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
tensorflow_only = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="uses tf.GradientTape / tf.distribute (the TensorFlow engine's tools)"
)


def _np_cross_entropy(labels, logits, ignore):
    valid = labels != ignore
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -(picked * valid).sum() / valid.sum()


def _value(loss, y_true, y_pred):
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))


def test_cross_entropy_matches_numpy_and_ignores_void(rng):
    logits = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(2, 4, 5))
    labels[0, 0, :] = 250
    labels[1, 2, 1:4] = 250
    loss = losses.MaskedSparseCategoricalCrossentropy()
    expected = _np_cross_entropy(labels, logits, 250)
    assert _value(loss, labels, logits) == pytest.approx(expected, rel=1e-5)
    assert _value(loss, labels[..., None], logits) == pytest.approx(expected, rel=1e-5)
    # Changing a void pixel's logits changes nothing.
    moved = logits.copy()
    moved[0, 0] += 100.0
    assert _value(loss, labels, moved) == pytest.approx(expected, rel=1e-5)
    # MTAN's void label -1.
    minus = np.where(labels == 250, -1, labels)
    assert _value(losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1), minus, logits) == pytest.approx(
        expected, rel=1e-5
    )


def test_cross_entropy_all_void_is_zero(rng):
    logits = rng.normal(size=(1, 2, 2, 4)).astype("float32")
    assert _value(losses.MaskedSparseCategoricalCrossentropy(), np.full((1, 2, 2), 250), logits) == 0.0


def test_cross_entropy_rejects_labels_at_another_resolution(rng):
    with pytest.raises(ValueError, match="at the logits' resolution"):
        losses.MaskedSparseCategoricalCrossentropy()(np.zeros((1, 8, 8), "int32"), np.zeros((1, 4, 4, 3), "float32"))


def test_masked_l1_depth_with_zeros_and_nan(rng):
    target = rng.uniform(1.0, 5.0, size=(2, 3, 4, 1)).astype("float32")
    target[0, 0, 0] = 0.0
    target[1, 2, :] = 0.0
    target[1, 0, 1] = np.nan
    prediction = rng.normal(size=target.shape).astype("float32")
    valid = np.isfinite(target[..., 0]) & (target[..., 0] != 0)
    expected = np.abs(prediction - target)[..., 0][valid].mean()
    assert _value(losses.MaskedL1(), target, prediction) == pytest.approx(expected, rel=1e-6)
    assert _value(losses.MaskedL1(), target[..., 0], prediction) == pytest.approx(expected, rel=1e-6)


def test_masked_l1_offsets_use_every_channel_rule(rng):
    target = rng.normal(size=(1, 2, 3, 2)).astype("float32")
    target[0, 0, 0] = losses.INVALID_OFFSET  # a non-instance pixel
    target[0, 1, 1] = (0.0, 0.0)  # the centroid pixel of an instance: valid
    target[0, 1, 2] = (losses.INVALID_OFFSET, 1.0)  # one channel equal to the sentinel: still valid
    prediction = rng.normal(size=target.shape).astype("float32")
    per_pixel = np.abs(prediction - target).mean(axis=-1)
    expected = np.delete(per_pixel.reshape(-1), 0).mean()
    assert _value(losses.MaskedL1(invalid_value=losses.INVALID_OFFSET), target, prediction) == pytest.approx(
        expected, rel=1e-6
    )
    # invalid_value=None: every finite pixel counts.
    assert _value(losses.MaskedL1(invalid_value=None), target, prediction) == pytest.approx(per_pixel.mean(), rel=1e-6)


def test_normal_cosine_loss(rng):
    target = rng.normal(size=(2, 3, 3, 3)).astype("float32")
    target /= np.linalg.norm(target, axis=-1, keepdims=True)
    target[0, 1, 1] = 0.0  # no normal
    prediction = 3.0 * rng.normal(size=target.shape).astype("float32")  # not unit vectors
    valid = np.any(target != 0, axis=-1)
    cosine = (prediction * target).sum(-1) / np.linalg.norm(prediction, axis=-1)
    expected = (1.0 - cosine)[valid].mean()
    assert _value(losses.NormalCosineLoss(), target, prediction) == pytest.approx(expected, rel=1e-5)
    # Perfect predictions give zero, opposite ones give two.
    unit = np.where(valid[..., None], target, 0.0)
    assert _value(losses.NormalCosineLoss(), target, unit) == pytest.approx(0.0, abs=1e-6)
    assert _value(losses.NormalCosineLoss(), target, -unit) == pytest.approx(2.0, rel=1e-6)


@tensorflow_only
def test_invalid_targets_leak_no_nan_into_gradients(rng):
    import tensorflow as tf

    target = rng.normal(size=(1, 2, 2, 3)).astype("float32")
    target[0, 0, 0] = np.nan
    target[0, 1, 1] = 0.0
    prediction = tf.Variable(rng.normal(size=target.shape).astype("float32"))
    for loss in (losses.MaskedL1(), losses.NormalCosineLoss()):
        with tf.GradientTape() as tape:
            value = loss(target, prediction)
        gradient = tape.gradient(value, prediction).numpy()
        assert np.isfinite(value.numpy()) and np.all(np.isfinite(gradient))
        assert np.all(gradient[0, 0, 0] == 0) and np.all(gradient[0, 1, 1] == 0)
        assert np.any(gradient[0, 0, 1] != 0)


@pytest.mark.parametrize(
    "loss",
    [
        losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1),
        losses.MaskedL1(invalid_value=losses.INVALID_OFFSET),
        losses.NormalCosineLoss(invalid_value=None),
    ],
    ids=["cross_entropy", "l1", "cosine"],
)
def test_config_round_trip(loss, rng):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    if isinstance(loss, losses.MaskedSparseCategoricalCrossentropy):
        y_true, y_pred = rng.integers(-1, 3, size=(1, 3, 3)), rng.normal(size=(1, 3, 3, 3)).astype("float32")
    else:
        y_true, y_pred = rng.normal(size=(1, 3, 3, 3)).astype("float32"), rng.normal(size=(1, 3, 3, 3)).astype("float32")
    assert _value(clone, y_true, y_pred) == pytest.approx(_value(loss, y_true, y_pred), rel=1e-6)


def test_regression_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="masked_l1: the target has shape"):
        losses.MaskedL1()(np.ones((1, 4, 4, 1), "float32"), np.ones((1, 2, 2, 1), "float32"))


@tensorflow_only
def test_scaling_under_mirrored_strategy(mirrored_strategy, rng):
    """Each replica reports its masked mean / replicas; their sum is the mean of replica means."""
    import tensorflow as tf

    loss = losses.MaskedL1()

    def replica_sum(target):
        prediction = np.zeros_like(target)
        values = mirrored_strategy.experimental_distribute_values_from_function(
            lambda context: (
                target[context.replica_id_in_sync_group][None],
                prediction[context.replica_id_in_sync_group][None],
            )
        )
        per_replica = mirrored_strategy.run(lambda v: loss(v[0], v[1]), args=(values,))
        return float(mirrored_strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))

    target = rng.uniform(1.0, 2.0, size=(2, 2, 3, 1)).astype("float32")
    target[0, 0, :2] = 0.0  # replica 0 has 4 valid pixels, replica 1 has 6
    means = [target[i][target[i] != 0].mean() for i in range(2)]
    assert replica_sum(target) == pytest.approx(np.mean(means), rel=1e-6)
    assert np.mean(means) != pytest.approx(target[target != 0].mean(), rel=1e-3)  # the two conventions differ here
    # With equal valid counts it is the masked mean of the global batch.
    full = rng.uniform(1.0, 2.0, size=(2, 2, 3, 1)).astype("float32")
    assert replica_sum(full) == pytest.approx(full.mean(), rel=1e-6)
