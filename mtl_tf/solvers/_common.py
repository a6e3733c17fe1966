"""Input preparation shared by the solvers.

The Gram matrix in the working dtype (`_as_gram`), the mask (`_as_mask`), the
normalised problem and its degenerate cases (`_prepare`), the projection of the
result back onto the simplex (`_finish`), the precision rule
(`_working_dtype`), and small tensor and dtype helpers. Written in `keras.ops`:
no Python control flow on tensor values, so it runs inside a compiled step on
every backend.

Precision rule (every solver states how it applies it): a solver runs in
float64 or float32. float64 is real on TensorFlow (and PyTorch, NumPy) and on
JAX only with `jax_enable_x64` (`mtl_tf.backend.precision.float64_available`);
a caller that asks for float64 explicitly (`dtype="float64"`) where it is not
real gets a ValueError naming `jax_enable_x64`, never a silent float32 solve. A
default that would be float64 falls back to float32 where float64 is not real,
as the docstrings say.
"""

import keras
from keras import ops

from mtl_tf.backend import solver_ops
from mtl_tf.backend.precision import float64_available

# No tensor-dependent Python control flow here, so AutoGraph (TensorFlow) has
# nothing to convert; skipping it saves seconds on the first trace of every step.
_plain_python = solver_ops.plain_python

WORKING_DTYPES = ("float32", "float64")


def _standard_dtype(x):
    """The dtype name of `x` ("float32", ...), or None when it has none (Python numbers, lists)."""
    dtype = getattr(x, "dtype", None)
    return None if dtype is None else keras.backend.standardize_dtype(dtype)


def _require_float64(what):
    if not float64_available():
        raise ValueError(
            f"{what}: float64 was requested (dtype='float64'), but the {keras.backend.backend()} backend computes "
            "float64 as float32 here. With JAX, enable it before creating arrays: "
            "jax.config.update('jax_enable_x64', True) (or JAX_ENABLE_X64=1); TPUs have no float64. "
            "Or ask for dtype='float32' (the precision and accuracy of each solver in float32 are in its docstring)."
        )


def _working_dtype(requested, default, what):
    """The dtype a solver runs in: `requested` if given (float64 checked), else `default`, float32 off float64."""
    if requested is not None:
        requested = keras.backend.standardize_dtype(requested)
        if requested not in WORKING_DTYPES:
            raise ValueError(f"{what}: dtype must be one of {', '.join(WORKING_DTYPES)} or None, got {requested!r}.")
        if requested == "float64":
            _require_float64(what)
        return requested
    if default == "float64" and not float64_available():
        return "float32"
    return default


def _rank(x):
    try:
        return len(x.shape)
    except (TypeError, ValueError):  # a TensorFlow tensor of unknown rank
        return None


def _as_gram(gram, dtype=None):
    """(gram in the working dtype, caller dtype): symmetric, no gradient.

    The working dtype is `dtype` if given, else float64 for a float64 input
    where float64 is real, else float32. The caller dtype is the input's
    floating dtype (float32 for other dtypes, and for float64 input where
    float64 is not real: it could not be returned).
    """
    in_dtype = _standard_dtype(gram)
    out_dtype = in_dtype if in_dtype is not None and "float" in in_dtype else "float32"
    if out_dtype == "float64" and not float64_available():
        out_dtype = "float32"
    default = "float64" if out_dtype == "float64" else "float32"
    work_dtype = _working_dtype(dtype, default, "min_norm_weights")
    gram = ops.convert_to_tensor(gram)
    rank = _rank(gram)
    if rank is not None and rank != 2:
        raise ValueError(f"gram must be a T x T matrix (rank 2), got shape {tuple(gram.shape)}.")
    rows, cols = (gram.shape[0], gram.shape[1]) if rank == 2 else (None, None)
    if rows is not None and cols is not None and rows != cols:
        raise ValueError(f"gram must be a square T x T matrix, got shape {tuple(gram.shape)}.")
    if rows == 0 or cols == 0:
        raise ValueError(f"gram must have at least one task, got shape {tuple(gram.shape)}.")
    gram = ops.stop_gradient(ops.cast(gram, work_dtype))
    gram = 0.5 * (gram + ops.transpose(gram))
    return gram, out_dtype


def _num_tasks(gram):
    """T as a Python int when static, else as a scalar int32 tensor."""
    static = gram.shape[0] if gram.shape[0] is not None else gram.shape[1]
    return static if static is not None else ops.shape(gram)[0]


def _as_mask(mask, num_tasks):
    if mask is None:
        return None
    mask = ops.convert_to_tensor(mask)
    rank = _rank(mask)
    if rank is not None and rank != 1:
        raise ValueError(f"mask must be a vector with one entry per task, got shape {tuple(mask.shape)}.")
    if isinstance(num_tasks, int) and rank == 1 and mask.shape[0] is not None and mask.shape[0] != num_tasks:
        raise ValueError(
            f"mask must have one entry per task ({num_tasks}), got {mask.shape[0]} entries."
        )
    mask = ops.cast(mask, "bool")
    return ops.reshape(mask, [num_tasks] if isinstance(num_tasks, int) else [-1])


def _prepare(gram, mask, with_scale=False, dtype=None):
    """Symmetric, masked, scale-normalised Gram matrix and the solver state.

    Returns (normalised gram, allowed mask, uniform weights over the allowed
    points, degenerate flag, caller dtype), and with `with_scale` the divisor
    as a sixth entry (1 when degenerate). Rows and columns of excluded points
    are zeroed (so NaN or inf there cannot leak in); the matrix is divided by
    its largest allowed diagonal entry. `degenerate` is True when no point is
    allowed, every allowed gradient is zero, or an allowed entry is not finite
    (then the solvers return `uniform`). `dtype`: see `_as_gram`.
    """
    gram, out_dtype = _as_gram(gram, dtype)
    num_tasks = _num_tasks(gram)
    mask = _as_mask(mask, num_tasks)
    if mask is None:
        allowed = ops.ones([num_tasks], "bool")
    else:
        allowed = mask
        both = ops.logical_and(allowed[:, None], allowed[None, :])
        gram = ops.where(both, gram, ops.zeros_like(gram))
    diag = ops.diagonal(gram)
    scale = ops.max(ops.where(allowed, diag, ops.zeros_like(diag)))
    usable = ops.logical_and(scale > 0, ops.isfinite(scale))
    usable = ops.logical_and(usable, ops.all(ops.isfinite(gram)))  # excluded entries are 0 here
    safe_scale = ops.where(usable, scale, ops.ones_like(scale))
    gram = gram / safe_scale
    allowed_f = ops.cast(allowed, gram.dtype)
    count = ops.sum(allowed_f)
    uniform = ops.divide_no_nan(allowed_f, count)
    degenerate = ops.logical_not(usable)
    if with_scale:
        return gram, allowed, uniform, degenerate, out_dtype, safe_scale
    return gram, allowed, uniform, degenerate, out_dtype


def _finish(alpha, allowed, uniform, degenerate, out_dtype):
    """Project round-off back onto the simplex; never return NaN."""
    alpha = ops.where(ops.isfinite(alpha), alpha, ops.zeros_like(alpha))
    alpha = ops.where(allowed, ops.maximum(alpha, ops.zeros_like(alpha)), ops.zeros_like(alpha))
    total = ops.sum(alpha)
    ok = ops.logical_and(ops.logical_and(total > 0, ops.isfinite(total)), ops.logical_not(degenerate))
    alpha = ops.where(ok, alpha / ops.where(ok, total, ops.ones_like(total)), uniform)
    return ops.cast(alpha, out_dtype)


def _full(like, value):
    """A tensor of the shape and dtype of `like` filled with the Python number `value`."""
    return ops.full_like(like, value)


def _argmin_where(values, keep):
    """(index, value) of the smallest entry of `values` among `keep` (+inf if none)."""
    masked = ops.where(keep, values, _full(values, float("inf")))
    return solver_ops.argmin(masked), ops.min(masked)


def _gather(vector, index):
    """vector[index] for a scalar integer tensor `index` (a gather: XLA needs no compile-time index)."""
    return solver_ops.gather(vector, index)


def _matvec(matrix, vector):
    """matrix @ vector over the last axis of `vector` (batched like `tf.linalg.matvec`, the same matmul)."""
    return ops.matmul(matrix, vector[..., None])[..., 0]


def _length(vector):
    """Length of a vector, static when known (keeps loop-variable shapes static)."""
    return vector.shape[0] if vector.shape[0] is not None else ops.size(vector)


def _eps(dtype):
    return 2.220446049250313e-16 if keras.backend.standardize_dtype(dtype) == "float64" else 1.1920928955078125e-07


def _tiny(dtype):
    return {
        "float64": 2.2250738585072014e-308,
        "float32": 1.1754943508222875e-38,
        "float16": 6.103515625e-05,
        "bfloat16": 1.1754943508222875e-38,
    }[keras.backend.standardize_dtype(dtype)]
