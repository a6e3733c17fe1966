"""Wolfe's minimum-norm-point algorithm (default).

`_wolfe` on a prepared Gram matrix; the public `min_norm_point` is
`min_norm_weights(..., method="wolfe")`, in `mtl_tf.solvers`.

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
    working dtype `min_norm_weights` picks (see Precision).
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

Precision: the working dtype of `min_norm_weights`: float64 for float64 input
where the backend computes float64 (TensorFlow; JAX with `jax_enable_x64`),
float32 for float32 input and for float64 input where it does not;
`dtype="float64"` / `"float32"` chooses it (float64 where the backend has none
is an error naming `jax_enable_x64`). Accuracy, by the Frank-Wolfe gap
certificate above: the objective is within 2 * max(tolerance, round-off) *
max_t M_tt of the exact minimum, i.e. 2e-12 relative to the largest squared
gradient norm in float64 and 2e-9 in float32 (the round-off floor, ~10 eps,
rules when it is larger). The tests (tests/test_solvers.py) hold it to 1e-6
relative / 1e-9 mean ||g||^2 in float64 and 1e-4 / 1e-6 in float32 against an
exact float64 QP; the float32 gaps measured on the benchmark problems were
<= 2e-7 relative.
"""

import keras
from keras import ops

from mtl_tf.solvers._common import _argmin_where, _eps, _gather, _length, _matvec

WOLFE_TOLERANCE = {"float64": 1e-12, "float32": 1e-9}

# A Schur complement or Frank-Wolfe gap below this many units of its own
# round-off counts as zero.
_INDEPENDENCE_NOISE = 100.0
_GAP_NOISE = 10.0
# Preconditioned conjugate-gradient steps per affine solve.
_CG_STEPS = 4
# Smallest lift constant, relative to the largest squared gradient norm.
_LIFT_FLOOR = {"float64": 1e-12, "float32": 1e-6}


def _wolfe_max_iterations(num_tasks):
    """Default iteration cap of the Wolfe solver (a step adds, swaps or drops a point)."""
    return 10 * num_tasks + 50


def _lift_constant(diag, allowed):
    """c in A = M + c 1 1^T: geometric mean of the extreme allowed norms^2.

    Too large a c makes the lifted small gradients nearly parallel; too small a
    c makes A nearly singular when the optimum is ~0. The geometric mean of the
    largest (1 after normalisation) and the smallest non-negligible squared
    norm balances the two; the floor keeps c positive with zero gradients.
    """
    floor = ops.convert_to_tensor(_LIFT_FLOOR[keras.backend.standardize_dtype(diag.dtype)], diag.dtype)
    relevant = ops.logical_and(allowed, diag > floor)
    smallest = ops.min(ops.where(relevant, diag, ops.ones_like(diag)))
    return ops.maximum(ops.sqrt(smallest), floor)


def _wolfe(gram, allowed, max_iterations, tolerance):
    """Wolfe (1976) on a prepared Gram matrix (max allowed diag 1) -> (alpha, iterations)."""
    dtype = gram.dtype
    one = ops.convert_to_tensor(1.0, dtype)
    zero = ops.convert_to_tensor(0.0, dtype)
    eps = ops.convert_to_tensor(_eps(dtype), dtype)
    n = _length(allowed)
    diag = ops.maximum(ops.diagonal(gram), zero)
    root_diag = ops.sqrt(diag)
    tol = ops.convert_to_tensor(tolerance, dtype)
    lift = _lift_constant(diag, allowed)
    # Jacobi scaling: B = S A S with S = diag(scale) has a unit diagonal.
    scale = ops.rsqrt(diag + lift)

    def one_hot(i):
        return ops.one_hot(i, n, dtype=dtype)

    def scaled_lifted(u):
        # B u = S (M + c 1 1^T) S u, without ever rounding M + c.
        x = scale * u
        return scale * (_matvec(gram, x) + lift * ops.sum(x))

    def affine_point(corral, inverse):
        """A_S^{-1} 1_S (zero outside S): preconditioned CG on B_S u = S 1_S."""
        rhs = corral * scale
        u = _matvec(inverse, rhs)
        r = corral * (rhs - scaled_lifted(u))
        z = corral * _matvec(inverse, r)
        p, rz = z, ops.sum(r * z)
        for _ in range(_CG_STEPS):
            bp = corral * scaled_lifted(p)
            p_bp = ops.sum(p * bp)
            ok = ops.logical_and(p_bp > 0, rz > 0)  # False once converged to round-off
            step = ops.where(ok, rz / ops.where(ok, p_bp, one), zero)
            u += step * p
            r -= step * bp
            z = corral * _matvec(inverse, r)
            rz_next = ops.sum(r * z)
            p = z + ops.where(ok, rz_next / ops.where(ok, rz, one), zero) * p
            rz = rz_next
        return corral * scale * u

    def entering(j, corral, inverse):
        """(q, x, sigma, independent) for bringing point j into the corral.

        q = B_S^{-1} B[S, j]; x = S q are the coefficients of the lifted corral
        points that best approximate the lifted point of j, and the Schur
        complement sigma = B_jj - B[j, S] q is the squared residual of that
        approximation, computed as such to avoid cancellation.
        """
        m_j = _gather(gram, j)
        s_j = _gather(scale, j)
        q = _matvec(inverse, corral * s_j * scale * (m_j + lift))
        x = corral * scale * q
        x_sum = ops.sum(x)
        sigma = (
            ops.square(s_j) * _gather(diag, j)
            - 2.0 * s_j * ops.sum(x * m_j)
            + ops.sum(x * _matvec(gram, x))
            + lift * ops.square(s_j - x_sum)
        )
        # Round-off of sigma: eps times the size of its terms (|M_ik| <=
        # sqrt(M_ii M_kk)), i.e. relative to the points involved.
        size = ops.square(s_j * _gather(root_diag, j) + ops.sum(ops.abs(x) * root_diag))
        size += lift * ops.abs(s_j - x_sum) * (s_j + ops.sum(ops.abs(x)))
        independent = ops.logical_and(ops.isfinite(sigma), sigma > _INDEPENDENCE_NOISE * eps * size)
        return q, x, sigma, independent

    def with_point(inverse, j, q, sigma):
        # Bordering: inverse += (q - e_j)(q - e_j)^T / sigma - e_j e_j^T.
        e_j = one_hot(j)
        z = q - e_j
        return inverse + z[:, None] * z[None, :] / sigma - e_j[:, None] * e_j[None, :]

    def without_point(inverse, k):
        # Downdate: inverse += -h h^T / h_kk + e_k e_k^T, h = row k.
        h = _gather(inverse, k)
        h_k = _gather(h, k)
        e_k = one_hot(k)
        safe = ops.where(h_k > 0, h_k, one)
        return inverse - h[:, None] * h[None, :] / safe + e_k[:, None] * e_k[None, :], h_k > 0

    def body(it, w, corral, inverse, best, best_value, done):
        in_corral = corral > 0
        y = affine_point(corral, inverse)
        y_sum = ops.sum(y)
        v = y / ops.where(y_sum > 0, y_sum, one)
        finite = ops.logical_and(y_sum > 0, ops.all(ops.isfinite(v)))
        v = ops.where(finite, v, w)
        feasible = ops.logical_and(finite, ops.all(ops.logical_or(ops.logical_not(in_corral), v > 0)))

        # Major cycle (v in the simplex): keep v if it improves, test it with
        # its Frank-Wolfe gap, else bring in the most violating point j.
        m_v = _matvec(gram, v)
        value = ops.sum(v * m_v)
        # Exact Wolfe strictly decreases the objective at every major cycle; a
        # feasible v that does not is a round-off cycle: stop there.
        improved = ops.logical_and(feasible, value < best_value)
        best = ops.where(improved, v, best)
        best_value = ops.where(improved, value, best_value)
        candidates = ops.logical_and(allowed, ops.logical_not(in_corral))
        j, m_vj = _argmin_where(m_v, candidates)
        gap = value - m_vj
        v_size = ops.sum(v * root_diag)
        gap_noise = _GAP_NOISE * eps * v_size * (v_size + _gather(root_diag, j))
        progress = ops.logical_and(improved, gap > ops.maximum(tol, gap_noise))  # False without candidates
        q, x, sigma, independent = entering(j, corral, inverse)
        add = ops.logical_and(progress, independent)

        # Swap (degenerate pivot) when j is numerically in the corral's affine
        # hull: move along d = e_j - x / sum(x) to the first zero weight k.
        coefficients = x / ops.where(ops.sum(x) > 0, ops.sum(x), one)
        giving = ops.logical_and(in_corral, coefficients > 0)
        k_swap, t_swap = _argmin_where(v / ops.where(giving, coefficients, one), giving)
        direction = one_hot(j) - coefficients
        curvature = ops.sum(direction * _matvec(gram, direction))
        descends = ops.logical_and(ops.isfinite(t_swap), t_swap * curvature < 2.0 * gap)
        w_swap = ops.maximum(v + t_swap * direction, zero) * (one - one_hot(k_swap))

        # Minor cycle (v outside the simplex): walk from w towards v until a
        # weight hits zero and drop that point.
        step = w - v
        blocking = ops.logical_and(in_corral, v <= 0)
        ratios = ops.where(step > 0, w / ops.where(step > 0, step, one), zero)
        k_minor, theta = _argmin_where(ratios, blocking)
        theta = ops.clip(ops.where(ops.isfinite(theta), theta, zero), 0.0, 1.0)
        w_minor = ops.maximum(w + theta * (v - w), zero) * (one - one_hot(k_minor))

        k = ops.where(feasible, k_swap, k_minor)
        reduced_inverse, droppable = without_point(inverse, k)
        reduced_corral = corral * (one - one_hot(k))
        q_swap, _, sigma_swap, independent_swap = entering(j, reduced_corral, reduced_inverse)
        swap = ops.logical_and(
            ops.logical_and(progress, ops.logical_not(independent)),
            ops.logical_and(ops.logical_and(descends, droppable), independent_swap),
        )
        drop = ops.logical_and(ops.logical_and(finite, ops.logical_not(feasible)), droppable)

        e_j = one_hot(j)
        new_inverse = ops.where(
            add,
            with_point(inverse, j, q, ops.where(add, sigma, one)),
            ops.where(
                swap,
                with_point(reduced_inverse, j, q_swap, ops.where(swap, sigma_swap, one)),
                ops.where(drop, reduced_inverse, inverse),
            ),
        )
        new_corral = ops.where(
            add, corral + e_j, ops.where(swap, reduced_corral + e_j, ops.where(drop, reduced_corral, corral))
        )
        new_w = ops.where(add, v, ops.where(swap, w_swap, ops.where(drop, w_minor, w)))
        new_w_sum = ops.sum(new_w)
        new_w = ops.where(new_w_sum > 0, new_w / ops.where(new_w_sum > 0, new_w_sum, one), w)
        new_done = ops.logical_not(ops.logical_or(ops.logical_or(add, swap), drop))
        return it + 1, new_w, new_corral, new_inverse, best, best_value, new_done

    def cond(it, w, corral, inverse, best, best_value, done):
        return ops.logical_not(done)

    # Start at the allowed point of smallest norm; B_jj = 1, so its inverse is I.
    j0, _ = _argmin_where(diag, allowed)
    e0 = one_hot(j0)
    state = (
        ops.convert_to_tensor(0, "int32"),
        e0,
        e0,
        ops.eye(n, dtype=dtype),
        e0,
        ops.convert_to_tensor(float("inf"), dtype),
        ops.logical_not(ops.any(allowed)),
    )
    it, _, _, _, best, _, _ = ops.while_loop(cond, body, state, maximum_iterations=max_iterations)
    return best, it
