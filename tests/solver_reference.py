"""Exact float64 reference for the min-norm problem, for tests only.

min over alpha in the simplex of ||G^T alpha||^2 is solved through a
non-negative least-squares problem on the lifted points (g_t, 1):

    u* = argmin_{u >= 0} ||G^T u||^2 + (1^T u - 1)^2,   alpha* = u* / 1^T u*.

For a fixed s = 1^T u > 0 the objective is s^2 ||G^T alpha||^2 + (s - 1)^2 with
alpha = u / s on the simplex, so alpha* is the min-norm weight vector. The NNLS
problem is solved with scipy's Lawson-Hanson active-set method (exact up to
round-off), its support is re-solved with an orthogonal least-squares solve
(working on G, not on the squared-conditioned Gram matrix), and the KKT
conditions are verified:

    alpha >= 0,  sum alpha = 1,  (M alpha)_r >= alpha^T M alpha - tol  for all r.

The last line says the Frank-Wolfe gap is below tol, which bounds the objective
error by 2 tol. `enumerate_min_norm` is an independent brute force over
supports for small T, used to check the reference itself.
"""

import itertools

import numpy as np
import scipy.optimize

KKT_TOLERANCE = 1e-12  # relative to the largest squared gradient norm


class ReferenceError_(AssertionError):
    pass


def objective(G, alpha):
    """||G^T alpha||^2 in float64 (more accurate than alpha^T M alpha near 0)."""
    return float(np.sum((np.asarray(alpha, np.float64) @ np.asarray(G, np.float64)) ** 2))


def kkt_gap(M, alpha):
    """alpha^T M alpha - min_r (M alpha)_r (>= 0 up to round-off; 0 at the optimum)."""
    m_alpha = M @ alpha
    return float(alpha @ m_alpha - np.min(m_alpha))


def check_kkt(G, alpha, tolerance=KKT_TOLERANCE):
    """Raise unless alpha is optimal to `tolerance` (relative to max ||g_t||^2)."""
    G = np.asarray(G, np.float64)
    alpha = np.asarray(alpha, np.float64)
    M = G @ G.T
    scale = max(float(np.max(np.diag(M))), np.finfo(np.float64).tiny)
    if np.any(alpha < 0) or abs(alpha.sum() - 1.0) > 1e-14 * len(alpha):
        raise ReferenceError_(f"not on the simplex: {alpha}")
    gap = kkt_gap(M, alpha) / scale
    if gap > tolerance:
        raise ReferenceError_(f"KKT violated: relative Frank-Wolfe gap {gap:.3e}")
    return gap


def reference_min_norm(G):
    """Exact min-norm weights for the gradients in the rows of G (T x D)."""
    G = np.asarray(G, np.float64)
    T = G.shape[0]
    norms = np.sqrt(np.sum(G * G, axis=1))
    scale = float(np.max(norms))
    if scale == 0:
        return np.full(T, 1.0 / T)
    Gn = G / scale
    A = np.vstack([Gn.T, np.ones((1, T))])
    b = np.zeros(A.shape[0])
    b[-1] = 1.0
    u, _ = scipy.optimize.nnls(A, b, maxiter=100 * T)
    alpha = u / u.sum()
    # Polish: re-solve the unconstrained least squares on the support.
    support = u > 0
    sol, *_ = np.linalg.lstsq(A[:, support], b, rcond=None)
    if np.all(sol > 0):
        polished = np.zeros(T)
        polished[support] = sol
        polished /= polished.sum()
        Mn = Gn @ Gn.T
        if kkt_gap(Mn, polished) <= kkt_gap(Mn, alpha):
            alpha = polished
    alpha = np.maximum(alpha, 0.0)
    alpha /= alpha.sum()
    check_kkt(G, alpha)
    return alpha


def reference_masked(G, mask):
    """Reference on the sub-problem of the rows with mask True (zeros elsewhere)."""
    mask = np.asarray(mask, bool)
    alpha = np.zeros(len(mask))
    if mask.any():
        alpha[mask] = reference_min_norm(np.asarray(G)[mask])
    return alpha


def enumerate_min_norm(G, tolerance=1e-10):
    """Brute force for small T: every support, affine minimiser, KKT filter.

    Returns (alpha, objective) of the best KKT point found.
    """
    G = np.asarray(G, np.float64)
    T = G.shape[0]
    scale = float(np.max(np.sum(G * G, axis=1)))
    M = G @ G.T / scale
    best = None
    for size in range(1, T + 1):
        for support in itertools.combinations(range(T), size):
            idx = list(support)
            # min over sum alpha = 1 of alpha^T M_SS alpha via the lifted system.
            lifted = M[np.ix_(idx, idx)] + 1.0
            try:
                y = np.linalg.solve(lifted, np.ones(size))
            except np.linalg.LinAlgError:
                continue
            if not np.all(np.isfinite(y)) or y.sum() <= 0:
                continue
            a_s = y / y.sum()
            if np.any(a_s < -tolerance):
                continue
            alpha = np.zeros(T)
            alpha[idx] = np.maximum(a_s, 0.0)
            alpha /= alpha.sum()
            if kkt_gap(M, alpha) > tolerance:
                continue
            value = objective(G, alpha)
            if best is None or value < best[1]:
                best = (alpha, value)
    return best
