"""FairGrad: alpha-fair allocation of the shared update among the tasks.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
section 4 (the alpha-fair utility, eq. 6-7, and Algorithm 1).

The update d = sum_t w_t g_t maximises the alpha-fair utility of the tasks'
first-order improvements <g_t, d>; its weights w > 0 solve
G^T G w = w^(-1/alpha), i.e. K w = w^(-1/alpha) with K the Gramian
(alpha = 1 is Nash-MTL's proportional fairness; alpha -> infinity approaches
max-min fairness). The equation is solved on the device to convergence by
Newton's method on the strictly convex function whose stationarity condition it
is (`mtl_tf.solvers.fair.fair_weights`).

Options:
  alpha (1.0, the official code's default; the paper tunes it per benchmark,
    e.g. 2.0 on NYUv2 and Cityscapes): the fairness exponent, > 0;
  max_norm (0.0 = off, the paper): clip the shared update to this norm,
    ||d|| = sqrt(w^T K w) from the Gramian (the official code clips the shared
    gradient with max_norm = 1.0 by default).

Deviations from the official code (github.com/OptMN-Lab/fairgrad) and LibMTL:

* The official code solves the equation on the host with scipy's
  `least_squares` (bounds w >= 0, from w = 1/T, default tolerances); here it is
  solved on the device to round-off (a 1e-12 relative ridge keeps w finite
  where no solution exists, see `mtl_tf.solvers.fair`).
* The official code multiplies d by T ("to match the sum loss"); here d is the
  paper's sum_t w_t g_t (scale the learning rate by T to match it).
* Tasks without labels in the global batch take no part (w is solved on the
  labelled tasks; theirs is 0). Heads descend their own unweighted gradients
  (as in the official code). `gradient_at="representation"` (refused by the
  official code and LibMTL) solves on dL_t/dZ.

Logs `{task}_weight` = w_t (before clipping) and `clip_factor`.
"""

import math

from keras import ops

from mtl_tf.balancers.gramian import GramianBalancer
from mtl_tf.balancers.nash_mtl import check_max_norm, clip_coefficients
from mtl_tf.balancers.registry import register
from mtl_tf.solvers.fair import fair_weights


@register("fairgrad")
class FairGrad(GramianBalancer):
    """FairGrad: w > 0 with K w = w^(-1/alpha), the update sum_t w_t g_t.

    Args:
      alpha: float > 0 (default 1.0), the fairness exponent.
      max_norm: float >= 0 (default 0.0: no clipping; the official code uses 1.0).
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).

    Logs `{task}_weight` = w_t and `clip_factor`.

    Raises:
      ValueError: alpha not a positive finite number, max_norm negative or not
        finite, or an unknown `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Ban & Ji, ICML 2024, section 4.
    """

    loss_range = "any"

    def __init__(self, alpha=1.0, max_norm=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"fairgrad alpha must be a positive finite number; got {alpha!r}")
        self.alpha = float(alpha)
        self.max_norm = check_max_norm("fairgrad", max_norm)

    def combination(self, gram, losses, mask):
        weights, _ = fair_weights(gram, self.alpha, mask)
        weights = ops.cast(weights, "float32")
        coefficients, factor = clip_coefficients(weights, gram, self.max_norm)
        return coefficients, weights, {"clip_factor": factor}

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "max_norm": self.max_norm}
