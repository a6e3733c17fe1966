"""What counts as a labelled example of a task (rule 3 of `mtl_tf.balancers.base`)."""

from __future__ import annotations

from keras import ops


def labelled_count(loss_fn, y_true, sample_weight):
    """The (sample-weighted) number of labelled targets of one task in the local batch, float32.

    A loss may say it itself with a `labelled_count(y_true, sample_weight)`
    method (`mtl_tf.losses`' masked losses do). Otherwise a loss with an
    `ignore_class` (Keras' sparse cross-entropies) counts the targets that are
    not that class, and any other loss counts examples: the sum of the sample
    weights, or the batch size without them.
    """
    if hasattr(loss_fn, "labelled_count"):
        return ops.cast(loss_fn.labelled_count(y_true, sample_weight), "float32")
    y_true = ops.convert_to_tensor(y_true)
    ignore = getattr(loss_fn, "ignore_class", None)
    if ignore is None:
        valid = ops.ones(ops.shape(y_true)[:1], "float32")
    else:
        valid = ops.cast(ops.not_equal(y_true, ops.cast(ignore, y_true.dtype)), "float32")
    if sample_weight is not None:
        valid = valid * broadcast_weight(sample_weight, valid)
    return ops.sum(valid)


def broadcast_weight(sample_weight, like):
    """A sample weight ([B] or [B, ...]) as float32, broadcast to the shape of `like`."""
    weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    while len(weight.shape) < len(like.shape):
        weight = weight[..., None]
    while len(weight.shape) > len(like.shape):
        weight = ops.max(weight, axis=-1)  # per-pixel weights: an example counts if any pixel does
    return ops.broadcast_to(weight, ops.shape(like))
