"""The alpha-fair weights of FairGrad and Nash-MTL: w > 0 with K w = w^(-1/alpha), on the device.

Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
section 3, eq. 3) needs the positive solution of K w = 1 / w (elementwise),
K = G G^T the Gramian of the task gradients; FairGrad (Ban & Ji, "Fair
Resource Allocation in Multi-Task Learning", ICML 2024, section 4) the one of
K w = w^(-1/alpha), which is Nash-MTL's for alpha = 1. Both are the
stationarity condition of a strictly convex function on w > 0,

    F(w) = 1/2 w^T K w + phi(w),  phi(w) = -sum_i log w_i            (alpha = 1),
                                  phi(w) = -sum_i w_i^p / p, p = 1 - 1/alpha (alpha != 1),

(grad F = K w - w^(-1/alpha); -w^p/p is convex for every p < 1, p != 0), so
the solution is unique and `fair_weights` finds it by Newton's method on F
with a backtracking line search that keeps w > 0: fixed shapes, a
`keras.ops.while_loop` with `maximum_iterations`, XLA-compilable, on every
Keras backend. It stops when the squared Newton decrement is below 1e-15
(relative; float32: 1e-7; the step it then takes is still applied) or after
`MAX_ITERATIONS`; from the start below it converges quadratically after a few
damped steps.

Precision: float64 by default where the backend computes float64 (TensorFlow;
JAX with `jax_enable_x64`); there w solves the equation to about T * cond(K) *
eps64 (the tests: K w = w^(-1/alpha) to rtol 1e-6, scipy's solution to 1e-5).
Where the backend has no float64 (JAX without `jax_enable_x64`, TPUs) the
default is float32 and an explicit `dtype="float64"` raises a ValueError naming
`jax_enable_x64`. In float32 the ridge is `RIDGE_FLOAT32` (1e-6 relative) and w
solves the equation to about 1e-6 * cond(K) relative (measured on the problems
of tests/test_solvers_fair.py: relative residual of K w = w^(-1/alpha) about
1e-4 at cond(K) 60 .. 400, 1e-3 at 7e3, 2e-2 at 2e4).

Scale: with K = s K' (s = the largest diagonal entry), w = s^(-alpha/(alpha+1)) v
where K' v = v^(-1/alpha), so the iteration runs on the normalised K'. Start:
v_i = (K'_ii)^(-alpha/(alpha+1)), the solution when the gradients are
orthogonal.

Regularisation: `RIDGE` (1e-12) times the identity is added to K'. Without it
there is no solution when a task's gradient is zero or when a positive
combination of the gradients vanishes (F is then unbounded below); with it the
weights stay finite there, and elsewhere they move by about 1e-12 relative.
"""

from keras import ops

from mtl_tf.backend import solver_ops
from mtl_tf.solvers._common import _gather, _matvec, _plain_python, _rank, _working_dtype

MAX_ITERATIONS = 100
RIDGE = 1e-12
RIDGE_FLOAT32 = 1e-6
# Squared Newton decrement (relative) at which the iteration stops, per working dtype.
_DECREMENT = {"float64": 1e-15, "float32": 1e-7}
_BACKTRACKS = 40


@_plain_python
@solver_ops.compiled_on_jax(("alpha", "dtype"))
def fair_weights(gram, alpha=1.0, mask=None, dtype=None):
    """The positive w with K w = w^(-1/alpha) on the tasks of `mask` (0 elsewhere).

    Args:
      gram: [T, T] Gramian (float32 or float64), positive semi-definite.
      alpha: Python float > 0 (1 = Nash-MTL's K w = 1/w).
      mask: optional [T] bool, the tasks taking part (their rows and columns
        only are used; the others get w = 0).
      dtype: the working precision, "float64" or "float32"; default float64
        where the backend computes float64, else float32 (module docstring).

    Returns:
      (w, iterations): w [T] in the working dtype (float64 by default on
      TensorFlow), iterations a scalar int32. A Gramian that is not finite or
      is zero gives w = 0.

    Raises:
      ValueError: alpha not a positive number, a gram that is not [T, T], or
        dtype="float64" where the backend computes float64 as float32.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number; got {alpha!r}")
    work = _working_dtype(dtype, "float64", "fair_weights")
    ridge = RIDGE if work == "float64" else RIDGE_FLOAT32
    gram = ops.cast(ops.convert_to_tensor(gram), work)
    if _rank(gram) != 2 or gram.shape[0] is None or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a [T, T] matrix with a static T; got shape {tuple(gram.shape)}")
    num = gram.shape[0]
    mask = ops.ones([num], "bool") if mask is None else ops.cast(mask, "bool")
    open_ = ops.cast(mask, work)
    gram = 0.5 * (gram + ops.transpose(gram))
    gram = gram * open_[:, None] * open_[None, :]
    usable = ops.all(ops.isfinite(gram))
    gram = ops.where(usable, gram, ops.zeros_like(gram))
    scale = ops.max(ops.diagonal(gram))
    usable = ops.logical_and(usable, scale > 0)
    safe_scale = ops.where(usable, scale, ops.ones_like(scale))
    k = gram / safe_scale + ridge * ops.diag(open_)
    power = 1.0 - 1.0 / alpha
    exponent = -alpha / (alpha + 1.0)

    def objective(v):
        """F at v ([..., T], masked coordinates ignored); +inf outside v > 0."""
        positive = ops.all(ops.logical_or(v > 0, ops.logical_not(mask)), axis=-1)
        safe = ops.where(mask, ops.where(v > 0, v, ops.ones_like(v)), ops.ones_like(v))
        if power == 0.0:
            barrier = -ops.sum(open_ * ops.log(safe), axis=-1)
        else:
            barrier = -ops.sum(open_ * ops.power(safe, power), axis=-1) / power
        quadratic = 0.5 * ops.sum(v * _matvec(k, v), axis=-1)
        inf = ops.convert_to_tensor(float("inf"), work)
        return ops.where(positive, quadratic + barrier, inf)

    def newton(v):
        safe = ops.where(mask, v, ops.ones_like(v))
        gradient = (_matvec(k, v) - ops.power(safe, -1.0 / alpha)) * open_
        curvature = (1.0 / alpha) * ops.power(safe, -1.0 / alpha - 1.0)
        hessian = k + ops.diag(curvature * open_ + (1.0 - open_))
        step = -ops.solve(hessian, gradient[:, None])[:, 0] * open_
        return step, gradient

    def body(i, v, done):
        step, gradient = newton(v)
        slope = ops.sum(gradient * step)  # -(Newton decrement)^2
        # The largest step keeping v > 0 (0.99 of the way to the boundary), then halvings.
        shrinking = ops.logical_and(step < 0, mask)
        limit = ops.min(ops.where(shrinking, -v / ops.where(shrinking, step, -ops.ones_like(step)),
                                ops.full_like(v, float("inf"))))
        first = ops.minimum(ops.convert_to_tensor(1.0, work), 0.99 * limit)
        sizes = first * ops.power(ops.convert_to_tensor(0.5, work), ops.arange(_BACKTRACKS, dtype=work))
        candidates = v[None, :] + sizes[:, None] * step[None, :]
        values = objective(candidates)
        accepted = values <= objective(v) + 1e-4 * sizes * slope
        index = ops.argmax(ops.cast(accepted, "int32"))  # the largest accepted size
        # A gather, not sizes[index]: XLA's strided slice needs a compile-time index, and asking for one
        # makes the data it depends on (the batch) a compile-time constant, recompiled every step.
        size = ops.where(ops.any(accepted), _gather(sizes, index), sizes[-1])
        new = v + size * step
        finished = ops.logical_or(done, -slope <= _DECREMENT[work] * (1.0 + ops.abs(objective(v))))
        return i + 1, ops.where(done, v, new), finished

    diag = ops.diagonal(k)
    start = ops.where(mask, ops.power(ops.where(diag > 0, diag, ops.ones_like(diag)), exponent), ops.zeros_like(diag))
    iterations, v, _ = ops.while_loop(
        lambda i, v, done: ops.logical_not(done), body, (ops.convert_to_tensor(0, "int32"), start, ops.logical_not(usable)),
        maximum_iterations=MAX_ITERATIONS,
    )
    w = v * ops.power(safe_scale, exponent)
    w = ops.where(usable, w * open_, ops.zeros_like(w))
    w = ops.where(ops.isfinite(w), w, ops.zeros_like(w))
    return w, iterations
