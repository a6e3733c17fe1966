"""The official min-norm routine in NumPy (`official_min_norm`), TensorFlow-free.

Moved out of `tests/balancers/tiny.py` (which imports TensorFlow and re-exports
it) so that tests/test_solvers.py runs on every Keras backend.
"""

from __future__ import annotations

import numpy as np


def official_min_norm(gram, mask=None, max_iterations=250, tolerance=1e-5):
    """The official `MinNormSolver.find_min_norm_element` (Sener & Koltun's code, reused by Pareto MTL), in NumPy.

    Transcribed from its description, on the Gram matrix of the allowed points
    (n of them; the others get weight 0): the best pair i < j by the two-point
    routine (vertex cases clipped to gamma = 0.999 / 0.001), sol_i = gamma,
    sol_j = 1 - gamma; with n < 3 that is the answer. Else repeat: grad =
    -M sol, proj = grad - sum(grad) / n; t = 1, replaced by the smallest
    -sol/proj (proj < 0) above 1e-7 if there is one, then capped by the
    smallest (1 - sol)/proj (proj > 0) above 1e-7; next = the sort-based
    projection of sol + t proj onto the simplex; the two-point routine between
    sol and next gives new = gamma sol + (1 - gamma) next; stop with the old sol
    when sum |new - sol| < tolerance. The official loop never counts its
    iterations; here at most `max_iterations` are run.
    Returns (alpha, iterations).
    """
    gram = np.asarray(gram, np.float64)
    size = gram.shape[0]
    allowed = np.ones(size, bool) if mask is None else np.asarray(mask, bool)
    index = np.flatnonzero(allowed)
    M = gram[np.ix_(index, index)]
    n = len(index)

    def two_point(v1v1, v1v2, v2v2):
        if v1v2 >= v1v1:
            return 0.999, v1v1
        if v1v2 >= v2v2:
            return 0.001, v2v2
        gamma = -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
        return gamma, v2v2 + gamma * (v1v2 - v2v2)

    def project(y):
        ranked = np.sort(y)[::-1]
        running, theta = 0.0, (np.sum(y) - 1.0) / len(y)
        for i in range(len(y) - 1):
            running += ranked[i]
            candidate = (running - 1.0) / (i + 1.0)
            if candidate > ranked[i + 1]:
                theta = candidate
                break
        return np.maximum(y - theta, 0.0)

    def embed(sol):
        alpha = np.zeros(size)
        alpha[index] = sol
        return alpha

    if n == 0:
        return np.zeros(size), 0
    if n == 1:
        return embed(np.ones(1)), 0
    best = None
    for i in range(n):
        for j in range(i + 1, n):
            gamma, cost = two_point(M[i, i], M[i, j], M[j, j])
            if best is None or cost < best[0]:
                best = (cost, i, j, gamma)
    sol = np.zeros(n)
    sol[best[1]], sol[best[2]] = best[3], 1.0 - best[3]
    if n < 3:
        return embed(sol), 0
    for iteration in range(1, max_iterations + 1):
        grad = -(M @ sol)
        proj = grad - np.sum(grad) / n
        to_zero = -sol[proj < 0] / proj[proj < 0]
        to_one = (1.0 - sol[proj > 0]) / proj[proj > 0]
        t = 1.0
        if np.any(to_zero > 1e-7):
            t = np.min(to_zero[to_zero > 1e-7])
        if np.any(to_one > 1e-7):
            t = min(t, np.min(to_one[to_one > 1e-7]))
        target = project(sol + t * proj)
        gamma, _ = two_point(sol @ M @ sol, sol @ M @ target, target @ M @ target)
        new = gamma * sol + (1.0 - gamma) * target
        if np.sum(np.abs(new - sol)) < tolerance:
            return embed(sol), iteration
        sol = new
    return embed(sol), max_iterations
