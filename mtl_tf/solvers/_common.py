"""Input preparation shared by the solvers.

The Gram matrix in the working dtype (`_as_gram`), the mask (`_as_mask`), the
normalised problem and its degenerate cases (`_prepare`), the projection of the
result back onto the simplex (`_finish`), and small tensor and dtype helpers.
"""

import tensorflow as tf

# No tensor-dependent Python control flow here, so AutoGraph has nothing to
# convert; skipping it saves seconds on the first trace of every step.
_plain_python = tf.autograph.experimental.do_not_convert


def _as_gram(gram):
    """(gram in the working dtype, caller dtype): symmetric, no gradient."""
    gram = tf.convert_to_tensor(gram)
    out_dtype = gram.dtype
    if not out_dtype.is_floating:
        out_dtype = tf.float32
    work_dtype = tf.float64 if out_dtype == tf.float64 else tf.float32
    if gram.shape.rank is not None and gram.shape.rank != 2:
        raise ValueError(f"gram must be a T x T matrix (rank 2), got shape {gram.shape}.")
    rows, cols = gram.shape.as_list() if gram.shape.rank == 2 else (None, None)
    if rows is not None and cols is not None and rows != cols:
        raise ValueError(f"gram must be a square T x T matrix, got shape {gram.shape}.")
    if rows == 0 or cols == 0:
        raise ValueError(f"gram must have at least one task, got shape {gram.shape}.")
    gram = tf.stop_gradient(tf.cast(gram, work_dtype))
    gram = 0.5 * (gram + tf.transpose(gram))
    return gram, out_dtype


def _num_tasks(gram):
    """T as a Python int when static, else as a scalar int32 tensor."""
    static = gram.shape[0] if gram.shape[0] is not None else gram.shape[1]
    return static if static is not None else tf.shape(gram)[0]


def _as_mask(mask, num_tasks):
    if mask is None:
        return None
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank is not None and mask.shape.rank != 1:
        raise ValueError(f"mask must be a vector with one entry per task, got shape {mask.shape}.")
    if isinstance(num_tasks, int) and mask.shape[0] is not None and mask.shape[0] != num_tasks:
        raise ValueError(
            f"mask must have one entry per task ({num_tasks}), got {mask.shape[0]} entries."
        )
    mask = tf.cast(mask, tf.bool)
    return tf.reshape(mask, [num_tasks] if isinstance(num_tasks, int) else [-1])


def _prepare(gram, mask, with_scale=False):
    """Symmetric, masked, scale-normalised Gram matrix and the solver state.

    Returns (normalised gram, allowed mask, uniform weights over the allowed
    points, degenerate flag, caller dtype), and with `with_scale` the divisor
    as a sixth entry (1 when degenerate). Rows and columns of excluded points
    are zeroed (so NaN or inf there cannot leak in); the matrix is divided by
    its largest allowed diagonal entry. `degenerate` is True when no point is
    allowed, every allowed gradient is zero, or an allowed entry is not finite
    (then the solvers return `uniform`).
    """
    gram, out_dtype = _as_gram(gram)
    num_tasks = _num_tasks(gram)
    mask = _as_mask(mask, num_tasks)
    if mask is None:
        allowed = tf.ones([num_tasks] if isinstance(num_tasks, int) else tf.shape(gram)[:1], tf.bool)
    else:
        allowed = mask
        both = tf.logical_and(allowed[:, None], allowed[None, :])
        gram = tf.where(both, gram, tf.zeros_like(gram))
    diag = tf.linalg.diag_part(gram)
    scale = tf.reduce_max(tf.where(allowed, diag, tf.zeros_like(diag)))
    usable = tf.logical_and(scale > 0, tf.math.is_finite(scale))
    usable = tf.logical_and(usable, tf.reduce_all(tf.math.is_finite(gram)))  # excluded entries are 0 here
    safe_scale = tf.where(usable, scale, tf.ones_like(scale))
    gram = gram / safe_scale
    allowed_f = tf.cast(allowed, gram.dtype)
    count = tf.reduce_sum(allowed_f)
    uniform = tf.math.divide_no_nan(allowed_f, count)
    degenerate = tf.logical_not(usable)
    if with_scale:
        return gram, allowed, uniform, degenerate, out_dtype, safe_scale
    return gram, allowed, uniform, degenerate, out_dtype


def _finish(alpha, allowed, uniform, degenerate, out_dtype):
    """Project round-off back onto the simplex; never return NaN."""
    alpha = tf.where(tf.math.is_finite(alpha), alpha, tf.zeros_like(alpha))
    alpha = tf.where(allowed, tf.maximum(alpha, tf.zeros_like(alpha)), tf.zeros_like(alpha))
    total = tf.reduce_sum(alpha)
    ok = tf.logical_and(tf.logical_and(total > 0, tf.math.is_finite(total)), tf.logical_not(degenerate))
    alpha = tf.where(ok, alpha / tf.where(ok, total, tf.ones_like(total)), uniform)
    return tf.cast(alpha, out_dtype)


def _argmin_where(values, keep):
    """(index, value) of the smallest entry of `values` among `keep` (+inf if none)."""
    inf = tf.constant(float("inf"), values.dtype)
    masked = tf.where(keep, values, tf.fill(tf.shape(values), inf))
    index = tf.argmin(masked, output_type=tf.int32)
    return index, tf.reduce_min(masked)


def _length(vector):
    """Length of a vector, static when known (keeps loop-variable shapes static)."""
    return vector.shape[0] if vector.shape[0] is not None else tf.size(vector)


def _eps(dtype):
    return 2.220446049250313e-16 if dtype == tf.float64 else 1.1920928955078125e-07


def _tiny(dtype):
    return {
        tf.float64: 2.2250738585072014e-308,
        tf.float32: 1.1754943508222875e-38,
        tf.float16: 6.103515625e-05,
        tf.bfloat16: 1.1754943508222875e-38,
    }[tf.as_dtype(dtype)]
