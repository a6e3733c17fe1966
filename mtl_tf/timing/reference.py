"""The exact float64 min-norm reference: what the solver benchmark and the solver tests compare with.

min over alpha in the simplex of ||G^T alpha||^2 is solved through a
non-negative least-squares problem on the lifted points (g_t, 1):

    u* = argmin_{u >= 0} ||G^T u||^2 + (1^T u - 1)^2,   alpha* = u* / 1^T u*.

For a fixed s = 1^T u > 0 the objective is s^2 ||G^T alpha||^2 + (s - 1)^2 with
alpha = u / s on the simplex; minimised over s it is f / (1 + f), increasing in
f = ||G^T alpha||^2, so alpha* is the min-norm weight vector. The NNLS problem
is solved with scipy's Lawson-Hanson active-set method (exact up to
round-off), its support is re-solved with an orthogonal least-squares solve
(working on G, not on the squared-conditioned Gram matrix), and the KKT
conditions are verified:

    alpha >= 0,  sum alpha = 1,  (M alpha)_r >= alpha^T M alpha - tol  for all r.

The last line says the Frank-Wolfe gap is below tol, which bounds the objective
error by 2 tol. `enumerate_min_norm` is an independent brute force over
supports for small T, used to check the reference itself.

NumPy and scipy only: nothing here runs TensorFlow.
"""

import itertools

import numpy as np
import scipy.optimize

KKT_TOLERANCE = 1e-12  # relative to the largest squared gradient norm


class NotOptimalError(AssertionError):
    """The reference's own optimality certificate failed.

    An AssertionError, so that a test using the reference reports a failure,
    not an error of the test itself.
    """


def min_norm_objective(g, alpha):
    """||G^T alpha||^2 in float64 (more accurate than alpha^T M alpha near 0)."""
    return float(np.sum((np.asarray(alpha, np.float64) @ np.asarray(g, np.float64)) ** 2))


def kkt_gap(gram, alpha):
    """alpha^T M alpha - min_r (M alpha)_r (>= 0 up to round-off; 0 at the optimum)."""
    m_alpha = gram @ alpha
    return float(alpha @ m_alpha - np.min(m_alpha))


def check_kkt(g, alpha, tolerance=KKT_TOLERANCE):
    """Raise `NotOptimalError` unless alpha is optimal to `tolerance` (relative to max ||g_t||^2).

    Returns the relative Frank-Wolfe gap.
    """
    g = np.asarray(g, np.float64)
    alpha = np.asarray(alpha, np.float64)
    gram = g @ g.T
    scale = max(float(np.max(np.diag(gram))), np.finfo(np.float64).tiny)
    if np.any(alpha < 0) or abs(alpha.sum() - 1.0) > 1e-14 * len(alpha):
        raise NotOptimalError(f"not on the simplex: {alpha}")
    gap = kkt_gap(gram, alpha) / scale
    if gap > tolerance:
        raise NotOptimalError(f"KKT violated: relative Frank-Wolfe gap {gap:.3e}")
    return gap


def exact_min_norm(g):
    """Exact float64 min-norm weights for the gradients in the rows of `g` [T, D], KKT-certified."""
    g = np.asarray(g, np.float64)
    num_tasks = g.shape[0]
    scale = float(np.max(np.linalg.norm(g, axis=1)))
    if scale == 0.0:
        return np.full(num_tasks, 1.0 / num_tasks)
    lifted = np.vstack([(g / scale).T, np.ones((1, num_tasks))])
    target = np.zeros(lifted.shape[0])
    target[-1] = 1.0
    u, _ = scipy.optimize.nnls(lifted, target, maxiter=100 * num_tasks)
    alpha = u / u.sum()
    # Polish: re-solve the unconstrained least squares on the support; keep
    # whichever of the two has the lower objective.
    support = u > 0
    solution, *_ = np.linalg.lstsq(lifted[:, support], target, rcond=None)
    if np.all(solution > 0):
        polished = np.zeros(num_tasks)
        polished[support] = solution / solution.sum()
        if min_norm_objective(g, polished) <= min_norm_objective(g, alpha):
            alpha = polished
    check_kkt(g, alpha)
    return alpha


def exact_min_norm_masked(g, mask):
    """The reference on the sub-problem of the rows with mask True (zeros elsewhere)."""
    mask = np.asarray(mask, bool)
    alpha = np.zeros(len(mask))
    if mask.any():
        alpha[mask] = exact_min_norm(np.asarray(g)[mask])
    return alpha


def enumerate_min_norm(g, tolerance=1e-10):
    """Brute force for small T: every support, affine minimiser, KKT filter.

    Returns (alpha, objective) of the best KKT point found.
    """
    g = np.asarray(g, np.float64)
    num_tasks = g.shape[0]
    scale = float(np.max(np.sum(g * g, axis=1)))
    gram = g @ g.T / scale
    best = None
    for size in range(1, num_tasks + 1):
        for support in itertools.combinations(range(num_tasks), size):
            idx = list(support)
            # min over sum alpha = 1 of alpha^T M_SS alpha via the lifted system.
            lifted = gram[np.ix_(idx, idx)] + 1.0
            try:
                y = np.linalg.solve(lifted, np.ones(size))
            except np.linalg.LinAlgError:
                continue
            if not np.all(np.isfinite(y)) or y.sum() <= 0:
                continue
            a_s = y / y.sum()
            if np.any(a_s < -tolerance):
                continue
            alpha = np.zeros(num_tasks)
            alpha[idx] = np.maximum(a_s, 0.0)
            alpha /= alpha.sum()
            if kkt_gap(gram, alpha) > tolerance:
                continue
            value = min_norm_objective(g, alpha)
            if best is None or value < best[1]:
                best = (alpha, value)
    return best
