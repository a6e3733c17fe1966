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
    the paper says; the code clips to [0.001, 0.999].
  * The default solver iterates to the exact min-norm point instead of stopping
    Frank-Wolfe after a small change.
  * `frank_wolfe` starts from alpha = 1/T as Algorithm 2 says (the code starts
    from the best pair of tasks) and stops when gamma < tolerance (the code stops
    when the L1 change of alpha is below it). The code's Frank-Wolfe loop never
    increments its iteration counter, so its 250-iteration cap never applies;
    here the cap is real.
  * Everything runs on the device; alpha is a constant for autodiff (the Gram
    matrix goes through `tf.stop_gradient`).

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
METHODS = ("wolfe", "frank_wolfe")

FRANK_WOLFE_MAX_ITERATIONS = 250
FRANK_WOLFE_TOLERANCE = 1e-5
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


def _prepare(gram, mask):
    """Symmetric, masked, scale-normalised Gram matrix and the solver state.

    Returns (normalised gram, allowed mask, uniform weights over the allowed
    points, degenerate flag, caller dtype). Rows and columns of excluded points
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
# Public entry points.


@_plain_python
def min_norm_weights_with_info(gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None):
    """Like `min_norm_weights`, but returns (alpha, iterations).

    `iterations` is a scalar int32 tensor: the solver steps taken (Wolfe: major
    cycles that add or swap a point, minor cycles that drop one, and the final
    test; Frank-Wolfe: line-search steps), never more than `max_iterations`; 0
    for the two-task closed form.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown min-norm method {method!r}; valid methods: {', '.join(METHODS)}.")
    if isinstance(max_iterations, bool) or (isinstance(max_iterations, (int, float)) and not max_iterations >= 1):
        raise ValueError(f"max_iterations must be a positive integer or None, got {max_iterations!r}.")
    if isinstance(tolerance, bool) or (isinstance(tolerance, (int, float)) and not tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number or None, got {tolerance!r}.")
    gram, allowed, uniform, degenerate, out_dtype = _prepare(gram, mask)
    num_tasks = _num_tasks(gram)
    static = isinstance(num_tasks, int)

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
      method: "wolfe" (default; Wolfe's exact minimum-norm-point method) or
        "frank_wolfe" (the paper's Algorithm 2). T = 2 always uses the closed
        form (eq. 4) unless `mask` excludes a point.
      max_iterations: iteration cap (Wolfe: 10 T + 50 steps; Frank-Wolfe: 250).
      tolerance: Wolfe: Frank-Wolfe gap relative to the largest squared
        gradient norm (1e-12 float64, 1e-9 float32; it also stops at the gap's
        round-off level); Frank-Wolfe: the step size gamma below which it stops
        (1e-5).
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
