"""Min-norm point solvers for MGDA, on the device, from the Gram matrix alone.

MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018) needs the point of the convex hull of the task gradients
g_1..g_T with the smallest norm: alpha on the probability simplex minimising

    ||sum_t alpha_t g_t||^2 = alpha^T M alpha,   M = G G^T  (T x T Gram matrix).

Every solver here sees M only, never the gradients, and is written in
`keras.ops`: fixed shapes, `keras.ops.while_loop`s with `maximum_iterations`,
no Python control flow on tensor values, so it runs on every Keras backend and
inside its compiled step (TensorFlow: `tf.function`, `tf.function(jit_compile=True)`
(XLA) and `tf.distribute`; JAX: `jax.jit`). Nothing here imports TensorFlow.

Precision
---------

Every min-norm solver runs in one working dtype, float64 or float32:

* default: the dtype of `gram` (float64 for float64 input, float32 for float32
  and other input), except that float64 input where the backend does not
  compute float64 (JAX without `jax_enable_x64`; TPUs) is solved in float32 and
  the result is float32: such input can only be a NumPy array or Python
  numbers there, which that backend turns into float32 anyway;
* `dtype="float32"` / `"float64"` chooses it (a float32 Gram matrix can be
  solved in float64); `dtype="float64"` where the backend has no float64
  raises a ValueError naming `jax_enable_x64`
  (`mtl_tf.backend.precision.float64_available`), never a silent float32 solve.

Accuracy there: the default (Wolfe) stops on a Frank-Wolfe gap certificate of
1e-12 (float64) / 1e-9 (float32) times the largest squared gradient norm (or
its round-off), so its objective is within twice that of the exact minimum;
the tests hold it to 1e-6 relative or 1e-9 mean ||g||^2 (float64) and 1e-4 /
1e-6 (float32) against an exact float64 QP, at T up to 100 and norms spread
over 1e-12 .. 1e12. The closed form (T = 2) is a few roundings of the dtype;
Frank-Wolfe and the official routine are as exact as their stopping rules,
not the dtype. The active-set QP (`qp`) and the fair Newton solver (`fair`)
run in float64 by default where the backend has it, else float32 (their
docstrings give the accuracy of each).

Solvers
-------

* `two_task_weights`: the paper's closed form for T = 2 (section 3.1, eq. 4,
  Algorithm 1): alpha_1 = clip((c - b) / (a - 2b + c), 0, 1) for
  M = [[a, b], [b, c]]. When a - 2b + c is not positive (identical gradients,
  or round-off) the objective is linear along the segment and the vertex with
  the smaller norm is optimal (0.5 / 0.5 for equal norms). Every method uses it
  when T = 2.
* `frank_wolfe` (`method="frank_wolfe"`): the paper's Algorithm 2, verbatim:
  alpha = 1/T; repeat t = argmin_r (M alpha)_r, exact line search gamma in
  [0, 1] between alpha and the vertex e_t (the two-point closed form of
  Algorithm 1), alpha = (1 - gamma) alpha + gamma e_t; until gamma < tolerance
  (1e-5) or 250 iterations. It converges as O(1/k) only, so when the tasks
  conflict (the optimum is near 0) it stops far from the min-norm point.
* `min_norm_point` (`method="wolfe"`, the default): Wolfe's minimum-norm-point
  algorithm (P. Wolfe, "Finding the nearest point in a polytope", Mathematical
  Programming 11:128-149, 1976), written in Gram form. It is an exact active-set
  method: it keeps a "corral" S of affinely independent points and the
  min-norm point of their affine hull, adds the vertex that most violates
  optimality (major cycle) or walks back into the simplex and drops a point
  (minor cycle). The objective strictly decreases and no corral repeats, so it
  ends at the exact optimum after finitely many steps (in practice about
  |support| + a few steps; at most 10 T + 50 here). It was chosen because (a)
  it is exact, unlike Frank-Wolfe variants that are only linearly convergent,
  (b) each step is a rank-one update, so it costs O(T^2) vectorised work (a few
  matrix-vector products) instead of an O(T^3) factorisation, and (c) its
  stopping test is the Frank-Wolfe duality gap of the returned alpha, a
  certificate computed from M itself: alpha^T M alpha - min over the
  simplex <= 2 * gap.
* `official` (`method="official"`): the official code's
  `MinNormSolver.find_min_norm_element` (github.com/isl-org/
  MultiObjectiveOptimization, `min_norm_solvers.py`; the official Pareto MTL
  code, github.com/Xi-L/ParetoMTL, ships the same file), for runs that should
  behave like the published ones. (i) Start at the best pair i < j of points:
  the two-point routine on (M_ii, M_ij, M_jj), whose vertex cases give
  gamma = 0.999 (if M_ij >= M_ii, cost M_ii) or 0.001 (elif M_ij >= M_jj,
  cost M_jj), else gamma = -(M_ij - M_jj) / (M_ii + M_jj - 2 M_ij) with cost
  M_jj + gamma (M_ij - M_jj); alpha_i = gamma, alpha_j = 1 - gamma (ties: the
  first pair in (i, j) order). With fewer than 3 points that is the answer.
  (ii) Projected gradient: grad = -M alpha, proj = grad - sum(grad) / n; the
  step t starts at 1, is replaced by the smallest -alpha_r / proj_r
  (proj_r < 0) above 1e-7 if there is one, then capped by the smallest
  (1 - alpha_r) / proj_r (proj_r > 0) above 1e-7 (so 1 bounds t only when no
  entry of the first kind counts); next = the sort-based Euclidean projection
  of alpha + t proj onto the simplex; the two-point routine on
  (alpha^T M alpha, alpha^T M next, next^T M next) gives
  new = gamma alpha + (1 - gamma) next. It stops when sum |new - alpha| <
  `tolerance` (1e-5) and then returns alpha, the point before that last step,
  as the code does; or after `max_iterations` (250). The official loop never
  increments its counter, so there the cap never applies (it loops until the
  change is small); here it is real. It is not exact: its answer can sit
  visibly above the optimum, and the vertex weights are 0.999 / 0.001, not
  1 / 0. Its constants 1e-7 and 1 are in the units of the caller's Gram
  matrix, as in the code (M is divided by its largest diagonal entry inside,
  and they are scaled with it), so the iterates are the code's.

Deviations from the official code (github.com/isl-org/MultiObjectiveOptimization,
`min_norm_solvers.py`):

  * The two-task closed form and the Frank-Wolfe line search clip to [0, 1] as
    the paper says; the code clips to [0.001, 0.999] (`method="official"`
    keeps the code's rule).
  * The default solver iterates to the exact min-norm point instead of stopping
    Frank-Wolfe after a small change.
  * `frank_wolfe` starts from alpha = 1/T as Algorithm 2 says (the code starts
    from the best pair of tasks) and stops when gamma < tolerance (the code stops
    when the L1 change of alpha is below it). The code's Frank-Wolfe loop never
    increments its iteration counter, so its 250-iteration cap never applies;
    here the cap is real.
  * Everything runs on the device; alpha is a constant for autodiff (the Gram
    matrix goes through `ops.stop_gradient`).
  * `official` departs from the code only where the code has no answer: the
    iteration cap is real (see above); the points outside `mask` take no part
    (n counts the allowed points); one allowed point gets weight 1 (the code
    fails without a pair); the code's 1e8 start for the best pair cost (an
    error when every pair costs more) is not kept; and the contract below for
    zero or non-finite input (uniform weights) applies as for every method
    (the code returns [0.999, 0.001, 0, ...] for all-zero gradients).


Modules (imports point downward: this file imports them, they import `_common` only):

=============  ============================================================================
_common        input preparation shared by the solvers (`_prepare`, `_finish`, masks,
               dtype helpers) and `_plain_python`;
paper          the paper's solvers: the two-task closed form (`two_task_weights`) and
               Frank-Wolfe, Algorithm 2 (`_frank_wolfe`);
wolfe          Wolfe's minimum-norm-point method (`_wolfe`) and its implementation details;
official       the official code's `MinNormSolver.find_min_norm_element` (`_official`);
normalization  gradient normalisation (`normalize_gram`, `NORMALIZATIONS`).
=============  ============================================================================

This file holds the public entry points (`min_norm_weights`, `min_norm_weights_with_info`,
`frank_wolfe`, `min_norm_point`) and re-exports the rest of the public names.
"""

from typing import Any

from keras import ops

from mtl_tf.backend import solver_ops
from mtl_tf.solvers._common import _finish, _num_tasks, _plain_python, _prepare, _standard_dtype
from mtl_tf.solvers.normalization import NORMALIZATIONS, normalize_gram
from mtl_tf.solvers.official import (
    OFFICIAL_GAMMA_RANGE,
    OFFICIAL_MAX_ITERATIONS,
    OFFICIAL_STEP_FLOOR,
    OFFICIAL_TOLERANCE,
    _official,
)
from mtl_tf.solvers.paper import (
    FRANK_WOLFE_MAX_ITERATIONS,
    FRANK_WOLFE_TOLERANCE,
    _frank_wolfe,
    _two_task_alpha,
    two_task_weights,
)
from mtl_tf.solvers.wolfe import WOLFE_TOLERANCE, _wolfe, _wolfe_max_iterations

DEFAULT_METHOD = "wolfe"
METHODS = ("wolfe", "frank_wolfe", "official")


# ----------------------------------------------------------------------------
# Public entry points.


@_plain_python
@solver_ops.compiled_on_jax(("method", "max_iterations", "tolerance", "dtype"))
def min_norm_weights_with_info(gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None, dtype=None):
    """Like `min_norm_weights`, but returns (alpha, iterations).

    `iterations` is a scalar int32 tensor: the solver steps taken (Wolfe: major
    cycles that add or swap a point, minor cycles that drop one, and the final
    test; Frank-Wolfe and official: line-search steps, the official one's last
    step being the one whose change was below the tolerance), never more than
    `max_iterations`; 0 for the two-task closed form and for the official
    routine on fewer than 3 points. `dtype`: see `min_norm_weights`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown min-norm method {method!r}; valid methods: {', '.join(METHODS)}.")
    if isinstance(max_iterations, bool) or (isinstance(max_iterations, (int, float)) and not max_iterations >= 1):
        raise ValueError(f"max_iterations must be a positive integer or None, got {max_iterations!r}.")
    if isinstance(tolerance, bool) or (isinstance(tolerance, (int, float)) and not tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number or None, got {tolerance!r}.")
    gram, allowed, uniform, degenerate, out_dtype, scale = _prepare(gram, mask, with_scale=True, dtype=dtype)
    num_tasks = _num_tasks(gram)
    static = isinstance(num_tasks, int)

    if method == "official":
        # Its own two-point rule ([0.001, 0.999]) covers T = 2: no eq. 4 here.
        cap = OFFICIAL_MAX_ITERATIONS if max_iterations is None else max_iterations
        tol = OFFICIAL_TOLERANCE if tolerance is None else tolerance
        alpha, its = _official(gram, allowed, scale, cap, tol)
        return _finish(alpha, allowed, uniform, degenerate, out_dtype), its

    if method == "frank_wolfe":
        cap = FRANK_WOLFE_MAX_ITERATIONS if max_iterations is None else max_iterations
        tol = FRANK_WOLFE_TOLERANCE if tolerance is None else tolerance

        def general():
            return _frank_wolfe(gram, allowed, uniform, cap, tol)

    else:
        cap = _wolfe_max_iterations(num_tasks) if max_iterations is None else max_iterations
        tol = WOLFE_TOLERANCE[_standard_dtype(gram)] if tolerance is None else tolerance

        def general():
            return _wolfe(gram, allowed, cap, tol)

    def closed():
        return _two_task_alpha(gram), ops.convert_to_tensor(0, "int32")

    if static and num_tasks == 2:
        # No loop at T = 2, with a mask too: with both points allowed eq. 4 is
        # the minimum, with one allowed that vertex is (`_finish` turns no
        # allowed point into zeros). A loop here, even one `where` discards,
        # would run every step (about 1 ms per step of mgda_ub on a CPU).
        alpha, its = closed()
        if mask is not None:
            alpha = ops.where(ops.all(allowed), alpha, ops.cast(allowed, alpha.dtype))
    elif static:
        alpha, its = general()
    else:
        use_closed = ops.logical_and(ops.equal(num_tasks, 2), ops.all(allowed))
        alpha, its = ops.cond(use_closed, closed, general)
    return _finish(alpha, allowed, uniform, degenerate, out_dtype), its


@_plain_python
def min_norm_weights(
    gram: Any,
    method: str = DEFAULT_METHOD,
    max_iterations: int | None = None,
    tolerance: float | None = None,
    mask: Any | None = None,
    dtype: str | None = None,
) -> Any:
    """alpha on the simplex minimising alpha^T gram alpha (the MGDA weights).

    Args:
      gram: T x T Gram matrix of the task gradients (a tensor of the Keras
        backend or a NumPy array; float32 or float64, other dtypes are solved
        in float32 and cast back). It is symmetrised; it need not be exactly
        positive semi-definite (round-off is tolerated).
      method: "wolfe" (default; Wolfe's exact minimum-norm-point method),
        "frank_wolfe" (the paper's Algorithm 2) or "official" (the official
        code's `MinNormSolver.find_min_norm_element`, see the module
        docstring). With "wolfe" and "frank_wolfe", T = 2 uses the closed form
        (eq. 4), or the one allowed vertex where `mask` excludes a point; "official" uses its own
        two-point rule (vertex weights 0.999 / 0.001).
      max_iterations: iteration cap (Wolfe: 10 T + 50 steps; Frank-Wolfe and
        official: 250).
      tolerance: Wolfe: Frank-Wolfe gap relative to the largest squared
        gradient norm (1e-12 float64, 1e-9 float32; it also stops at the gap's
        round-off level); Frank-Wolfe: the step size gamma below which it stops
        (1e-5); official: the L1 change of alpha below which it stops (1e-5).
      mask: optional boolean vector of length T; only points with mask True
        may get weight, alpha is 0 elsewhere (the result is the solution of the
        sub-problem on the allowed points). An all-False mask returns zeros.
      dtype: the working precision, None (default: float64 for float64
        `gram` where the backend computes float64, else float32), "float32" or
        "float64" (ValueError naming `jax_enable_x64` where the backend has no
        float64). See the module docstring, Precision.

    Returns:
      alpha, shape [T], the dtype of `gram` (float32 for float64 input where
      the backend has no float64), a tensor of the backend: alpha >= 0 and sum(alpha) = 1
      (zeros for an all-False mask), never NaN. If every allowed gradient is
      zero (any alpha is optimal), or an allowed entry of the Gram matrix is
      NaN or infinite, the uniform weights over the allowed points are
      returned.
    """
    return min_norm_weights_with_info(gram, method, max_iterations, tolerance, mask, dtype)[0]


@_plain_python
def frank_wolfe(gram, max_iterations=None, tolerance=None, mask=None, dtype=None):
    """The paper's Algorithm 2 (plain Frank-Wolfe with exact line search).

    alpha = 1/T (uniform over the allowed points with `mask`); each iteration
    moves towards the vertex e_t with the smallest (M alpha)_t by the exact
    line-search step gamma in [0, 1]; it stops once gamma < `tolerance`
    (default 1e-5) or after `max_iterations` (default 250). T = 2 uses the
    closed form (Algorithm 2 reaches it in its first step). Returns alpha in the
    dtype of `gram` (`dtype`: the working precision, see `min_norm_weights`).
    """
    return min_norm_weights(gram, "frank_wolfe", max_iterations, tolerance, mask, dtype)


@_plain_python
def min_norm_point(gram, max_iterations=None, tolerance=None, mask=None, dtype=None):
    """Wolfe's exact minimum-norm-point algorithm (the default method); `dtype` as for `min_norm_weights`."""
    return min_norm_weights(gram, "wolfe", max_iterations, tolerance, mask, dtype)
