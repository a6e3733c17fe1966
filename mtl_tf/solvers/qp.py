"""Small convex quadratic programs with lower bounds (and optionally on the simplex), on the device.

Several gradient methods reduce to a T x T quadratic program on the Gramian
K = G G^T of the task gradients (UPGrad and DualProj: the dual-cone
projection, min_v v^T K v s.t. v >= u; CAGrad: a quadratic model on the
simplex). `lower_bounded_qp` solves a batch of them,

    minimise  1/2 x^T Q x + p_b^T x   subject to  x >= l_b   (and sum_i x_i = 1 if `simplex`)

for every row b of p and l, with one Q shared by the batch (Q positive
semi-definite). Pure TensorFlow numerics: fixed shapes, one `tf.while_loop`
with `maximum_iterations`, no Python control flow on tensor values, so it runs
inside `tf.function(jit_compile=True)` and under `tf.distribute`. It works in
float64 (the problems are tiny; float32 round-off would otherwise show in the
active-set decisions) and returns the caller's dtype.

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

import tensorflow as tf

RIDGE = 1e-12
# Multipliers above -TOLERANCE * scale count as non-negative (round-off).
TOLERANCE = 1e-10


def default_max_iterations(num_variables):
    """The iteration cap: far above what the active-set method needs on these problems (~ T + a few)."""
    return 10 * num_variables + 20


@tf.autograph.experimental.do_not_convert
def lower_bounded_qp(q, p, lower, simplex=False, start=None, fixed=None, max_iterations=None):
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

    Returns:
      (x, iterations): x [B, T] in the dtype of `q`; iterations, a scalar int32,
      the active-set iterations the slowest problem took.

    Raises:
      ValueError: shapes that do not fit together.
    """
    q = tf.convert_to_tensor(q)
    out_dtype = q.dtype if q.dtype.is_floating else tf.float32
    q = tf.cast(q, tf.float64)
    p = tf.cast(tf.convert_to_tensor(p), tf.float64)
    lower = tf.cast(tf.convert_to_tensor(lower), tf.float64)
    if q.shape.rank != 2 or p.shape.rank != 2 or lower.shape.rank != 2:
        raise ValueError(f"q must be [T, T] and p, lower [B, T]; got {q.shape}, {p.shape}, {lower.shape}.")
    num = q.shape[0]
    if num is None or q.shape[1] != num or p.shape[1] != num or lower.shape[1] != num:
        raise ValueError(f"q must be [T, T] and p, lower [B, T] with a static T; got {q.shape}, {p.shape}, {lower.shape}.")
    if start is not None and not simplex:
        raise ValueError("start is only used with simplex=True (without it the method starts at x = lower).")
    batch = p.shape[0] if p.shape[0] is not None else tf.shape(p)[0]
    q = 0.5 * (q + tf.transpose(q))
    scale = tf.reduce_max(tf.abs(tf.linalg.diag_part(q)))
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    ridge = RIDGE * scale
    eye = tf.eye(num, dtype=tf.float64)

    fixed = tf.zeros_like(lower, dtype=tf.bool) if fixed is None else tf.cast(fixed, tf.bool)
    if simplex:
        if start is None:
            open_ = tf.cast(tf.logical_not(fixed), tf.float64)
            count = tf.maximum(tf.reduce_sum(open_, axis=1, keepdims=True), 1.0)
            spare = (1.0 - tf.reduce_sum(lower, axis=1, keepdims=True)) / count
            x0 = lower + spare * open_
        else:
            x0 = tf.cast(tf.convert_to_tensor(start), tf.float64)
        held0 = fixed
    else:
        x0 = lower
        held0 = tf.ones_like(lower, dtype=tf.bool)
    done0 = tf.zeros([batch], tf.bool)

    def kkt_step(x, held):
        """The step s to the optimum of the problem with the held bounds as equalities, and nu."""
        free = tf.logical_not(held)
        free_f = tf.cast(free, tf.float64)
        gradient = tf.linalg.matvec(q, x) + p
        both = free_f[:, :, None] * free_f[:, None, :]
        block = q[None] * both + (1.0 - free_f)[:, :, None] * eye[None] + ridge * free_f[:, :, None] * eye[None]
        rhs = -gradient * free_f
        if simplex:
            column = free_f[:, :, None]
            top = tf.concat([block, column], axis=2)
            # With no free coordinate the simplex row is void: nu = 0 keeps the system regular.
            corner = 1.0 - tf.reduce_max(free_f, axis=1)[:, None, None]
            bottom = tf.concat([free_f[:, None, :], corner], axis=2)
            system = tf.concat([top, bottom], axis=1)
            solution = tf.linalg.solve(system, tf.concat([rhs, tf.zeros([batch, 1], tf.float64)], axis=1)[:, :, None])
            step, nu = solution[:, :num, 0] * free_f, solution[:, num, 0]
        else:
            step = tf.linalg.solve(block, rhs[:, :, None])[:, :, 0] * free_f
            nu = tf.zeros([batch], tf.float64)
        return step, nu, gradient

    def body(iteration, x, held, done):
        step, nu, gradient = kkt_step(x, held)
        # Size of the step relative to the point (the tolerance of a zero step).
        size = tf.reduce_max(tf.abs(step), axis=1)
        reference = tf.maximum(tf.reduce_max(tf.abs(x), axis=1), 1.0)
        stationary = size <= 1e-13 * reference
        # At the equality-constrained optimum: multipliers of the held bounds.
        multipliers = gradient + nu[:, None]
        g_scale = tf.maximum(tf.reduce_max(tf.abs(gradient), axis=1), scale * reference)
        violated = tf.logical_and(held, multipliers < -TOLERANCE * g_scale[:, None])
        violated = tf.logical_and(violated, tf.logical_not(fixed))
        any_violated = tf.reduce_any(violated, axis=1)
        release = tf.argmin(tf.where(violated, multipliers, tf.zeros_like(multipliers)), axis=1, output_type=tf.int32)
        released = tf.logical_and(held, tf.logical_not(tf.one_hot(release, num, on_value=True, off_value=False)))
        optimal = tf.logical_and(stationary, tf.logical_not(any_violated))
        # Otherwise walk along the step, up to the first bound it reaches.
        free = tf.logical_not(held)
        decreasing = tf.logical_and(free, step < 0)
        ratio = tf.where(decreasing, (lower - x) / tf.where(decreasing, step, -tf.ones_like(step)),
                         tf.fill(tf.shape(step), tf.constant(2.0, tf.float64)))
        ratio = tf.maximum(ratio, 0.0)
        blocking = tf.argmin(ratio, axis=1, output_type=tf.int32)
        alpha = tf.minimum(tf.reduce_min(ratio, axis=1), 1.0)
        blocked = tf.reduce_min(ratio, axis=1) < 1.0
        moved = x + alpha[:, None] * step
        # The blocking coordinate sits exactly on its bound.
        hit = tf.logical_and(blocked[:, None], tf.one_hot(blocking, num, on_value=True, off_value=False))
        moved = tf.where(hit, lower, moved)
        walked_held = tf.logical_or(held, hit)

        new_x = tf.where(stationary[:, None], x, moved)
        new_held = tf.where(stationary[:, None], released, walked_held)
        finished = tf.logical_or(done, optimal)
        new_x = tf.where(done[:, None], x, new_x)
        new_held = tf.where(finished[:, None], held, new_held)
        return iteration + 1, new_x, new_held, finished

    def cond(iteration, x, held, done):
        return tf.logical_not(tf.reduce_all(done))

    cap = default_max_iterations(num) if max_iterations is None else int(max_iterations)
    iterations, x, _, _ = tf.while_loop(
        cond, body, (tf.constant(0), x0, held0, done0), maximum_iterations=cap
    )
    x = tf.maximum(x, lower)
    return tf.cast(x, out_dtype), iterations


@tf.autograph.experimental.do_not_convert
def dual_cone_weights(gram, u, mask=None, norm_eps=1e-4, reg_eps=1e-4):
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

    Returns:
      [B, T] float64 v.
    """
    gram = tf.cast(gram, tf.float64)
    num = gram.shape[0]
    gram = 0.5 * (gram + tf.transpose(gram))
    mask = tf.ones([num], tf.bool) if mask is None else tf.cast(mask, tf.bool)
    both = tf.logical_and(mask[:, None], mask[None, :])
    gram = tf.where(both, gram, tf.zeros_like(gram))
    gram = tf.where(tf.reduce_all(tf.math.is_finite(gram)), gram, tf.zeros_like(gram))
    trace = tf.linalg.trace(gram)
    gram = tf.where(trace >= norm_eps, gram / tf.where(trace > 0, trace, tf.ones_like(trace)), tf.zeros_like(gram))
    gram = gram + reg_eps * tf.linalg.diag(tf.cast(mask, tf.float64))
    u = tf.cast(u, tf.float64)
    fixed = tf.logical_and(tf.logical_not(mask)[None], tf.ones_like(u, dtype=tf.bool))
    v, _ = lower_bounded_qp(gram, tf.zeros_like(u), u, fixed=fixed)
    return v
