"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021, section 3.1, eq. 3 and Algorithm 1.

With g_0 the mean of the task gradients, CAGrad looks for the update d that
maximises the worst task's improvement min_i <g_i, d> in the ball
||d - g_0|| <= c ||g_0||. Its dual (Algorithm 1) is a problem on the simplex,

    w* = argmin_{w in simplex}  g_w^T g_0 + sqrt(phi) ||g_w||,   g_w = sum_i w_i g_i,
    phi = c^2 ||g_0||^2,

and the update is d = g_0 + sqrt(phi) / ||g_w*|| g_w*. Every quantity is a
Gramian expression (g_w^T g_0 = w^T K 1/T, ||g_w||^2 = w^T K w), so d =
sum_t c_t g_t with c = 1/T + sqrt(phi)/||g_w*|| w* (`mtl_tf.balancers.gramian`).

The inner problem is solved on the device, exactly up to round-off: the norm is
written as ||g_w|| = min_{mu > 0} (||g_w||^2 / mu + mu) / 2, a jointly convex
function of (w, mu), and the two blocks are minimised in turn (mu = ||g_w||;
then w, a quadratic program on the simplex, min_w w^T b + sqrt(phi)/(2 mu)
w^T K w, solved exactly by `mtl_tf.solvers.qp.lower_bounded_qp` from the
previous w). The alternation decreases the objective monotonically and
converges linearly; it stops when w moves by less than 1e-11 or after
`OUTER_ITERATIONS` rounds. The result agrees with scipy's SLSQP on the
original objective (tests/balancers/test_cagrad.py) to the accuracy SLSQP
reaches.

Options (the official code's names in brackets):
  c (`cagrad_c` / LibMTL `calpha`): radius of the ball around g_0, 0.5 by
    default (LibMTL's default; the paper uses 0.4 on NYUv2 and Cityscapes and
    0.5 elsewhere);
  rescale (`rescale`): 1 (default, the official code's and LibMTL's) divides d
    by 1 + c^2, 2 divides it by 1 + c, 0 keeps d as Algorithm 1 has it. The
    paper's Algorithm 1 has no rescaling; the official code rescales so that
    c changes the step's direction more than its length.

Deviations from the authors' code (github.com/Cranial-XIX/CAGrad) and LibMTL:

* The inner problem is solved to its optimum on the device. The official code
  runs 20 steps of SGD (lr 25, momentum 0.5) on softmax logits of w on the
  host and keeps the best iterate; LibMTL calls scipy's SLSQP on the host.
* No epsilons in ||g_0|| and ||g_w|| (the code adds 1e-8 / 1e-4). When
  ||g_w*|| = 0 (zero in the convex hull of the gradients and chosen by the
  inner problem) the term sqrt(phi)/||g_w*|| g_w* is taken as 0; the code's
  epsilon gives nearly the same, c / 1e-8 times a zero vector.
* Tasks without labels in the global batch take no part: g_0 is the mean of
  the labelled tasks' gradients and w lives on their simplex.
* `gradient_at="representation"` (not in the paper; LibMTL refuses it) runs the
  same arithmetic on dL_t/dZ.
* Heads descend their own unweighted gradients (as in the official code, where
  every task loss reaches its own head with weight 1).

Logs `{task}_weight` = c_t, the coefficient of g_t in the update (1/T each
before rescaling when no task conflicts enough to move w*'s term).
"""

import math

import tensorflow as tf

from mtl_tf.balancers.gramian import GramianBalancer
from mtl_tf.balancers.registry import register
from mtl_tf.solvers.qp import lower_bounded_qp

OUTER_ITERATIONS = 100
RESCALES = (0, 1, 2)


def cagrad_simplex_weights(gram, mask, c):
    """w* of Algorithm 1: argmin over the simplex of the labelled tasks of w^T K e + c ||g_e|| sqrt(w^T K w).

    Args:
      gram: [T, T] Gramian (any float dtype); rows/columns of unlabelled tasks ignored.
      mask: [T] bool, the labelled tasks (e = their uniform weights).
      c: the radius factor (Python float >= 0).

    Returns:
      [T] float64 w*, zero outside `mask`, summing to 1 (uniform over `mask`
      when the Gramian is zero or not finite).
    """
    gram = tf.cast(gram, tf.float64)
    gram = 0.5 * (gram + tf.transpose(gram))
    both = tf.logical_and(mask[:, None], mask[None, :])
    gram = tf.where(both, gram, tf.zeros_like(gram))
    usable = tf.reduce_all(tf.math.is_finite(gram))
    gram = tf.where(usable, gram, tf.zeros_like(gram))
    scale = tf.reduce_max(tf.linalg.diag_part(gram))
    gram = gram / tf.where(scale > 0, scale, tf.ones_like(scale))
    labelled = tf.cast(mask, tf.float64)
    mean_weights = labelled / tf.maximum(tf.reduce_sum(labelled), 1.0)
    b = tf.linalg.matvec(gram, mean_weights)
    radius = c * tf.sqrt(tf.maximum(tf.tensordot(mean_weights, b, 1), 0.0))
    fixed = tf.logical_not(mask)[None]
    zeros = tf.zeros_like(b)[None]
    floor = tf.constant(1e-150, tf.float64)

    def norm_of(w):
        return tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram, w), 1), 0.0))

    def body(k, w, done):
        mu = tf.maximum(norm_of(w), floor)
        new, _ = lower_bounded_qp((radius / mu) * gram, b[None], zeros, simplex=True, start=w[None], fixed=fixed)
        new = new[0]
        moved = tf.reduce_max(tf.abs(new - w))
        return k + 1, tf.where(done, w, new), tf.logical_or(done, moved <= 1e-11)

    _, w, _ = tf.while_loop(
        lambda k, w, done: tf.logical_not(done), body,
        (tf.constant(0), mean_weights, tf.constant(False)), maximum_iterations=OUTER_ITERATIONS,
    )
    return w


@register("cagrad")
class CAGrad(GramianBalancer):
    """CAGrad: the update that most improves the worst task within a ball around the mean gradient.

    Args:
      c: float >= 0 (default 0.5), the ball's radius relative to ||g_0||
        (c = 0 is the mean gradient).
      rescale: 0, 1 (default) or 2: d is divided by 1, 1 + c^2 or 1 + c.
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: c negative or not finite, rescale not in {0, 1, 2}, or an
        unknown `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Liu et al., NeurIPS 2021, Algorithm 1.
    """

    loss_range = "any"

    def __init__(self, c=0.5, rescale=1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"cagrad c must be a finite number >= 0; got {c!r}")
        if isinstance(rescale, bool) or rescale not in RESCALES:
            raise ValueError(f"cagrad rescale={rescale!r} is not valid; expected one of {list(RESCALES)}")
        self.c = float(c)
        self.rescale = int(rescale)

    def combination(self, gram, losses, mask):
        w = cagrad_simplex_weights(gram, mask, self.c)
        gram64 = tf.cast(gram, tf.float64)
        labelled = tf.cast(mask, tf.float64)
        mean_weights = labelled / tf.maximum(tf.reduce_sum(labelled), 1.0)
        g0_norm = tf.sqrt(tf.maximum(tf.tensordot(mean_weights, tf.linalg.matvec(gram64, mean_weights), 1), 0.0))
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram64, w), 1), 0.0))
        positive = gw_norm > 0
        step = tf.where(positive, self.c * g0_norm / tf.where(positive, gw_norm, tf.ones_like(gw_norm)),
                        tf.zeros_like(gw_norm))
        coefficients = mean_weights + step * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        coefficients = tf.cast(coefficients / divisor, tf.float32)
        coefficients = tf.where(tf.math.is_finite(coefficients), coefficients, tf.zeros_like(coefficients))
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "c": self.c, "rescale": self.rescale}
