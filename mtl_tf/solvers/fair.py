"""The alpha-fair weights of FairGrad and Nash-MTL: w > 0 with K w = w^(-1/alpha), on the device.

Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
section 3, eq. 3) needs the positive solution of K w = 1 / w (elementwise),
K = G G^T the Gramian of the task gradients; FairGrad (Ban & Ji, "Fair
Resource Allocation in Multi-Task Learning", ICML 2024, section 4) the one of
K w = w^(-1/alpha), which is Nash-MTL's for alpha = 1. Both are the
stationarity condition of a strictly convex function on w > 0,

    F(w) = 1/2 w^T K w + phi(w),  phi(w) = -sum_i log w_i            (alpha = 1),
                                  phi(w) = -sum_i w_i^p / p, p = 1 - 1/alpha (alpha != 1),

(grad F = K w - w^(-1/alpha); -w^p/p is convex for every p < 1, p != 0), so
the solution is unique and `fair_weights` finds it by Newton's method on F
with a backtracking line search that keeps w > 0: fixed shapes, a
`tf.while_loop` with `maximum_iterations`, float64, XLA-compilable. It stops
when the squared Newton decrement is below 1e-15 (relative; the step it
then takes is still applied) or after
`MAX_ITERATIONS`; from the start below it converges quadratically after a few
damped steps.

Scale: with K = s K' (s = the largest diagonal entry), w = s^(-alpha/(alpha+1)) v
where K' v = v^(-1/alpha), so the iteration runs on the normalised K'. Start:
v_i = (K'_ii)^(-alpha/(alpha+1)), the solution when the gradients are
orthogonal.

Regularisation: `RIDGE` (1e-12) times the identity is added to K'. Without it
there is no solution when a task's gradient is zero or when a positive
combination of the gradients vanishes (F is then unbounded below); with it the
weights stay finite there, and elsewhere they move by about 1e-12 relative.
"""

import tensorflow as tf

MAX_ITERATIONS = 100
RIDGE = 1e-12
_BACKTRACKS = 40


@tf.autograph.experimental.do_not_convert
def fair_weights(gram, alpha=1.0, mask=None):
    """The positive w with K w = w^(-1/alpha) on the tasks of `mask` (0 elsewhere).

    Args:
      gram: [T, T] Gramian (float32 or float64), positive semi-definite.
      alpha: Python float > 0 (1 = Nash-MTL's K w = 1/w).
      mask: optional [T] bool, the tasks taking part (their rows and columns
        only are used; the others get w = 0).

    Returns:
      (w, iterations): w [T] float64, iterations a scalar int32. A Gramian that
      is not finite or is zero gives w = 0.

    Raises:
      ValueError: alpha not a positive number, or a gram that is not [T, T].
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number; got {alpha!r}")
    gram = tf.cast(tf.convert_to_tensor(gram), tf.float64)
    if gram.shape.rank != 2 or gram.shape[0] is None or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a [T, T] matrix with a static T; got shape {gram.shape}")
    num = gram.shape[0]
    mask = tf.ones([num], tf.bool) if mask is None else tf.cast(mask, tf.bool)
    open_ = tf.cast(mask, tf.float64)
    gram = 0.5 * (gram + tf.transpose(gram))
    gram = gram * open_[:, None] * open_[None, :]
    usable = tf.reduce_all(tf.math.is_finite(gram))
    gram = tf.where(usable, gram, tf.zeros_like(gram))
    scale = tf.reduce_max(tf.linalg.diag_part(gram))
    usable = tf.logical_and(usable, scale > 0)
    safe_scale = tf.where(usable, scale, tf.ones_like(scale))
    k = gram / safe_scale + RIDGE * tf.linalg.diag(open_)
    power = 1.0 - 1.0 / alpha
    exponent = -alpha / (alpha + 1.0)

    def objective(v):
        """F at v ([..., T], masked coordinates ignored); +inf outside v > 0."""
        positive = tf.reduce_all(tf.logical_or(v > 0, tf.logical_not(mask)), axis=-1)
        safe = tf.where(mask, tf.where(v > 0, v, tf.ones_like(v)), tf.ones_like(v))
        if power == 0.0:
            barrier = -tf.reduce_sum(open_ * tf.math.log(safe), axis=-1)
        else:
            barrier = -tf.reduce_sum(open_ * tf.pow(safe, power), axis=-1) / power
        quadratic = 0.5 * tf.reduce_sum(v * tf.linalg.matvec(k, v), axis=-1)
        inf = tf.constant(float("inf"), tf.float64)
        return tf.where(positive, quadratic + barrier, inf)

    def newton(v):
        safe = tf.where(mask, v, tf.ones_like(v))
        gradient = (tf.linalg.matvec(k, v) - tf.pow(safe, -1.0 / alpha)) * open_
        curvature = (1.0 / alpha) * tf.pow(safe, -1.0 / alpha - 1.0)
        hessian = k + tf.linalg.diag(curvature * open_ + (1.0 - open_))
        step = -tf.linalg.solve(hessian, gradient[:, None])[:, 0] * open_
        return step, gradient

    def body(i, v, done):
        step, gradient = newton(v)
        slope = tf.reduce_sum(gradient * step)  # -(Newton decrement)^2
        # The largest step keeping v > 0 (0.99 of the way to the boundary), then halvings.
        shrinking = tf.logical_and(step < 0, mask)
        limit = tf.reduce_min(tf.where(shrinking, -v / tf.where(shrinking, step, -tf.ones_like(step)),
                                       tf.fill([num], tf.constant(float("inf"), tf.float64))))
        first = tf.minimum(tf.constant(1.0, tf.float64), 0.99 * limit)
        sizes = first * tf.pow(tf.constant(0.5, tf.float64), tf.range(_BACKTRACKS, dtype=tf.float64))
        candidates = v[None, :] + sizes[:, None] * step[None, :]
        values = objective(candidates)
        accepted = values <= objective(v) + 1e-4 * sizes * slope
        index = tf.argmax(tf.cast(accepted, tf.int32), output_type=tf.int32)  # the largest accepted size
        # tf.gather, not sizes[index]: XLA's strided slice needs a compile-time index, and asking for one
        # makes the data it depends on (the batch) a compile-time constant, recompiled every step.
        size = tf.where(tf.reduce_any(accepted), tf.gather(sizes, index), sizes[-1])
        new = v + size * step
        finished = tf.logical_or(done, -slope <= 1e-15 * (1.0 + tf.abs(objective(v))))
        return i + 1, tf.where(done, v, new), finished

    diag = tf.linalg.diag_part(k)
    start = tf.where(mask, tf.pow(tf.where(diag > 0, diag, tf.ones_like(diag)), exponent), tf.zeros_like(diag))
    iterations, v, _ = tf.while_loop(
        lambda i, v, done: tf.logical_not(done), body, (tf.constant(0), start, tf.logical_not(usable)),
        maximum_iterations=MAX_ITERATIONS,
    )
    w = v * tf.pow(safe_scale, exponent)
    w = tf.where(usable, w * open_, tf.zeros_like(w))
    w = tf.where(tf.math.is_finite(w), w, tf.zeros_like(w))
    return w, iterations
