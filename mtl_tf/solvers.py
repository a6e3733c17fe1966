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
  M = [[a, b], [b, c]]; identical gradients (a - 2b + c = 0, where every alpha
  is optimal) give 0.5 / 0.5. Every method uses it when T = 2.
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
  |support| + a few steps). It was chosen because (a) it is exact, unlike
  Frank-Wolfe variants that are only linearly convergent, (b) each step is a
  rank-one update, so it costs O(T^2) vectorised work (a few matrix-vector
  products) instead of a fresh factorisation (XLA's Cholesky of a 40 x 40 matrix
  alone costs ~0.2 ms on CPU), and (c) its stopping test is the Frank-Wolfe
  duality gap of the returned alpha, a certificate computed from M itself:
  alpha^T M alpha - min over alpha' <= 2 * gap.

Implementation details of the Wolfe solver
  * M is symmetrised and divided by its largest (allowed) diagonal entry, which
    makes the method invariant to the scale of the gradients (1e-12 .. 1e12).
  * Lifting: the solver works with A = M / max diag + 1 (all-ones added). On
    the simplex alpha^T A alpha = alpha^T M alpha / max diag + 1, so the
    minimiser is the same, but the restriction of A to an affinely independent
    corral is positive definite even when the optimum of the original problem
    is exactly 0 (rank-deficient M, more tasks than gradient dimensions), and
    the affine min-norm point of the corral is simply A_S^{-1} 1 / (1^T A_S^{-1} 1).
  * The inverse of A_S (embedded in a T x T matrix that is the identity outside
    S) is kept up to date with the bordering formula when a point enters and the
    Schur-complement downdate when one leaves; the affine solution gets one step
    of iterative refinement against A at every iteration, which keeps it
    accurate to round-off. A point whose Schur complement is below round-off
    (numerically inside the corral's hull), a non-finite intermediate, or the
    iteration cap stops the loop on the last feasible alpha.
  * Tolerance (`tolerance`): stop when the Frank-Wolfe gap
    alpha^T M alpha - min_r (M alpha)_r is at most `tolerance * max_t M_tt`
    (default 1e-12 in float64, 1e-6 in float32).

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

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
NORMALIZATION_KINDS = NORMALIZATIONS

DEFAULT_METHOD = "wolfe"
METHODS = ("wolfe", "frank_wolfe")

FRANK_WOLFE_MAX_ITERATIONS = 250
FRANK_WOLFE_TOLERANCE = 1e-5
WOLFE_TOLERANCE = {tf.float64: 1e-12, tf.float32: 1e-6}


def _wolfe_max_iterations(num_tasks):
    """Default iteration cap of the Wolfe solver (a step adds or drops a point)."""
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
    gram = tf.stop_gradient(tf.cast(gram, work_dtype))
    if gram.shape.rank is not None and gram.shape.rank != 2:
        raise ValueError(f"gram must be a T x T matrix, got shape {gram.shape}.")
    rows, cols = gram.shape.as_list() if gram.shape.rank == 2 else (None, None)
    if rows is not None and cols is not None and rows != cols:
        raise ValueError(f"gram must be square, got shape {gram.shape}.")
    gram = 0.5 * (gram + tf.transpose(gram))
    return gram, out_dtype


def _num_tasks(gram):
    """T as a Python int when static, else as a scalar int32 tensor."""
    static = gram.shape[0] if gram.shape[0] is not None else gram.shape[1]
    return static if static is not None else tf.shape(gram)[0]


def _as_mask(mask, num_tasks):
    if mask is None:
        return None
    mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)
    mask = tf.reshape(mask, [num_tasks] if isinstance(num_tasks, int) else [-1])
    return mask


def _prepare(gram, mask):
    """Symmetric, masked, scale-normalised Gram matrix and the solver state.

    Returns (normalised gram, allowed mask, uniform weights over the allowed
    points, degenerate flag, caller dtype). Rows and columns of excluded points
    are zeroed (so NaN or inf there cannot leak in); the matrix is divided by
    its largest allowed diagonal entry. `degenerate` is True when no point is
    allowed or every allowed gradient is zero (then any alpha is optimal and the
    solvers return `uniform`).
    """
    gram, out_dtype = _as_gram(gram)
    num_tasks = _num_tasks(gram)
    mask = _as_mask(mask, num_tasks)
    if mask is None:
        allowed = tf.ones(tf.shape(gram)[:1], tf.bool)
        if isinstance(num_tasks, int):
            allowed = tf.ones([num_tasks], tf.bool)
    else:
        allowed = mask
        both = tf.logical_and(allowed[:, None], allowed[None, :])
        gram = tf.where(both, gram, tf.zeros_like(gram))
    diag = tf.linalg.diag_part(gram)
    scale = tf.reduce_max(tf.where(allowed, diag, tf.zeros_like(diag)))
    usable = tf.logical_and(scale > 0, tf.math.is_finite(scale))
    safe_scale = tf.where(usable, scale, tf.ones_like(scale))
    gram = gram / safe_scale
    allowed_f = tf.cast(allowed, gram.dtype)
    count = tf.reduce_sum(allowed_f)
    uniform = tf.math.divide_no_nan(allowed_f, count)
    degenerate = tf.logical_not(usable)
    return gram, allowed, uniform, degenerate, out_dtype


def _finish(alpha, allowed, uniform, degenerate, out_dtype):
    """Project round-off back onto the simplex; never return NaN."""
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


# ----------------------------------------------------------------------------
# Two tasks: closed form.


def _two_task_alpha(gram):
    """Closed form on a (normalised) 2 x 2 Gram matrix, in its dtype."""
    a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
    denom = a - 2.0 * b + c
    eps = tf.constant(8.0 * _eps(gram.dtype), gram.dtype)
    flat = tf.logical_not(denom > eps * (tf.abs(a) + tf.abs(c)))
    safe = tf.where(flat, tf.ones_like(denom), denom)
    alpha1 = tf.clip_by_value((c - b) / safe, 0.0, 1.0)
    alpha1 = tf.where(flat, tf.constant(0.5, gram.dtype), alpha1)
    return tf.stack([alpha1, 1.0 - alpha1])


def _eps(dtype):
    return 2.220446049250313e-16 if dtype == tf.float64 else 1.1920928955078125e-07


def two_task_weights(gram):
    """The paper's closed form (eq. 4) for T = 2.

    For M = [[a, b], [b, c]]: alpha_1 = clip((c - b) / (a - 2b + c), 0, 1),
    alpha_2 = 1 - alpha_1. When a - 2b + c is zero up to round-off (identical
    gradients; every alpha is optimal) it returns [0.5, 0.5]. Two zero
    gradients also give [0.5, 0.5].
    """
    gram, allowed, uniform, degenerate, out_dtype = _prepare(gram, None)
    if gram.shape[0] is not None and gram.shape[0] != 2:
        raise ValueError(f"two_task_weights needs a 2 x 2 Gram matrix, got {gram.shape}.")
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
        e_t = tf.one_hot(t, tf.size(alpha), dtype=dtype)
        alpha = (1.0 - gamma) * alpha + gamma * e_t
        return it + 1, alpha, tf.abs(gamma) < tol

    def cond(it, alpha, done):
        return tf.logical_not(done)

    it0 = tf.constant(0, tf.int32)
    # Nothing to do without an allowed point.
    done0 = tf.logical_not(tf.reduce_any(allowed))
    it, alpha, _ = tf.while_loop(
        cond, body, (it0, uniform, done0), maximum_iterations=max_iterations
    )
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


def frank_wolfe(gram, max_iterations=None, tolerance=None, mask=None):
    """The paper's Algorithm 2 (plain Frank-Wolfe with exact line search).

    alpha = 1/T (uniform over the allowed points with `mask`); each iteration
    moves towards the vertex e_t with the smallest (M alpha)_t by the exact
    line-search step gamma in [0, 1]; it stops once gamma < `tolerance`
    (default 1e-5) or after `max_iterations` (default 250). T = 2 uses the
    closed form. Returns alpha in the dtype of `gram`.
    """
    return min_norm_weights(gram, "frank_wolfe", max_iterations, tolerance, mask)


# ----------------------------------------------------------------------------
# Wolfe's minimum-norm-point algorithm (default).


def _wolfe(gram, allowed, max_iterations, tolerance):
    """Wolfe (1976) on a prepared Gram matrix (max allowed diag 1) -> (alpha, iterations)."""
    dtype = gram.dtype
    one = tf.constant(1.0, dtype)
    zero = tf.constant(0.0, dtype)
    n = tf.size(allowed)
    lifted = gram + one  # A = M + 1 1^T: same minimiser on the simplex, PD on corrals
    lifted_diag = tf.linalg.diag_part(lifted)
    tol = tf.constant(tolerance, dtype)
    # A Schur complement below this is round-off: the point is in the corral's hull.
    sigma_min = tf.constant(1e3 * _eps(dtype), dtype)
    eye = tf.eye(n, dtype=dtype)

    # Start at the allowed point of smallest norm.
    j0, _ = _argmin_where(lifted_diag, allowed)
    e0 = tf.one_hot(j0, n, dtype=dtype)
    corral0 = e0
    inverse0 = eye + (1.0 / tf.gather(lifted_diag, j0) - one) * e0[:, None] * e0[None, :]

    def body(it, w, corral, inverse, done):
        in_corral = corral > 0
        # Affine min-norm point of the corral: y = A_S^{-1} 1_S, refined once.
        y = tf.linalg.matvec(inverse, corral)
        residual = corral * (one - tf.linalg.matvec(lifted, y))
        y = corral * (y + tf.linalg.matvec(inverse, residual))
        y_sum = tf.reduce_sum(y)
        v = y / y_sum
        finite = tf.logical_and(y_sum > 0, tf.reduce_all(tf.math.is_finite(v)))
        v = tf.where(finite, v, w)
        feasible = tf.reduce_all(tf.logical_or(tf.logical_not(in_corral), v > 0))

        # Major cycle (v is in the simplex): optimality test, then add a point.
        g = tf.linalg.matvec(lifted, v)
        vg = tf.reduce_sum(v * g)
        candidates = tf.logical_and(allowed, tf.logical_not(in_corral))
        j, g_j = _argmin_where(g, candidates)
        converged = tf.logical_not(vg - g_j > tol)  # also true without candidates
        e_j = tf.one_hot(j, n, dtype=dtype)
        b = tf.gather(lifted, j) * corral
        q = tf.linalg.matvec(inverse, b)
        sigma = tf.gather(lifted_diag, j) - tf.reduce_sum(b * q)
        independent = sigma > sigma_min
        add = tf.logical_and(tf.logical_not(converged), independent)

        # Minor cycle (v leaves the simplex): walk from w towards v until a
        # weight hits zero, drop that point.
        step = w - v
        blocking = tf.logical_and(in_corral, v <= 0)
        ratio = tf.where(step > 0, w / tf.where(step > 0, step, tf.ones_like(step)), tf.zeros_like(w))
        k, theta = _argmin_where(ratio, blocking)
        theta = tf.clip_by_value(tf.where(tf.math.is_finite(theta), theta, zero), 0.0, 1.0)
        e_k = tf.one_hot(k, n, dtype=dtype)
        w_minor = tf.maximum(w + theta * (v - w), zero) * corral * (one - e_k)
        h = tf.gather(inverse, k)
        h_k = tf.gather(h, k)
        h_ok = h_k > 0

        # One rank-one update of the embedded inverse covers both cycles:
        # add j: inverse += (q - e_j)(q - e_j)^T / sigma - e_j e_j^T
        # drop k: inverse += -h h^T / h_kk + e_k e_k^T
        z = tf.where(feasible, q - e_j, h)
        c_z = tf.where(
            feasible,
            tf.where(add, one / tf.where(add, sigma, one), zero),
            tf.where(h_ok, -one / tf.where(h_ok, h_k, one), zero),
        )
        e_m = tf.where(feasible, e_j, e_k)
        c_m = tf.where(feasible, tf.where(add, -one, zero), one)
        new_inverse = inverse + c_z * z[:, None] * z[None, :] + c_m * e_m[:, None] * e_m[None, :]
        new_corral = tf.where(feasible, corral + tf.where(add, one, zero) * e_j, corral * (one - e_k))
        new_w = tf.where(feasible, v, w_minor)
        new_done = tf.logical_or(
            tf.logical_and(feasible, tf.logical_not(add)), tf.logical_not(finite)
        )
        # A non-finite solve leaves the state alone and stops.
        new_w = tf.where(finite, new_w, w)
        new_corral = tf.where(finite, new_corral, corral)
        new_inverse = tf.where(finite, new_inverse, inverse)
        return it + 1, new_w, new_corral, new_inverse, new_done

    def cond(it, w, corral, inverse, done):
        return tf.logical_not(done)

    it0 = tf.constant(0, tf.int32)
    done0 = tf.logical_not(tf.reduce_any(allowed))
    it, w, _, _, _ = tf.while_loop(
        cond,
        body,
        (it0, e0, corral0, inverse0, done0),
        maximum_iterations=max_iterations,
    )
    return w, it


def min_norm_point(gram, max_iterations=None, tolerance=None, mask=None):
    """Wolfe's exact minimum-norm-point algorithm (the default method)."""
    return min_norm_weights(gram, "wolfe", max_iterations, tolerance, mask)


# ----------------------------------------------------------------------------
# Public entry points.


def min_norm_weights_with_info(
    gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None
):
    """Like `min_norm_weights`, but returns (alpha, iterations).

    `iterations` is a scalar int32 tensor: the solver steps taken (Wolfe: major
    plus minor cycles; Frank-Wolfe: line-search steps), 0 for the two-task
    closed form.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown min-norm method {method!r}; valid methods: {', '.join(METHODS)}.")
    gram, allowed, uniform, degenerate, out_dtype = _prepare(gram, mask)
    num_tasks = _num_tasks(gram)
    static = isinstance(num_tasks, int)

    if method == "frank_wolfe":
        cap = FRANK_WOLFE_MAX_ITERATIONS if max_iterations is None else max_iterations
        tol = FRANK_WOLFE_TOLERANCE if tolerance is None else tolerance

        def general():
            return _frank_wolfe(gram, allowed, uniform, cap, tol)

    else:
        if max_iterations is None:
            cap = _wolfe_max_iterations(num_tasks)
        else:
            cap = max_iterations
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


def min_norm_weights(gram, method=DEFAULT_METHOD, max_iterations=None, tolerance=None, mask=None):
    """alpha on the simplex minimising alpha^T gram alpha (the MGDA weights).

    Args:
      gram: T x T Gram matrix of the task gradients (float32 or float64; other
        float dtypes are solved in float32). It is symmetrised; it need not be
        exactly positive semi-definite (round-off is tolerated).
      method: "wolfe" (default; Wolfe's exact minimum-norm-point method) or
        "frank_wolfe" (the paper's Algorithm 2). T = 2 always uses the closed
        form (eq. 4) unless `mask` excludes a point.
      max_iterations: iteration cap (Wolfe: 10 T + 50 steps; Frank-Wolfe: 250).
      tolerance: Wolfe: relative Frank-Wolfe gap (1e-12 float64, 1e-6 float32);
        Frank-Wolfe: the step size gamma below which it stops (1e-5).
      mask: optional boolean vector of length T; only points with mask True
        may get weight, alpha is 0 elsewhere (the result is the solution of the
        sub-problem on the allowed points). An all-False mask returns zeros.

    Returns:
      alpha, shape [T], the dtype of `gram`: alpha >= 0 and sum(alpha) = 1
      (zeros for an all-False mask). If every allowed gradient is zero, any
      alpha is optimal and the uniform weights over the allowed points are
      returned.
    """
    return min_norm_weights_with_info(gram, method, max_iterations, tolerance, mask)[0]


# ----------------------------------------------------------------------------
# Gradient normalisation.


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
        raise ValueError(
            f"Unknown gradient normalization {kind!r}; valid kinds: {', '.join(NORMALIZATIONS)}."
        )
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
        losses = tf.abs(tf.reshape(tf.cast(tf.convert_to_tensor(losses), dtype), [-1]))
        scales = losses if kind == "loss" else losses * norms
    tiny = tf.constant(_tiny(dtype) ** 0.5, dtype)
    usable = tf.logical_and(tf.math.is_finite(scales), scales >= tiny)
    inv = tf.where(usable, 1.0 / tf.where(usable, scales, tf.ones_like(scales)), tf.ones_like(scales))
    return gram * inv[:, None] * inv[None, :]


def _tiny(dtype):
    return {
        tf.float64: 2.2250738585072014e-308,
        tf.float32: 1.1754943508222875e-38,
        tf.float16: 6.103515625e-05,
        tf.bfloat16: 1.1754943508222875e-38,
    }[tf.as_dtype(dtype)]
