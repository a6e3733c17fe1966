"""UPGrad: the mean of the task gradients, each projected onto the dual cone of all of them.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, 2024, section 3 (the aggregator A_UPGrad, eq. 4; Proposition 1 for
its dual form).

The dual cone of the task gradients is C = {d : <g_t, d> >= 0 for every t}:
the directions that do not increase any task loss to first order. UPGrad
projects every g_i onto C and averages: d = 1/T sum_i pi_C(g_i). By
Proposition 1, pi_C(J^T u) = J^T v with v = argmin_{v >= u} v^T K v
(K = J J^T, the Gramian), so d = sum_t c_t g_t with c = sum_i v_i,
v_i = argmin_{v >= e_i / T} v^T K v: T small quadratic programs on the Gramian,
solved together and exactly on the device by the active-set method of
`mtl_tf.solvers.qp` (`dual_cone_weights`). When no two tasks conflict every
g_i is already in C and d is the mean gradient.

Options, as TorchJD (the authors' library, `torchjd.aggregation.UPGrad`):
  norm_eps (1e-4): K is divided by its trace (the squared Frobenius norm of
    J), or replaced by zeros (then d is the mean gradient) when the trace is
    below norm_eps;
  reg_eps (1e-4): reg_eps times the identity is added to the normalised K, so
    the programs are strictly convex. reg_eps = 0 gives the paper's exact
    projection (the solver copes with a singular K).

The default preference vector (1/T each) is the only one offered.

Deviations from TorchJD: the programs are solved on the device inside the
compiled step by an exact active-set method (TorchJD calls quadprog on the
host); tasks without labels in the global batch take no part (T counts the
labelled tasks, their rows and columns of K are ignored, their weight is 0);
`gradient_at="representation"` (not in the paper) projects dL_t/dZ instead.
Heads descend their own unweighted gradients.

Logs `{task}_weight` = c_t, the coefficient of g_t in d (1/T each when no tasks
conflict).
"""

import math

from keras import ops

from mtl_tf.balancers.gramian import GramianBalancer, working_dtype
from mtl_tf.balancers.registry import register
from mtl_tf.solvers.qp import dual_cone_weights


def check_eps(method, name, value):
    """A finite number >= 0, as float; else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{method} {name} must be a finite number >= 0; got {value!r}")
    return float(value)


@register("upgrad")
class UPGrad(GramianBalancer):
    """UPGrad: the mean of the task gradients' projections onto their dual cone.

    Args:
      norm_eps: float >= 0 (default 1e-4), TorchJD's threshold on the Gramian's trace.
      reg_eps: float >= 0 (default 1e-4), TorchJD's ridge on the normalised Gramian.
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: a negative or non-finite eps, or an unknown `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Quinton & Rey, 2024, eq. 4 and Proposition 1.
    """

    loss_range = "any"

    def __init__(self, norm_eps=1e-4, reg_eps=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.norm_eps = check_eps("upgrad", "norm_eps", norm_eps)
        self.reg_eps = check_eps("upgrad", "reg_eps", reg_eps)

    def combination(self, gram, losses, mask):
        labelled = ops.cast(mask, working_dtype())
        count = ops.maximum(ops.sum(labelled), 1.0)
        u = ops.diag(labelled / count)  # row i: e_i / T (zero rows for unlabelled tasks)
        v = dual_cone_weights(gram, u, mask, self.norm_eps, self.reg_eps)
        coefficients = ops.cast(ops.sum(v, axis=0), "float32")
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}
