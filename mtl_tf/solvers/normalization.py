"""Gradient normalisation (`normalize_gram`, the official `normalization_type`):
g_t is divided by s_t, with s_t = 1 (`none`), ||g_t|| (`l2`), |L_t| (`loss`) or
|L_t| ||g_t|| (`loss+`); in Gram form M' = D M D with D = diag(1/s_t) and
||g_t|| = sqrt(M_tt). Normalisation changes alpha only; callers apply alpha to
the unnormalised losses.
"""

import tensorflow as tf

from mtl_tf.solvers._common import _plain_python, _tiny

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@_plain_python
def normalize_gram(gram, losses, kind):
    """The Gram matrix of the normalised gradients g_t / s_t: D M D, D = diag(1/s).

    kind: "none" (s_t = 1), "l2" (s_t = ||g_t|| = sqrt(M_tt)), "loss"
    (s_t = |L_t|), "loss+" (s_t = |L_t| ||g_t||). `losses` (length T) is only
    read by the loss kinds and may be None otherwise. The absolute value of the
    loss is used (a negative loss would flip the task's gradient; the official
    code divides by the signed loss). A scale that is zero, not finite, or below
    sqrt(smallest normal float) leaves that task unscaled (s_t = 1), so a zero
    gradient or a zero loss never produces NaN or inf; a zero gradient stays
    zero. Returns a matrix of the dtype of `gram`.
    """
    if kind not in NORMALIZATIONS:
        raise ValueError(f"Unknown gradient normalization {kind!r}; valid kinds: {', '.join(NORMALIZATIONS)}.")
    gram = tf.convert_to_tensor(gram)
    if kind == "none":
        return gram
    if kind in ("loss", "loss+") and losses is None:
        raise ValueError(f"Gradient normalization {kind!r} needs the task losses.")
    dtype = gram.dtype
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), tf.zeros([], dtype)))
    if kind == "l2":
        scales = norms
    else:
        losses = tf.reshape(tf.cast(tf.convert_to_tensor(losses), dtype), [-1])
        if losses.shape[0] is not None and gram.shape[0] is not None and losses.shape[0] != gram.shape[0]:
            raise ValueError(
                f"Gradient normalization {kind!r} needs one loss per task ({gram.shape[0]}), "
                f"got {losses.shape[0]}."
            )
        losses = tf.abs(losses)
        scales = losses if kind == "loss" else losses * norms
    tiny = tf.constant(_tiny(dtype) ** 0.5, dtype)
    usable = tf.logical_and(tf.math.is_finite(scales), scales >= tiny)
    inv = tf.where(usable, 1.0 / tf.where(usable, scales, tf.ones_like(scales)), tf.ones_like(scales))
    return gram * inv[:, None] * inv[None, :]
