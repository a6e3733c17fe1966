"""Min-norm point solvers for MGDA, on the device, from the Gram matrix alone.

MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018) needs the point of the convex hull of the task gradients
g_1..g_T with the smallest norm: alpha on the probability simplex minimising

    ||sum_t alpha_t g_t||^2 = alpha^T M alpha,   M = G G^T  (T x T Gram matrix).

Every solver here sees M only, never the gradients, and is pure TensorFlow
numerics: fixed shapes, `tf.while_loop`s with `maximum_iterations`, no Python
control flow on tensor values, so it runs inside `tf.function` and
`tf.function(jit_compile=True)` (XLA) and under `tf.distribute`.

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

Implementation details of the Wolfe solver (what makes it exact in float32 too)
  * M is symmetrised and divided by its largest (allowed) diagonal entry, which
    makes the method invariant to the scale of the gradients (1e-12 .. 1e12).
  * Lifting: the affine sub-problems use A = M + c 1 1^T. On the simplex
    alpha^T A alpha = alpha^T M alpha + c, so the minimiser is the same, but
    the restriction of A to an affinely independent corral is positive definite
    even when the optimum of the original problem is exactly 0 (more tasks than
    gradient dimensions), and the affine min-norm point of the corral is
    A_S^{-1} 1 / (1^T A_S^{-1} 1). c is the geometric mean of the largest and
    the smallest non-negligible squared gradient norm, and A is used with the
    Jacobi scaling B = S A S (unit diagonal): with c = max norm^2 and no
    scaling, gradients whose norms differ a few hundred times already give
    corral matrices too ill-conditioned for float32. Everything runs in the
    caller's dtype (float32 input is not solved in float64).
  * The inverse of B_S (embedded in a T x T matrix that is the identity outside
    S) is kept up to date with the bordering formula when a point enters and the
    Schur-complement downdate when one leaves. It serves as the preconditioner
    of a few conjugate-gradient steps on B_S u = S 1_S whose products use M
    itself (A x = M x + c sum(x), never a rounded M + c), so the error the
    rank-one updates accumulate does not reach the solution.
  * Schur complements are computed as the squared residual of the entering
    point's best approximation by the corral (no cancellation of the short
    form) and compared with their own round-off. A point that lies numerically
    in the affine hull of the corral (near-duplicate gradients) cannot enter;
    it is swapped in instead (a degenerate pivot): the minimiser of the
    singular sub-problem is far out along the direction that trades the
    corral's best combination for the point, so the step goes along it to the
    first zero weight and that point leaves.
  * Stopping: the Frank-Wolfe gap alpha^T M alpha - min_r (M alpha)_r is at
    most `tolerance * max_t M_tt` (default 1e-12 in float64, 1e-9 in float32)
    or at most its own round-off; or a major cycle fails to decrease the
    objective (exact arithmetic never does that: it is a round-off cycle); or a
    non-finite intermediate; or the iteration cap. The best major-cycle point
    is returned.

Deviations from the official code (github.com/isl-org/MultiObjectiveOptimization,
`min_norm_solvers.py`)
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
    matrix goes through `tf.stop_gradient`).
  * `official` departs from the code only where the code has no answer: the
    iteration cap is real (see above); the points outside `mask` take no part
    (n counts the allowed points); one allowed point gets weight 1 (the code
    fails without a pair); the code's 1e8 start for the best pair cost (an
    error when every pair costs more) is not kept; and the contract below for
    zero or non-finite input (uniform weights) applies as for every method
    (the code returns [0.999, 0.001, 0, ...] for all-zero gradients).

Gradient normalisation (`normalize_gram`, the official `normalization_type`):
g_t is divided by s_t, with s_t = 1 (`none`), ||g_t|| (`l2`), |L_t| (`loss`) or
|L_t| ||g_t|| (`loss+`); in Gram form M' = D M D with D = diag(1/s_t) and
||g_t|| = sqrt(M_tt). Normalisation changes alpha only; callers apply alpha to
the unnormalised losses.
"""

import tensorflow as tf

# No tensor-dependent Python control flow here, so AutoGraph has nothing to
# convert; skipping it saves seconds on the first trace of every step.
_plain_python = tf.autograph.experimental.do_not_convert

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
NORMALIZATION_KINDS = NORMALIZATIONS

DEFAULT_METHOD = "wolfe"
METHODS = ("wolfe", "frank_wolfe", "official")

FRANK_WOLFE_MAX_ITERATIONS = 250
FRANK_WOLFE_TOLERANCE = 1e-5
# The official `MinNormSolver`'s constants: MAX_ITER, STOP_CRIT (on the L1
# change of alpha), the clipped vertex weights of its two-point routine, and
# the smallest step to the simplex boundary it counts (in the Gram matrix's units).
OFFICIAL_MAX_ITERATIONS = 250
OFFICIAL_TOLERANCE = 1e-5
OFFICIAL_GAMMA_RANGE = (0.001, 0.999)
OFFICIAL_STEP_FLOOR = 1e-7
WOLFE_TOLERANCE = {tf.float64: 1e-12, tf.float32: 1e-9}

# A Schur complement or Frank-Wolfe gap below this many units of its own
# round-off counts as zero.
_INDEPENDENCE_NOISE = 100.0
_GAP_NOISE = 10.0
# Preconditioned conjugate-gradient steps per affine solve.
_CG_STEPS = 4
# Smallest lift constant, relative to the largest squared gradient norm.
_LIFT_FLOOR = {tf.float64: 1e-12, tf.float32: 1e-6}


def _wolfe_max_iterations(num_tasks):
    """Default iteration cap of the Wolfe solver (a step adds, swaps or drops a point)."""
    return 10 * num_tasks + 50


# ----------------------------------------------------------------------------
# Input preparation shared by the solvers.


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


# ----------------------------------------------------------------------------
# Two tasks: closed form.


def _two_task_alpha(gram):
    """Closed form on a (normalised) 2 x 2 Gram matrix, in its dtype."""
    a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
    denom = a - 2.0 * b + c  # ||g_1 - g_2||^2
    curved = denom > 0
    alpha1 = tf.clip_by_value((c - b) / tf.where(curved, denom, tf.ones_like(denom)), 0.0, 1.0)
    # Flat (identical gradients, or round-off): the objective is linear in
    # alpha_1, from c at 0 to a at 1, so the shorter gradient wins.
    half = tf.constant(0.5, gram.dtype)
    flat = tf.where(a < c, tf.ones_like(a), tf.where(c < a, tf.zeros_like(a), half))
    alpha1 = tf.where(curved, alpha1, flat)
    return tf.stack([alpha1, 1.0 - alpha1])


@_plain_python
def two_task_weights(gram):
    """The paper's closed form (eq. 4) for T = 2.

    For M = [[a, b], [b, c]]: alpha_1 = clip((c - b) / (a - 2b + c), 0, 1),
    alpha_2 = 1 - alpha_1. When a - 2b + c is not positive (identical
    gradients, or round-off) the shorter gradient gets all the weight, and
    equal norms (every alpha optimal) give [0.5, 0.5]; so do two zero
    gradients. Returns alpha in the dtype of `gram`.
    """
    gram, allowed, uniform, degenerate, out_dtype = _prepare(gram, None)
    if gram.shape[0] is not None and gram.shape[0] != 2:
        raise ValueError(f"two_task_weights needs a 2 x 2 Gram matrix, got shape {gram.shape}.")
    return _finish(_two_task_alpha(gram), allowed, uniform, degenerate, out_dtype)


# ----------------------------------------------------------------------------
# Frank-Wolfe: the paper's Algorithm 2.


def _frank_wolfe(gram, allowed, uniform, max_iterations, tolerance):
    """Algorithm 2 on a prepared Gram matrix -> (alpha, iterations)."""
    dtype = gram.dtype
    tol = tf.constant(tolerance, dtype)
    diag = tf.linalg.diag_part(gram)

    def body(it, alpha, done):
        m_alpha = tf.linalg.matvec(gram, alpha)
        t, b = _argmin_where(m_alpha, allowed)  # b = alpha^T M e_t
        a = tf.reduce_sum(alpha * m_alpha)  # alpha^T M alpha
        c = tf.gather(diag, t)  # e_t^T M e_t
        gamma = _segment_step(a, b, c)
        e_t = tf.one_hot(t, _length(alpha), dtype=dtype)
        alpha = (1.0 - gamma) * alpha + gamma * e_t
        return it + 1, alpha, tf.abs(gamma) < tol

    def cond(it, alpha, done):
        return tf.logical_not(done)

    it0 = tf.constant(0, tf.int32)
    # Nothing to do without an allowed point.
    done0 = tf.logical_not(tf.reduce_any(allowed))
    it, alpha, _ = tf.while_loop(cond, body, (it0, uniform, done0), maximum_iterations=max_iterations)
    return alpha, it


def _segment_step(a, b, c):
    """argmin over gamma in [0, 1] of ||(1 - gamma) x + gamma y||^2.

    a = x.x, b = x.y, c = y.y (the paper's Algorithm 1 with gamma weighting y).
    """
    denom = a - 2.0 * b + c  # ||x - y||^2
    positive = denom > 0
    safe = tf.where(positive, denom, tf.ones_like(denom))
    gamma = tf.clip_by_value((a - b) / safe, 0.0, 1.0)
    # x == y numerically: moving changes nothing, so do not move.
    return tf.where(positive, gamma, tf.zeros_like(gamma))


@_plain_python
def frank_wolfe(gram, max_iterations=None, tolerance=None, mask=None):
    """The paper's Algorithm 2 (plain Frank-Wolfe with exact line search).

    alpha = 1/T (uniform over the allowed points with `mask`); each iteration
    moves towards the vertex e_t with the smallest (M alpha)_t by the exact
    line-search step gamma in [0, 1]; it stops once gamma < `tolerance`
    (default 1e-5) or after `max_iterations` (default 250). T = 2 uses the
    closed form (Algorithm 2 reaches it in its first step). Returns alpha in the
    dtype of `gram`.
    """
    return min_norm_weights(gram, "frank_wolfe", max_iterations, tolerance, mask)


# ----------------------------------------------------------------------------
# Wolfe's minimum-norm-point algorithm (default).


def _lift_constant(diag, allowed):
    """c in A = M + c 1 1^T: geometric mean of the extreme allowed norms^2.

    Too large a c makes the lifted small gradients nearly parallel; too small a
    c makes A nearly singular when the optimum is ~0. The geometric mean of the
    largest (1 after normalisation) and the smallest non-negligible squared
    norm balances the two; the floor keeps c positive with zero gradients.
    """
    floor = tf.constant(_LIFT_FLOOR[diag.dtype], diag.dtype)
    relevant = tf.logical_and(allowed, diag > floor)
    smallest = tf.reduce_min(tf.where(relevant, diag, tf.ones_like(diag)))
    return tf.maximum(tf.sqrt(smallest), floor)


def _wolfe(gram, allowed, max_iterations, tolerance):
    """Wolfe (1976) on a prepared Gram matrix (max allowed diag 1) -> (alpha, iterations)."""
    dtype = gram.dtype
    one = tf.constant(1.0, dtype)
    zero = tf.constant(0.0, dtype)
    eps = tf.constant(_eps(dtype), dtype)
    n = _length(allowed)
    diag = tf.maximum(tf.linalg.diag_part(gram), zero)
    root_diag = tf.sqrt(diag)
    tol = tf.constant(tolerance, dtype)
    lift = _lift_constant(diag, allowed)
    # Jacobi scaling: B = S A S with S = diag(scale) has a unit diagonal.
    scale = tf.math.rsqrt(diag + lift)

    def one_hot(i):
        return tf.one_hot(i, n, dtype=dtype)

    def scaled_lifted(u):
        # B u = S (M + c 1 1^T) S u, without ever rounding M + c.
        x = scale * u
        return scale * (tf.linalg.matvec(gram, x) + lift * tf.reduce_sum(x))

    def affine_point(corral, inverse):
        """A_S^{-1} 1_S (zero outside S): preconditioned CG on B_S u = S 1_S."""
        rhs = corral * scale
        u = tf.linalg.matvec(inverse, rhs)
        r = corral * (rhs - scaled_lifted(u))
        z = corral * tf.linalg.matvec(inverse, r)
        p, rz = z, tf.reduce_sum(r * z)
        for _ in range(_CG_STEPS):
            bp = corral * scaled_lifted(p)
            p_bp = tf.reduce_sum(p * bp)
            ok = tf.logical_and(p_bp > 0, rz > 0)  # False once converged to round-off
            step = tf.where(ok, rz / tf.where(ok, p_bp, one), zero)
            u += step * p
            r -= step * bp
            z = corral * tf.linalg.matvec(inverse, r)
            rz_next = tf.reduce_sum(r * z)
            p = z + tf.where(ok, rz_next / tf.where(ok, rz, one), zero) * p
            rz = rz_next
        return corral * scale * u

    def entering(j, corral, inverse):
        """(q, x, sigma, independent) for bringing point j into the corral.

        q = B_S^{-1} B[S, j]; x = S q are the coefficients of the lifted corral
        points that best approximate the lifted point of j, and the Schur
        complement sigma = B_jj - B[j, S] q is the squared residual of that
        approximation, computed as such to avoid cancellation.
        """
        m_j = tf.gather(gram, j)
        s_j = tf.gather(scale, j)
        q = tf.linalg.matvec(inverse, corral * s_j * scale * (m_j + lift))
        x = corral * scale * q
        x_sum = tf.reduce_sum(x)
        sigma = (
            tf.square(s_j) * tf.gather(diag, j)
            - 2.0 * s_j * tf.reduce_sum(x * m_j)
            + tf.reduce_sum(x * tf.linalg.matvec(gram, x))
            + lift * tf.square(s_j - x_sum)
        )
        # Round-off of sigma: eps times the size of its terms (|M_ik| <=
        # sqrt(M_ii M_kk)), i.e. relative to the points involved.
        size = tf.square(s_j * tf.gather(root_diag, j) + tf.reduce_sum(tf.abs(x) * root_diag))
        size += lift * tf.abs(s_j - x_sum) * (s_j + tf.reduce_sum(tf.abs(x)))
        independent = tf.logical_and(tf.math.is_finite(sigma), sigma > _INDEPENDENCE_NOISE * eps * size)
        return q, x, sigma, independent

    def with_point(inverse, j, q, sigma):
        # Bordering: inverse += (q - e_j)(q - e_j)^T / sigma - e_j e_j^T.
        e_j = one_hot(j)
        z = q - e_j
        return inverse + z[:, None] * z[None, :] / sigma - e_j[:, None] * e_j[None, :]

    def without_point(inverse, k):
        # Downdate: inverse += -h h^T / h_kk + e_k e_k^T, h = row k.
        h = tf.gather(inverse, k)
        h_k = tf.gather(h, k)
        e_k = one_hot(k)
        safe = tf.where(h_k > 0, h_k, one)
        return inverse - h[:, None] * h[None, :] / safe + e_k[:, None] * e_k[None, :], h_k > 0

    def body(it, w, corral, inverse, best, best_value, done):
        in_corral = corral > 0
        y = affine_point(corral, inverse)
        y_sum = tf.reduce_sum(y)
        v = y / tf.where(y_sum > 0, y_sum, one)
        finite = tf.logical_and(y_sum > 0, tf.reduce_all(tf.math.is_finite(v)))
        v = tf.where(finite, v, w)
        feasible = tf.logical_and(finite, tf.reduce_all(tf.logical_or(tf.logical_not(in_corral), v > 0)))

        # Major cycle (v in the simplex): keep v if it improves, test it with
        # its Frank-Wolfe gap, else bring in the most violating point j.
        m_v = tf.linalg.matvec(gram, v)
        value = tf.reduce_sum(v * m_v)
        # Exact Wolfe strictly decreases the objective at every major cycle; a
        # feasible v that does not is a round-off cycle: stop there.
        improved = tf.logical_and(feasible, value < best_value)
        best = tf.where(improved, v, best)
        best_value = tf.where(improved, value, best_value)
        candidates = tf.logical_and(allowed, tf.logical_not(in_corral))
        j, m_vj = _argmin_where(m_v, candidates)
        gap = value - m_vj
        v_size = tf.reduce_sum(v * root_diag)
        gap_noise = _GAP_NOISE * eps * v_size * (v_size + tf.gather(root_diag, j))
        progress = tf.logical_and(improved, gap > tf.maximum(tol, gap_noise))  # False without candidates
        q, x, sigma, independent = entering(j, corral, inverse)
        add = tf.logical_and(progress, independent)

        # Swap (degenerate pivot) when j is numerically in the corral's affine
        # hull: move along d = e_j - x / sum(x) to the first zero weight k.
        coefficients = x / tf.where(tf.reduce_sum(x) > 0, tf.reduce_sum(x), one)
        giving = tf.logical_and(in_corral, coefficients > 0)
        k_swap, t_swap = _argmin_where(v / tf.where(giving, coefficients, one), giving)
        direction = one_hot(j) - coefficients
        curvature = tf.reduce_sum(direction * tf.linalg.matvec(gram, direction))
        descends = tf.logical_and(tf.math.is_finite(t_swap), t_swap * curvature < 2.0 * gap)
        w_swap = tf.maximum(v + t_swap * direction, zero) * (one - one_hot(k_swap))

        # Minor cycle (v outside the simplex): walk from w towards v until a
        # weight hits zero and drop that point.
        step = w - v
        blocking = tf.logical_and(in_corral, v <= 0)
        ratios = tf.where(step > 0, w / tf.where(step > 0, step, one), zero)
        k_minor, theta = _argmin_where(ratios, blocking)
        theta = tf.clip_by_value(tf.where(tf.math.is_finite(theta), theta, zero), 0.0, 1.0)
        w_minor = tf.maximum(w + theta * (v - w), zero) * (one - one_hot(k_minor))

        k = tf.where(feasible, k_swap, k_minor)
        reduced_inverse, droppable = without_point(inverse, k)
        reduced_corral = corral * (one - one_hot(k))
        q_swap, _, sigma_swap, independent_swap = entering(j, reduced_corral, reduced_inverse)
        swap = tf.logical_and(
            tf.logical_and(progress, tf.logical_not(independent)),
            tf.logical_and(tf.logical_and(descends, droppable), independent_swap),
        )
        drop = tf.logical_and(tf.logical_and(finite, tf.logical_not(feasible)), droppable)

        e_j = one_hot(j)
        new_inverse = tf.where(
            add,
            with_point(inverse, j, q, tf.where(add, sigma, one)),
            tf.where(
                swap,
                with_point(reduced_inverse, j, q_swap, tf.where(swap, sigma_swap, one)),
                tf.where(drop, reduced_inverse, inverse),
            ),
        )
        new_corral = tf.where(
            add, corral + e_j, tf.where(swap, reduced_corral + e_j, tf.where(drop, reduced_corral, corral))
        )
        new_w = tf.where(add, v, tf.where(swap, w_swap, tf.where(drop, w_minor, w)))
        new_w_sum = tf.reduce_sum(new_w)
        new_w = tf.where(new_w_sum > 0, new_w / tf.where(new_w_sum > 0, new_w_sum, one), w)
        new_done = tf.logical_not(tf.logical_or(tf.logical_or(add, swap), drop))
        return it + 1, new_w, new_corral, new_inverse, best, best_value, new_done

    def cond(it, w, corral, inverse, best, best_value, done):
        return tf.logical_not(done)

    # Start at the allowed point of smallest norm; B_jj = 1, so its inverse is I.
    j0, _ = _argmin_where(diag, allowed)
    e0 = one_hot(j0)
    state = (
        tf.constant(0, tf.int32),
        e0,
        e0,
        tf.eye(n, dtype=dtype),
        e0,
        tf.constant(float("inf"), dtype),
        tf.logical_not(tf.reduce_any(allowed)),
    )
    it, _, _, _, best, _, _ = tf.while_loop(cond, body, state, maximum_iterations=max_iterations)
    return best, it


@_plain_python
def min_norm_point(gram, max_iterations=None, tolerance=None, mask=None):
    """Wolfe's exact minimum-norm-point algorithm (the default method)."""
    return min_norm_weights(gram, "wolfe", max_iterations, tolerance, mask)


# ----------------------------------------------------------------------------
# The official code's solver (Sener & Koltun's `MinNormSolver`, reused as is by
# the official Pareto MTL code).


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
    result is max(y - threshold, 0).
    """
    dtype = y.dtype
    n = _length(y)
    k = tf.range(n)
    position = tf.cast(k, dtype)
    inf = tf.constant(float("inf"), dtype)
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


# ----------------------------------------------------------------------------
# Public entry points.


@_plain_python
def min_norm_weights_with_info(gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None):
    """Like `min_norm_weights`, but returns (alpha, iterations).

    `iterations` is a scalar int32 tensor: the solver steps taken (Wolfe: major
    cycles that add or swap a point, minor cycles that drop one, and the final
    test; Frank-Wolfe and official: line-search steps, the official one's last
    step being the one whose change was below the tolerance), never more than
    `max_iterations`; 0 for the two-task closed form and for the official
    routine on fewer than 3 points.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown min-norm method {method!r}; valid methods: {', '.join(METHODS)}.")
    if isinstance(max_iterations, bool) or (isinstance(max_iterations, (int, float)) and not max_iterations >= 1):
        raise ValueError(f"max_iterations must be a positive integer or None, got {max_iterations!r}.")
    if isinstance(tolerance, bool) or (isinstance(tolerance, (int, float)) and not tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number or None, got {tolerance!r}.")
    gram, allowed, uniform, degenerate, out_dtype, scale = _prepare(gram, mask, with_scale=True)
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
        tol = WOLFE_TOLERANCE[gram.dtype] if tolerance is None else tolerance

        def general():
            return _wolfe(gram, allowed, cap, tol)

    def closed():
        return _two_task_alpha(gram), tf.constant(0, tf.int32)

    if static and num_tasks == 2:
        if mask is None:
            alpha, its = closed()
        else:
            alpha_c, its_c = closed()
            alpha_g, its_g = general()
            full = tf.reduce_all(allowed)
            alpha = tf.where(full, alpha_c, alpha_g)
            its = tf.where(full, its_c, its_g)
    elif static:
        alpha, its = general()
    else:
        use_closed = tf.logical_and(tf.equal(num_tasks, 2), tf.reduce_all(allowed))
        alpha, its = tf.cond(use_closed, closed, general)
    return _finish(alpha, allowed, uniform, degenerate, out_dtype), its


@_plain_python
def min_norm_weights(gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None):
    """alpha on the simplex minimising alpha^T gram alpha (the MGDA weights).

    Args:
      gram: T x T Gram matrix of the task gradients (float32 or float64; other
        dtypes are solved in float32 and cast back). It is symmetrised; it need
        not be exactly positive semi-definite (round-off is tolerated).
      method: "wolfe" (default; Wolfe's exact minimum-norm-point method),
        "frank_wolfe" (the paper's Algorithm 2) or "official" (the official
        code's `MinNormSolver.find_min_norm_element`, see the module
        docstring). With "wolfe" and "frank_wolfe", T = 2 uses the closed form
        (eq. 4) unless `mask` excludes a point; "official" uses its own
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

    Returns:
      alpha, shape [T], the dtype of `gram`: alpha >= 0 and sum(alpha) = 1
      (zeros for an all-False mask), never NaN. If every allowed gradient is
      zero (any alpha is optimal), or an allowed entry of the Gram matrix is
      NaN or infinite, the uniform weights over the allowed points are
      returned.
    """
    return min_norm_weights_with_info(gram, method, max_iterations, tolerance, mask)[0]


# ----------------------------------------------------------------------------
# Gradient normalisation.


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
