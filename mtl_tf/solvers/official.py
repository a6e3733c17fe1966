"""The official code's solver.

Sener & Koltun's `MinNormSolver`, reused as is by the official Pareto MTL code.
`_official` on a prepared Gram matrix; the public entry is
`min_norm_weights(..., method="official")`, in `mtl_tf.solvers`.

Precision: the working dtype of `min_norm_weights` (float64 for float64 input
where the backend has float64, else float32; `dtype=` picks it). The routine
is not exact by design: it stops on an L1 change below 1e-5, so its distance to
the optimum is the routine's own, in either dtype; in float64 it follows the
official code's iterates to round-off, in float32 its stopping point moves with
float32 round-off (to ~5e-4 in alpha on the tests' problems).
"""

from keras import ops

from mtl_tf.solvers._common import _length, _matvec

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
    interior = ops.logical_not(ops.logical_or(first, second))
    safe = ops.where(ops.logical_and(interior, denom > 0), denom, ops.ones_like(denom))
    gamma_interior = -(v1v2 - v2v2) / safe
    gamma = ops.where(
        first,
        ops.full_like(v1v1, ops.convert_to_tensor(OFFICIAL_GAMMA_RANGE[1], v1v1.dtype)),
        ops.where(second, ops.full_like(v1v1, ops.convert_to_tensor(OFFICIAL_GAMMA_RANGE[0], v1v1.dtype)), gamma_interior),
    )
    cost = ops.where(first, v1v1, ops.where(second, v2v2, v2v2 + gamma_interior * (v1v2 - v2v2)))
    return gamma, cost


def _official_start(gram, allowed):
    """The official start: the best pair (i < j) of allowed points, sol_i = gamma, sol_j = 1 - gamma.

    Ties go to the first pair in (i, j) order, as the official double loop
    keeps the first strict improvement. One allowed point gets weight 1.
    """
    dtype = gram.dtype
    n = _length(allowed)
    index = ops.arange(n)
    diag = ops.diagonal(gram)
    gamma, cost = _official_segment(
        diag[:, None] + ops.zeros_like(gram), gram, diag[None, :] + ops.zeros_like(gram)
    )
    pairs = ops.logical_and(
        ops.logical_and(allowed[:, None], allowed[None, :]), index[:, None] < index[None, :]
    )
    inf = ops.convert_to_tensor(float("inf"), dtype)
    cost = ops.where(pairs, cost, ops.full_like(cost, inf))
    flat_index = index[:, None] * n + index[None, :]
    best = ops.logical_and(pairs, ops.equal(cost, ops.min(cost)))
    chosen = ops.min(ops.where(best, flat_index, ops.full_like(flat_index, n * n)))
    pick = ops.cast(ops.equal(flat_index, chosen), dtype)
    gamma_best = ops.sum(pick * gamma)
    pair_sol = gamma_best * ops.sum(pick, axis=1) + (1.0 - gamma_best) * ops.sum(pick, axis=0)
    single = ops.one_hot(ops.argmax(ops.cast(allowed, "int32")), n, dtype=dtype)
    single = single * ops.cast(ops.any(allowed), dtype)
    return ops.where(ops.any(best), pair_sol, single)


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
    k = ops.arange(n)
    position = ops.cast(k, dtype)
    inf = ops.convert_to_tensor(float("inf"), dtype)
    largest = ops.max(ops.where(allowed, y, ops.full_like(y, -inf)))
    y = ops.where(allowed, y - largest, ops.zeros_like(y))
    ranked = -ops.sort(ops.where(allowed, -y, ops.full_like(y, inf)))  # descending
    ranked = ops.where(position < count, ranked, ops.zeros_like(ranked))
    threshold = (ops.cumsum(ranked) - 1.0) / (position + 1.0)
    following = ops.concatenate([ranked[1:], ops.zeros([1], dtype)], axis=0)
    hit = ops.logical_and(position + 1.0 < count, threshold > following)
    first = ops.min(ops.where(hit, k, ops.full_like(k, n)))
    at_first = ops.sum(ops.where(ops.equal(k, first), threshold, ops.zeros_like(threshold)))
    fallback = (ops.sum(ops.where(allowed, y, ops.zeros_like(y))) - 1.0) / count
    theta = ops.where(ops.any(hit), at_first, fallback)
    return ops.where(allowed, ops.maximum(y - theta, ops.zeros_like(y)), ops.zeros_like(y))


def _official(gram, allowed, scale, max_iterations, tolerance):
    """`MinNormSolver.find_min_norm_element` on a prepared Gram matrix -> (alpha, iterations).

    `gram` is the caller's matrix divided by `scale`. The step-size constants
    of the official code (the 1e-7 floor and the default step 1) are in the
    caller's units, so they are multiplied by `scale` here: the iterates are
    those of the official code on the caller's matrix.
    """
    dtype = gram.dtype
    allowed_f = ops.cast(allowed, dtype)
    count = ops.sum(allowed_f)
    inf = ops.convert_to_tensor(float("inf"), dtype)
    floor = ops.convert_to_tensor(OFFICIAL_STEP_FLOOR, dtype) * scale
    default_step = scale
    tol = ops.convert_to_tensor(tolerance, dtype)

    def body(it, sol, done):
        m_sol = _matvec(gram, sol)
        grad = -m_sol
        proj = allowed_f * (grad - ops.sum(allowed_f * grad) / count)
        down = ops.logical_and(allowed, proj < 0)
        up = ops.logical_and(allowed, proj > 0)
        safe = ops.where(ops.logical_or(down, up), proj, ops.ones_like(proj))
        to_zero = -sol / safe  # the official tm1
        to_one = (1.0 - sol) / safe  # the official tm2
        counted_zero = ops.logical_and(down, to_zero > floor)
        counted_one = ops.logical_and(up, to_one > floor)
        t_zero = ops.min(ops.where(counted_zero, to_zero, ops.full_like(sol, inf)))
        t_one = ops.min(ops.where(counted_one, to_one, ops.full_like(sol, inf)))
        # Official order: t = 1, replaced (not capped) by the smallest counted
        # tm1, then capped by the smallest counted tm2. So the default step 1
        # bounds t only when no tm1 counts.
        t = ops.minimum(ops.where(ops.any(counted_zero), t_zero, default_step), t_one)
        target = _simplex_projection(sol + t * proj, allowed, count)
        m_target = _matvec(gram, target)
        gamma, _ = _official_segment(
            ops.sum(sol * m_sol), ops.sum(sol * m_target), ops.sum(target * m_target)
        )
        new = gamma * sol + (1.0 - gamma) * target
        stop = ops.sum(ops.abs(new - sol)) < tol
        # On a small change the official code returns the point before it.
        return it + 1, ops.where(stop, sol, new), stop

    def cond(it, sol, done):
        return ops.logical_not(done)

    start = _official_start(gram, allowed)
    # With fewer than 3 points the best pair is the answer (no iteration).
    state = (ops.convert_to_tensor(0, "int32"), start, count < 3.0)
    it, alpha, _ = ops.while_loop(cond, body, state, maximum_iterations=max_iterations)
    return alpha, it
