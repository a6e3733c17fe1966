"""The paper's solvers (Sener & Koltun 2018, section 3.1).

Two tasks: the closed form (eq. 4, Algorithm 1), `two_task_weights`.
Frank-Wolfe: the paper's Algorithm 2, `_frank_wolfe` (the public `frank_wolfe`
is `min_norm_weights(..., method="frank_wolfe")`, in `mtl_tf.solvers`).
"""

import tensorflow as tf

from mtl_tf.solvers._common import _argmin_where, _finish, _length, _plain_python, _prepare

FRANK_WOLFE_MAX_ITERATIONS = 250
FRANK_WOLFE_TOLERANCE = 1e-5


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
