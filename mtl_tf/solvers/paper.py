"""The paper's solvers (Sener & Koltun 2018, section 3.1).

Two tasks: the closed form (eq. 4, Algorithm 1), `two_task_weights`.
Frank-Wolfe: the paper's Algorithm 2, `_frank_wolfe` (the public `frank_wolfe`
is `min_norm_weights(..., method="frank_wolfe")`, in `mtl_tf.solvers`).

Precision: both run in the working dtype of `min_norm_weights` (float64 for
float64 input where the backend has float64, else float32; `dtype=` picks it).
The closed form is a handful of roundings: alpha to a few eps of that dtype
times max|M| / ||g_1 - g_2||^2. Frank-Wolfe converges as O(1/k) only, so its
error is its stopping rule's (gamma < 1e-5 or 250 steps), not the dtype's.
"""

from keras import ops

from mtl_tf.solvers._common import _argmin_where, _finish, _gather, _length, _matvec, _plain_python, _prepare

FRANK_WOLFE_MAX_ITERATIONS = 250
FRANK_WOLFE_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------
# Two tasks: closed form.


def _two_task_alpha(gram):
    """Closed form on a (normalised) 2 x 2 Gram matrix, in its dtype."""
    a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
    denom = a - 2.0 * b + c  # ||g_1 - g_2||^2
    curved = denom > 0
    alpha1 = ops.clip((c - b) / ops.where(curved, denom, ops.ones_like(denom)), 0.0, 1.0)
    # Flat (identical gradients, or round-off): the objective is linear in
    # alpha_1, from c at 0 to a at 1, so the shorter gradient wins.
    half = ops.full_like(a, 0.5)
    flat = ops.where(a < c, ops.ones_like(a), ops.where(c < a, ops.zeros_like(a), half))
    alpha1 = ops.where(curved, alpha1, flat)
    return ops.stack([alpha1, 1.0 - alpha1])


@_plain_python
def two_task_weights(gram, dtype=None):
    """The paper's closed form (eq. 4) for T = 2.

    For M = [[a, b], [b, c]]: alpha_1 = clip((c - b) / (a - 2b + c), 0, 1),
    alpha_2 = 1 - alpha_1. When a - 2b + c is not positive (identical
    gradients, or round-off) the shorter gradient gets all the weight, and
    equal norms (every alpha optimal) give [0.5, 0.5]; so do two zero
    gradients. Returns alpha in the dtype of `gram`. `dtype`: the working
    precision, as for `min_norm_weights` (default float64 for float64 input
    where the backend has float64, else float32).
    """
    gram, allowed, uniform, degenerate, out_dtype = _prepare(gram, None, dtype=dtype)
    if gram.shape[0] is not None and gram.shape[0] != 2:
        raise ValueError(f"two_task_weights needs a 2 x 2 Gram matrix, got shape {tuple(gram.shape)}.")
    return _finish(_two_task_alpha(gram), allowed, uniform, degenerate, out_dtype)


# ----------------------------------------------------------------------------
# Frank-Wolfe: the paper's Algorithm 2.


def _frank_wolfe(gram, allowed, uniform, max_iterations, tolerance):
    """Algorithm 2 on a prepared Gram matrix -> (alpha, iterations)."""
    dtype = gram.dtype
    tol = ops.convert_to_tensor(tolerance, dtype)
    diag = ops.diagonal(gram)

    def body(it, alpha, done):
        m_alpha = _matvec(gram, alpha)
        t, b = _argmin_where(m_alpha, allowed)  # b = alpha^T M e_t
        a = ops.sum(alpha * m_alpha)  # alpha^T M alpha
        c = _gather(diag, t)  # e_t^T M e_t
        gamma = _segment_step(a, b, c)
        e_t = ops.one_hot(t, _length(alpha), dtype=dtype)
        alpha = (1.0 - gamma) * alpha + gamma * e_t
        return it + 1, alpha, ops.abs(gamma) < tol

    def cond(it, alpha, done):
        return ops.logical_not(done)

    it0 = ops.convert_to_tensor(0, "int32")
    # Nothing to do without an allowed point.
    done0 = ops.logical_not(ops.any(allowed))
    it, alpha, _ = ops.while_loop(cond, body, (it0, uniform, done0), maximum_iterations=max_iterations)
    return alpha, it


def _segment_step(a, b, c):
    """argmin over gamma in [0, 1] of ||(1 - gamma) x + gamma y||^2.

    a = x.x, b = x.y, c = y.y (the paper's Algorithm 1 with gamma weighting y).
    """
    denom = a - 2.0 * b + c  # ||x - y||^2
    positive = denom > 0
    safe = ops.where(positive, denom, ops.ones_like(denom))
    gamma = ops.clip((a - b) / safe, 0.0, 1.0)
    # x == y numerically: moving changes nothing, so do not move.
    return ops.where(positive, gamma, ops.zeros_like(gamma))
