"""The official code's solver.

Sener & Koltun's `MinNormSolver`, reused as is by the official Pareto MTL code.
`_official` on a prepared Gram matrix; the public entry is
`min_norm_weights(..., method="official")`, in `mtl_tf.solvers`.
"""

import tensorflow as tf

from mtl_tf.solvers._common import _length

# The official `MinNormSolver`'s constants: MAX_ITER, STOP_CRIT (on the L1
# change of alpha), the clipped vertex weights of its two-point routine, and
# the smallest step to the simplex boundary it counts (in the Gram matrix's units).
OFFICIAL_MAX_ITERATIONS = 250
OFFICIAL_TOLERANCE = 1e-5
OFFICIAL_GAMMA_RANGE = (0.001, 0.999)
OFFICIAL_STEP_FLOOR = 1e-7


def _official_segment(v1v1, v1v2, v2v2):
    """(gamma, cost) of the official two-point routine; gamma weights the first point.

    The exact minimiser of ||gamma x + (1 - gamma) y||^2 over [0, 1], except
    that the two vertex cases give 0.999 and 0.001 (with the vertex's cost),
    not 1 and 0. Elementwise, so it serves every pair at once.
    """
    first = v1v2 >= v1v1
    second = v1v2 >= v2v2
    # In the interior case both differences are positive, so their sum is a
    # positive denominator; it equals the official v1v1 + v2v2 - 2 v1v2.
    denom = (v1v1 - v1v2) + (v2v2 - v1v2)
    interior = tf.logical_not(tf.logical_or(first, second))
    safe = tf.where(tf.logical_and(interior, denom > 0), denom, tf.ones_like(denom))
    gamma_interior = -(v1v2 - v2v2) / safe
    gamma = tf.where(
        first,
        tf.fill(tf.shape(v1v1), tf.constant(OFFICIAL_GAMMA_RANGE[1], v1v1.dtype)),
        tf.where(second, tf.fill(tf.shape(v1v1), tf.constant(OFFICIAL_GAMMA_RANGE[0], v1v1.dtype)), gamma_interior),
    )
    cost = tf.where(first, v1v1, tf.where(second, v2v2, v2v2 + gamma_interior * (v1v2 - v2v2)))
    return gamma, cost


def _official_start(gram, allowed):
    """The official start: the best pair (i < j) of allowed points, sol_i = gamma, sol_j = 1 - gamma.

    Ties go to the first pair in (i, j) order, as the official double loop
    keeps the first strict improvement. One allowed point gets weight 1.
    """
    dtype = gram.dtype
    n = _length(allowed)
    index = tf.range(n)
    diag = tf.linalg.diag_part(gram)
    gamma, cost = _official_segment(
        diag[:, None] + tf.zeros_like(gram), gram, diag[None, :] + tf.zeros_like(gram)
    )
    pairs = tf.logical_and(
        tf.logical_and(allowed[:, None], allowed[None, :]), index[:, None] < index[None, :]
    )
    inf = tf.constant(float("inf"), dtype)
    cost = tf.where(pairs, cost, tf.fill(tf.shape(cost), inf))
    flat_index = index[:, None] * n + index[None, :]
    best = tf.logical_and(pairs, tf.equal(cost, tf.reduce_min(cost)))
    chosen = tf.reduce_min(tf.where(best, flat_index, tf.fill(tf.shape(flat_index), n * n)))
    pick = tf.cast(tf.equal(flat_index, chosen), dtype)
    gamma_best = tf.reduce_sum(pick * gamma)
    pair_sol = gamma_best * tf.reduce_sum(pick, axis=1) + (1.0 - gamma_best) * tf.reduce_sum(pick, axis=0)
    single = tf.one_hot(tf.argmax(tf.cast(allowed, tf.int32), output_type=tf.int32), n, dtype=dtype)
    single = single * tf.cast(tf.reduce_any(allowed), dtype)
    return tf.where(tf.reduce_any(best), pair_sol, single)


def _simplex_projection(y, allowed, count):
    """The official `_projection2simplex` of the allowed entries of y (zeros elsewhere).

    Sorted descending, the threshold is the first (s_i - 1) / i (s_i the sum
    of the i largest, i < n) above the next value, else (sum(y) - 1) / n; the
    result is max(y - threshold, 0). Computed on y minus its largest allowed
    entry (the same projection in exact arithmetic: every threshold and value
    moves by it), so that the -1 and the differences that decide it are not
    lost in sums of order |y| (the official code's iterates reach the size of
    the Gram matrix's entries).
    """
    dtype = y.dtype
    n = _length(y)
    k = tf.range(n)
    position = tf.cast(k, dtype)
    inf = tf.constant(float("inf"), dtype)
    largest = tf.reduce_max(tf.where(allowed, y, tf.fill(tf.shape(y), -inf)))
    y = tf.where(allowed, y - largest, tf.zeros_like(y))
    ranked = tf.sort(tf.where(allowed, y, tf.fill(tf.shape(y), -inf)), direction="DESCENDING")
    ranked = tf.where(position < count, ranked, tf.zeros_like(ranked))
    threshold = (tf.cumsum(ranked) - 1.0) / (position + 1.0)
    following = tf.concat([ranked[1:], tf.zeros([1], dtype)], axis=0)
    hit = tf.logical_and(position + 1.0 < count, threshold > following)
    first = tf.reduce_min(tf.where(hit, k, tf.fill(tf.shape(k), n)))
    at_first = tf.reduce_sum(tf.where(tf.equal(k, first), threshold, tf.zeros_like(threshold)))
    fallback = (tf.reduce_sum(tf.where(allowed, y, tf.zeros_like(y))) - 1.0) / count
    theta = tf.where(tf.reduce_any(hit), at_first, fallback)
    return tf.where(allowed, tf.maximum(y - theta, tf.zeros_like(y)), tf.zeros_like(y))


def _official(gram, allowed, scale, max_iterations, tolerance):
    """`MinNormSolver.find_min_norm_element` on a prepared Gram matrix -> (alpha, iterations).

    `gram` is the caller's matrix divided by `scale`. The step-size constants
    of the official code (the 1e-7 floor and the default step 1) are in the
    caller's units, so they are multiplied by `scale` here: the iterates are
    those of the official code on the caller's matrix.
    """
    dtype = gram.dtype
    allowed_f = tf.cast(allowed, dtype)
    count = tf.reduce_sum(allowed_f)
    inf = tf.constant(float("inf"), dtype)
    floor = tf.constant(OFFICIAL_STEP_FLOOR, dtype) * scale
    default_step = scale
    tol = tf.constant(tolerance, dtype)

    def body(it, sol, done):
        m_sol = tf.linalg.matvec(gram, sol)
        grad = -m_sol
        proj = allowed_f * (grad - tf.reduce_sum(allowed_f * grad) / count)
        down = tf.logical_and(allowed, proj < 0)
        up = tf.logical_and(allowed, proj > 0)
        safe = tf.where(tf.logical_or(down, up), proj, tf.ones_like(proj))
        to_zero = -sol / safe  # the official tm1
        to_one = (1.0 - sol) / safe  # the official tm2
        counted_zero = tf.logical_and(down, to_zero > floor)
        counted_one = tf.logical_and(up, to_one > floor)
        t_zero = tf.reduce_min(tf.where(counted_zero, to_zero, tf.fill(tf.shape(sol), inf)))
        t_one = tf.reduce_min(tf.where(counted_one, to_one, tf.fill(tf.shape(sol), inf)))
        # Official order: t = 1, replaced (not capped) by the smallest counted
        # tm1, then capped by the smallest counted tm2. So the default step 1
        # bounds t only when no tm1 counts.
        t = tf.minimum(tf.where(tf.reduce_any(counted_zero), t_zero, default_step), t_one)
        target = _simplex_projection(sol + t * proj, allowed, count)
        m_target = tf.linalg.matvec(gram, target)
        gamma, _ = _official_segment(
            tf.reduce_sum(sol * m_sol), tf.reduce_sum(sol * m_target), tf.reduce_sum(target * m_target)
        )
        new = gamma * sol + (1.0 - gamma) * target
        stop = tf.reduce_sum(tf.abs(new - sol)) < tol
        # On a small change the official code returns the point before it.
        return it + 1, tf.where(stop, sol, new), stop

    def cond(it, sol, done):
        return tf.logical_not(done)

    start = _official_start(gram, allowed)
    # With fewer than 3 points the best pair is the answer (no iteration).
    state = (tf.constant(0, tf.int32), start, count < 3.0)
    it, alpha, _ = tf.while_loop(cond, body, state, maximum_iterations=max_iterations)
    return alpha, it
