"""Gradient normalisation (`normalize_gram`, the official `normalization_type`):
g_t is divided by s_t, with s_t = 1 (`none`), ||g_t|| (`l2`), |L_t| (`loss`) or
|L_t| ||g_t|| (`loss+`); in Gram form M' = D M D with D = diag(1/s_t) and
||g_t|| = sqrt(M_tt). Normalisation changes alpha only; callers apply alpha to
the unnormalised losses.

Precision: the dtype of the Gram matrix (float64 input where the backend has no
float64, i.e. JAX without `jax_enable_x64`, arrives as float32, as every
backend tensor there); each entry is a few roundings of it (2 (D + 4) eps
relative to the largest entry, by the tests).
"""

from keras import ops

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
    gram = ops.convert_to_tensor(gram)
    if kind == "none":
        return gram
    if kind in ("loss", "loss+") and losses is None:
        raise ValueError(f"Gradient normalization {kind!r} needs the task losses.")
    dtype = gram.dtype
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), ops.zeros([], dtype)))
    if kind == "l2":
        scales = norms
    else:
        losses = ops.reshape(ops.cast(ops.convert_to_tensor(losses), dtype), [-1])
        if losses.shape[0] is not None and gram.shape[0] is not None and losses.shape[0] != gram.shape[0]:
            raise ValueError(
                f"Gradient normalization {kind!r} needs one loss per task ({gram.shape[0]}), "
                f"got {losses.shape[0]}."
            )
        losses = ops.abs(losses)
        scales = losses if kind == "loss" else losses * norms
    tiny = ops.convert_to_tensor(_tiny(dtype) ** 0.5, dtype)
    usable = ops.logical_and(ops.isfinite(scales), scales >= tiny)
    inv = ops.where(usable, 1.0 / ops.where(usable, scales, ops.ones_like(scales)), ops.ones_like(scales))
    return gram * inv[:, None] * inv[None, :]
