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

from keras import ops

from mtl_tf.balancers.gramian import GramianBalancer, working_dtype
from mtl_tf.balancers.registry import register
from mtl_tf.solvers.qp import lower_bounded_qp

OUTER_ITERATIONS = 100
RESCALES = (0, 1, 2)
# The floor of mu = ||g_w|| and the stopping step of the alternation, per working dtype
# (1e-150 and 1e-11 are below float32's range and round-off).
_NORM_FLOOR = {"float64": 1e-150, "float32": 1e-30}
_STOP_STEP = {"float64": 1e-11, "float32": 1e-6}


def _matvec(gram, v):
    """K v for a 1-D v, as a [T, T] x [T, 1] matmul (on TensorFlow the ops of `tf.linalg.matvec`)."""
    return ops.matmul(gram, v[:, None])[:, 0]


def _quadratic(gram, w, v):
    """w^T K v for 1-D w and v (a matrix-vector product, then a dot product)."""
    return ops.tensordot(w, _matvec(gram, v), 1)


def cagrad_simplex_weights(gram, mask, c):
    """w* of Algorithm 1: argmin over the simplex of the labelled tasks of w^T K e + c ||g_e|| sqrt(w^T K w).

    Args:
      gram: [T, T] Gramian (any float dtype); rows/columns of unlabelled tasks ignored.
      mask: [T] bool, the labelled tasks (e = their uniform weights).
      c: the radius factor (Python float >= 0).

    Returns:
      [T] w*, zero outside `mask`, summing to 1 (uniform over `mask` when the
      Gramian is zero or not finite); float64 where the backend computes it
      (TensorFlow; JAX with `jax_enable_x64`), else float32 (`working_dtype`).
    """
    work = working_dtype()
    gram = ops.cast(gram, work)
    gram = 0.5 * (gram + ops.transpose(gram))
    both = ops.logical_and(mask[:, None], mask[None, :])
    gram = ops.where(both, gram, ops.zeros_like(gram))
    usable = ops.all(ops.isfinite(gram))
    gram = ops.where(usable, gram, ops.zeros_like(gram))
    scale = ops.max(ops.diagonal(gram))
    gram = gram / ops.where(scale > 0, scale, ops.ones_like(scale))
    labelled = ops.cast(mask, work)
    mean_weights = labelled / ops.maximum(ops.sum(labelled), 1.0)
    b = _matvec(gram, mean_weights)
    radius = c * ops.sqrt(ops.maximum(ops.tensordot(mean_weights, b, 1), 0.0))
    fixed = ops.logical_not(mask)[None]
    zeros = ops.zeros_like(b)[None]
    floor = ops.convert_to_tensor(_NORM_FLOOR[work], work)
    stop = _STOP_STEP[work]

    def norm_of(w):
        return ops.sqrt(ops.maximum(_quadratic(gram, w, w), 0.0))

    def body(k, w, done):
        mu = ops.maximum(norm_of(w), floor)
        new, _ = lower_bounded_qp((radius / mu) * gram, b[None], zeros, simplex=True, start=w[None], fixed=fixed)
        new = new[0]
        moved = ops.max(ops.abs(new - w))
        return k + 1, ops.where(done, w, new), ops.logical_or(done, moved <= stop)

    _, w, _ = ops.while_loop(
        lambda k, w, done: ops.logical_not(done), body,
        (ops.convert_to_tensor(0, "int32"), mean_weights, ops.convert_to_tensor(False)),
        maximum_iterations=OUTER_ITERATIONS,
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
        gram64 = ops.cast(gram, w.dtype)
        labelled = ops.cast(mask, w.dtype)
        mean_weights = labelled / ops.maximum(ops.sum(labelled), 1.0)
        g0_norm = ops.sqrt(ops.maximum(_quadratic(gram64, mean_weights, mean_weights), 0.0))
        gw_norm = ops.sqrt(ops.maximum(_quadratic(gram64, w, w), 0.0))
        positive = gw_norm > 0
        step = ops.where(positive, self.c * g0_norm / ops.where(positive, gw_norm, ops.ones_like(gw_norm)),
                         ops.zeros_like(gw_norm))
        coefficients = mean_weights + step * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        coefficients = ops.cast(coefficients / divisor, "float32")
        coefficients = ops.where(ops.isfinite(coefficients), coefficients, ops.zeros_like(coefficients))
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "c": self.c, "rescale": self.rescale}
