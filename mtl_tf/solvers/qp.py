"""Small convex quadratic programs with lower bounds (and optionally on the simplex), on the device.

Several gradient methods reduce to a T x T quadratic program on the Gramian
K = G G^T of the task gradients (UPGrad and DualProj: the dual-cone
projection, min_v v^T K v s.t. v >= u; CAGrad: a quadratic model on the
simplex). `lower_bounded_qp` solves a batch of them,

    minimise  1/2 x^T Q x + p_b^T x   subject to  x >= l_b   (and sum_i x_i = 1 if `simplex`)

for every row b of p and l, with one Q shared by the batch (Q positive
semi-definite). Written in `keras.ops`: fixed shapes, one `keras.ops.while_loop`
with `maximum_iterations`, no Python control flow on tensor values, so it runs
inside a compiled step on every backend (on TensorFlow inside an XLA
`tf.function` and under `tf.distribute`). It returns the
caller's dtype.

Precision: float64 by default where the backend computes float64 (TensorFlow;
JAX with `jax_enable_x64`): the problems are tiny, and float32 round-off shows
in the active-set decisions. Where the backend has no float64 (JAX without
`jax_enable_x64`, TPUs) the default is float32, and an explicit
`dtype="float64"` raises a ValueError naming `jax_enable_x64`. Accuracy: the
answer is the exact optimum up to the round-off of the last linear solve, not
an iterative tolerance: in float64 the tests hold the objective to
4 (T^2 + T) eps64 max|Q| above the enumerated optimum and the KKT conditions to
4 T eps64 max|Q|. In float32 the ridge is `RIDGE_FLOAT32` (1e-12 is below
float32 round-off), multipliers above -`TOLERANCE_FLOAT32` * scale count as
non-negative; the tests hold the float32 answer to the float64 bounds with eps32
in place of eps64 (measured on their problems: objective 1.7e-8 * max(1,
|optimum|, max|Q|) above the enumerated optimum, sum(x) within 1.6e-7 of 1).

Algorithm: the primal active-set method for convex QPs (Nocedal & Wright,
"Numerical Optimization", 2nd ed., Algorithm 16.3), vectorised over the batch.
It keeps a feasible x and a working set W of bounds held active; every
iteration solves the equality-constrained problem on the free coordinates
(one (T+1) x (T+1) linear system per problem: Q restricted to the free
coordinates, identity rows for the held ones, and the simplex row), then either
walks towards its solution up to the first bound it hits (which joins W), or,
at the solution of the equality-constrained problem, releases the held bound
with the most negative multiplier, or stops when none is negative (the KKT
conditions hold: x is optimal). It is exact: the answer is the optimum up to
round-off of the last linear solve, not a tolerance of an iterative scheme, and
on these problems it stops after about |active bounds at the optimum| + a few
iterations. Start: x = l with every bound held (`simplex=False`: the right
start for the dual-cone projection, where x = l is optimal whenever the tasks
do not conflict) or, with `simplex=True`, a given warm start (default l plus
the remaining mass spread evenly) with no bound held.

A singular Q (linearly dependent gradients) is handled by a relative ridge of
`RIDGE` times the largest diagonal entry inside the linear solves only, so the
equality-constrained steps stay defined; the multipliers and the stopping test
use Q itself.
"""

from keras import ops

from mtl_tf.backend import solver_ops
from mtl_tf.solvers._common import _plain_python, _rank, _standard_dtype, _working_dtype

RIDGE = 1e-12
# Multipliers above -TOLERANCE * scale count as non-negative (round-off).
TOLERANCE = 1e-10
# The float32 path's constants (RIDGE and TOLERANCE are below float32 round-off), and the relative size
# of a step that counts as zero in each dtype (1e-13 = 450 eps64; 450 eps32 = 5.4e-5).
RIDGE_FLOAT32 = 1e-6
TOLERANCE_FLOAT32 = 1e-5
_ZERO_STEP = {"float64": 1e-13, "float32": 450 * 1.1920928955078125e-07}


def default_max_iterations(num_variables):
    """The iteration cap: far above what the active-set method needs on these problems (~ T + a few)."""
    return 10 * num_variables + 20


@_plain_python
@solver_ops.compiled_on_jax(("simplex", "max_iterations", "dtype"))
def lower_bounded_qp(q, p, lower, simplex=False, start=None, fixed=None, max_iterations=None, dtype=None):
    """Solves min 1/2 x^T Q x + p_b^T x s.t. x >= l_b (and sum x = 1 if `simplex`) for each row b.

    Args:
      q: [T, T] symmetric positive semi-definite matrix (float32 or float64).
      p: [B, T] linear terms, one problem per row.
      lower: [B, T] lower bounds. With `simplex`, sum_i lower_bi must be <= 1.
      simplex: also require sum_i x_i = 1.
      start: optional [B, T] feasible warm start (only with `simplex`; fixed
        coordinates must equal their lower bound).
      fixed: optional [B, T] bool, coordinates held at their lower bound
        throughout (a variable taking no part, e.g. an unlabelled task).
      max_iterations: iteration cap (default `default_max_iterations(T)`).
      dtype: the working precision, "float64" or "float32"; default float64
        where the backend computes float64, else float32 (module docstring).

    Returns:
      (x, iterations): x [B, T] in the dtype of `q`; iterations, a scalar int32,
      the active-set iterations the slowest problem took.

    Raises:
      ValueError: shapes that do not fit together; dtype="float64" where the
        backend computes float64 as float32.
    """
    in_dtype = _standard_dtype(q)
    out_dtype = in_dtype if in_dtype is not None and "float" in in_dtype else "float32"
    work = _working_dtype(dtype, "float64", "lower_bounded_qp")
    if out_dtype == "float64" and work == "float32":
        out_dtype = "float32"  # float64 input where the backend has none (it could not be returned)
    q = ops.cast(ops.convert_to_tensor(q), work)
    p = ops.cast(ops.convert_to_tensor(p), work)
    lower = ops.cast(ops.convert_to_tensor(lower), work)
    shapes = f"{tuple(q.shape)}, {tuple(p.shape)}, {tuple(lower.shape)}"
    if _rank(q) != 2 or _rank(p) != 2 or _rank(lower) != 2:
        raise ValueError(f"q must be [T, T] and p, lower [B, T]; got {shapes}.")
    num = q.shape[0]
    if num is None or q.shape[1] != num or p.shape[1] != num or lower.shape[1] != num:
        raise ValueError(f"q must be [T, T] and p, lower [B, T] with a static T; got {shapes}.")
    if start is not None and not simplex:
        raise ValueError("start is only used with simplex=True (without it the method starts at x = lower).")
    ridge_factor, tolerance = (RIDGE, TOLERANCE) if work == "float64" else (RIDGE_FLOAT32, TOLERANCE_FLOAT32)
    zero_step = _ZERO_STEP[work]
    batch = p.shape[0] if p.shape[0] is not None else ops.shape(p)[0]
    q = 0.5 * (q + ops.transpose(q))
    scale = ops.max(ops.abs(ops.diagonal(q)))
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    ridge = ridge_factor * scale
    eye = ops.eye(num, dtype=work)

    fixed = ops.zeros_like(lower, dtype="bool") if fixed is None else ops.cast(fixed, "bool")
    if simplex:
        if start is None:
            open_ = ops.cast(ops.logical_not(fixed), work)
            count = ops.maximum(ops.sum(open_, axis=1, keepdims=True), 1.0)
            spare = (1.0 - ops.sum(lower, axis=1, keepdims=True)) / count
            x0 = lower + spare * open_
        else:
            x0 = ops.cast(ops.convert_to_tensor(start), work)
        held0 = fixed
    else:
        x0 = lower
        held0 = ops.ones_like(lower, dtype="bool")
    done0 = ops.zeros([batch], "bool")

    def kkt_step(x, held):
        """The step s to the optimum of the problem with the held bounds as equalities, and nu."""
        free = ops.logical_not(held)
        free_f = ops.cast(free, work)
        gradient = ops.matmul(q[None], x[:, :, None])[:, :, 0] + p  # Q x_b for every row
        both = free_f[:, :, None] * free_f[:, None, :]
        block = q[None] * both + (1.0 - free_f)[:, :, None] * eye[None] + ridge * free_f[:, :, None] * eye[None]
        rhs = -gradient * free_f
        if simplex:
            column = free_f[:, :, None]
            top = ops.concatenate([block, column], axis=2)
            # With no free coordinate the simplex row is void: nu = 0 keeps the system regular.
            corner = 1.0 - ops.max(free_f, axis=1)[:, None, None]
            bottom = ops.concatenate([free_f[:, None, :], corner], axis=2)
            system = ops.concatenate([top, bottom], axis=1)
            solution = ops.solve(system, ops.concatenate([rhs, ops.zeros([batch, 1], work)], axis=1)[:, :, None])
            step, nu = solution[:, :num, 0] * free_f, solution[:, num, 0]
        else:
            step = ops.solve(block, rhs[:, :, None])[:, :, 0] * free_f
            nu = ops.zeros([batch], work)
        return step, nu, gradient

    def body(iteration, x, held, done):
        step, nu, gradient = kkt_step(x, held)
        # Size of the step relative to the point (the tolerance of a zero step).
        size = ops.max(ops.abs(step), axis=1)
        reference = ops.maximum(ops.max(ops.abs(x), axis=1), 1.0)
        stationary = size <= zero_step * reference
        # At the equality-constrained optimum: multipliers of the held bounds.
        multipliers = gradient + nu[:, None]
        g_scale = ops.maximum(ops.max(ops.abs(gradient), axis=1), scale * reference)
        violated = ops.logical_and(held, multipliers < -tolerance * g_scale[:, None])
        violated = ops.logical_and(violated, ops.logical_not(fixed))
        any_violated = ops.any(violated, axis=1)
        release = solver_ops.argmin(ops.where(violated, multipliers, ops.zeros_like(multipliers)), axis=1)
        released = ops.logical_and(held, ops.logical_not(ops.one_hot(release, num, dtype="bool")))
        optimal = ops.logical_and(stationary, ops.logical_not(any_violated))
        # Otherwise walk along the step, up to the first bound it reaches.
        free = ops.logical_not(held)
        decreasing = ops.logical_and(free, step < 0)
        ratio = ops.where(decreasing, (lower - x) / ops.where(decreasing, step, -ops.ones_like(step)),
                         ops.full_like(step, 2.0))
        ratio = ops.maximum(ratio, 0.0)
        blocking = solver_ops.argmin(ratio, axis=1)
        alpha = ops.minimum(ops.min(ratio, axis=1), 1.0)
        blocked = ops.min(ratio, axis=1) < 1.0
        moved = x + alpha[:, None] * step
        # The blocking coordinate sits exactly on its bound.
        hit = ops.logical_and(blocked[:, None], ops.one_hot(blocking, num, dtype="bool"))
        moved = ops.where(hit, lower, moved)
        walked_held = ops.logical_or(held, hit)

        new_x = ops.where(stationary[:, None], x, moved)
        new_held = ops.where(stationary[:, None], released, walked_held)
        finished = ops.logical_or(done, optimal)
        new_x = ops.where(done[:, None], x, new_x)
        new_held = ops.where(finished[:, None], held, new_held)
        return iteration + 1, new_x, new_held, finished

    def cond(iteration, x, held, done):
        return ops.logical_not(ops.all(done))

    cap = default_max_iterations(num) if max_iterations is None else int(max_iterations)
    iterations, x, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), x0, held0, done0), maximum_iterations=cap
    )
    x = ops.maximum(x, lower)
    return ops.cast(x, out_dtype), iterations


@_plain_python
@solver_ops.compiled_on_jax(("norm_eps", "reg_eps", "dtype"))
def dual_cone_weights(gram, u, mask=None, norm_eps=1e-4, reg_eps=1e-4, dtype=None):
    """Weights of the projections of sum_t u_bt g_t onto the dual cone of the gradients, from their Gramian.

    The dual cone of g_1..g_T is {d : <g_t, d> >= 0 for every t}. By
    Proposition 1 of Quinton & Rey, "Jacobian Descent for Multi-Objective
    Optimization" (2024), the projection of J^T u onto it is J^T v with
    v = argmin_{v >= u} v^T K v, K = J J^T. As in TorchJD (the authors'
    library), K is first divided by its trace (replaced by zeros when the trace
    is below `norm_eps`) and `reg_eps` times the identity is added, so the
    program is strictly convex.

    Args:
      gram: [T, T] Gramian (float32 or float64).
      u: [B, T] weights of the vectors to project.
      mask: optional [T] bool; tasks outside it take no part (their v is 0,
        their rows and columns of K are ignored; their u must be 0).
      norm_eps, reg_eps: TorchJD's constants (defaults 1e-4 each).
      dtype: the working precision, as for `lower_bounded_qp` (default float64
        where the backend computes float64, else float32).

    Returns:
      [B, T] v in the working dtype (float64 by default on TensorFlow).
    """
    work = _working_dtype(dtype, "float64", "dual_cone_weights")
    gram = ops.cast(gram, work)
    num = gram.shape[0]
    gram = 0.5 * (gram + ops.transpose(gram))
    mask = ops.ones([num], "bool") if mask is None else ops.cast(mask, "bool")
    both = ops.logical_and(mask[:, None], mask[None, :])
    gram = ops.where(both, gram, ops.zeros_like(gram))
    gram = ops.where(ops.all(ops.isfinite(gram)), gram, ops.zeros_like(gram))
    trace = ops.trace(gram)
    gram = ops.where(trace >= norm_eps, gram / ops.where(trace > 0, trace, ops.ones_like(trace)), ops.zeros_like(gram))
    gram = gram + reg_eps * ops.diag(ops.cast(mask, work))
    u = ops.cast(u, work)
    fixed = ops.logical_and(ops.logical_not(mask)[None], ops.ones_like(u, dtype="bool"))
    v, _ = lower_bounded_qp(gram, ops.zeros_like(u), u, fixed=fixed, dtype=work)
    return v
