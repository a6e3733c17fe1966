"""Nash-MTL: the shared update as the Nash bargaining solution of the tasks.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022, section 3 (Theorem 3.1, eq. 3) and
Algorithm 1.

The update d = sum_t alpha_t g_t maximises sum_t log <g_t, d> in a ball;
Theorem 3.1: alpha > 0 solves G^T G alpha = 1 / alpha, i.e. K alpha = 1/alpha
with K the Gramian of the task gradients (so alpha_t <g_t, d> = 1 for every
task and ||d||^2 = T). The equation is solved on the device to convergence
(`mtl_tf.solvers.fair.fair_weights` with alpha = 1: Newton's method on the
strictly convex 1/2 a^T K a - sum log a, whose stationary point it is).

Options (the official code's names):
  update_weights_every (1): recompute alpha every this many steps and reuse the
    last alpha in between (kept as balancer state, in checkpoints);
  max_norm (0.0 = off, the paper): clip the shared update to this norm,
    ||d|| = sqrt(c^T K c) from the Gramian (the official code clips the shared
    parameters' gradient with max_norm = 1.0 by default; set max_norm=1.0 to
    match it).

Deviations from the official code (github.com/AvivNavon/nash-mtl) and LibMTL:

* The official code approximates the solution by a sequence of at most
  `optim_niter` = 20 convex problems (cvxpy / ECOS on the host, each with the
  concave part linearised at the previous alpha, warm-started from the last
  step's alpha, stopped when ||K a - 1/a|| < 1e-3 on K divided by its
  Frobenius norm). Here the equation is solved on the device to round-off
  (relative residual ~1e-9), so there is no `optim_niter` and no warm start.
  A tiny ridge (1e-12 relative, `mtl_tf.solvers.fair.RIDGE`) keeps alpha finite
  when the equation has no solution (a zero task gradient, or gradients with a
  vanishing positive combination).
* With `update_weights_every > 1` the per-task gradients are still computed at
  every step (the official code skips them between updates), so the option
  reproduces the official weights, not its cost saving.
* Heads descend their own unweighted gradients; the official code
  back-propagates sum_t alpha_t L_t, so head t gets alpha_t times its gradient.
* Tasks without labels in the global batch take no part (alpha is solved on
  the labelled tasks, their alpha is 0); a reused alpha keeps 0 for them.
* `gradient_at="representation"` (LibMTL refuses it) solves on dL_t/dZ; the
  clipping then bounds the norm of sum_t alpha_t dL_t/dZ.

Logs `{task}_weight` = alpha_t (the coefficient of g_t before clipping) and
`clip_factor` (1 when max_norm is off or not reached).
"""

import math

from keras import ops

from mtl_tf.balancers.gramian import GramianBalancer
from mtl_tf.balancers.registry import register
from mtl_tf.solvers.fair import fair_weights


def check_max_norm(method, max_norm):
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not math.isfinite(max_norm) or max_norm < 0:
        raise ValueError(f"{method} max_norm must be a finite number >= 0 (0 turns clipping off); got {max_norm!r}")
    return float(max_norm)


def clip_coefficients(coefficients, gram, max_norm):
    """(c scaled so that ||sum c_t g_t|| <= max_norm, the factor); max_norm 0 = no clipping."""
    if max_norm == 0.0:
        return coefficients, ops.convert_to_tensor(1.0, "float32")
    norm = ops.sqrt(ops.maximum(ops.tensordot(coefficients, ops.matmul(gram, coefficients), 1), 0.0))
    factor = ops.where(norm > max_norm, max_norm / ops.where(norm > 0, norm, ops.ones_like(norm)), ops.ones_like(norm))
    return coefficients * factor, factor


@register("nash_mtl")
class NashMTL(GramianBalancer):
    """Nash-MTL: alpha > 0 with K alpha = 1/alpha, the update sum_t alpha_t g_t.

    Args:
      update_weights_every: int >= 1 (default 1), steps between recomputations of alpha.
      max_norm: float >= 0 (default 0.0: no clipping; the official code uses 1.0).
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).

    Logs `{task}_weight` = alpha_t and `clip_factor`.

    Raises:
      ValueError: update_weights_every not a positive integer, max_norm
        negative or not finite, or an unknown `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Navon et al., ICML 2022, Theorem 3.1 and Algorithm 1.
    """

    loss_range = "any"

    def __init__(self, update_weights_every=1, max_norm=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(update_weights_every, bool) or not isinstance(update_weights_every, int) or update_weights_every < 1:
            raise ValueError(f"nash_mtl update_weights_every must be an integer >= 1; got {update_weights_every!r}")
        self.update_weights_every = update_weights_every
        self.max_norm = check_max_norm("nash_mtl", max_norm)

    def build_for_tasks(self, task_names, losses=None):
        if self.update_weights_every > 1:
            self.step_counter = self.add_weight(
                name="step_counter", shape=(), dtype="int32", initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
            self.last_alpha = self.add_weight(
                name="last_alpha", shape=(len(task_names),), initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
        super().build_for_tasks(task_names, losses)

    def combination(self, gram, losses, mask):
        alpha, _ = fair_weights(gram, 1.0, mask)
        alpha = ops.cast(alpha, "float32")
        if self.update_weights_every > 1:
            fresh = ops.equal(self.step_counter % self.update_weights_every, 0)
            alpha = ops.where(fresh, alpha, ops.convert_to_tensor(self.last_alpha))
            alpha = ops.where(mask, alpha, ops.zeros_like(alpha))
            self.last_alpha.assign(alpha)
            self.step_counter.assign_add(1)
        coefficients, factor = clip_coefficients(alpha, gram, self.max_norm)
        return coefficients, alpha, {"clip_factor": factor}

    def get_config(self):
        return {**super().get_config(), "update_weights_every": self.update_weights_every, "max_norm": self.max_norm}
