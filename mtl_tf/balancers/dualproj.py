"""DualProj: the mean gradient projected onto the dual cone of the task gradients.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, 2024 (the DualProj aggregator they compare with, section 5 /
appendix; the projection is the one of Lopez-Paz & Ranzato, "Gradient Episodic
Memory for Continual Learning", NeurIPS 2017, eq. 11).

d = pi_C(g_0), with g_0 = 1/T sum_t g_t and C = {d : <g_t, d> >= 0 for every
t} the dual cone of the task gradients. By Proposition 1 of Quinton & Rey,
pi_C(J^T u) = J^T v with v = argmin_{v >= u} v^T K v, here u = 1/T: one small
quadratic program on the Gramian K, solved exactly on the device
(`mtl_tf.solvers.qp.dual_cone_weights`), and d = sum_t v_t g_t.

Options, as TorchJD (`torchjd.aggregation.DualProj`): norm_eps (1e-4; K is
divided by its trace, or zeroed when the trace is below it) and reg_eps (1e-4;
added to the diagonal of the normalised K; 0 gives the exact projection). See
`mtl_tf.balancers.upgrad` for the deviations from TorchJD, which are the same:
an on-device exact solver instead of quadprog on the host, unlabelled tasks
left out (the mean is over the labelled tasks), the representation option.

Logs `{task}_weight` = v_t, the coefficient of g_t in d.
"""

from keras import ops

from mtl_tf.balancers.gramian import GramianBalancer, working_dtype
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.upgrad import check_eps
from mtl_tf.solvers.qp import dual_cone_weights


@register("dualproj")
class DualProj(GramianBalancer):
    """DualProj: the mean gradient, projected onto the dual cone of the task gradients.

    Args:
      norm_eps: float >= 0 (default 1e-4), TorchJD's threshold on the Gramian's trace.
      reg_eps: float >= 0 (default 1e-4), TorchJD's ridge on the normalised Gramian.
      gradient_at: `"shared_parameters"` (default) or `"representation"`.

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: a negative or non-finite eps, or an unknown `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Quinton & Rey, 2024, Proposition 1.
    """

    loss_range = "any"

    def __init__(self, norm_eps=1e-4, reg_eps=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.norm_eps = check_eps("dualproj", "norm_eps", norm_eps)
        self.reg_eps = check_eps("dualproj", "reg_eps", reg_eps)

    def combination(self, gram, losses, mask):
        labelled = ops.cast(mask, working_dtype())
        u = (labelled / ops.maximum(ops.sum(labelled), 1.0))[None]
        v = dual_cone_weights(gram, u, mask, self.norm_eps, self.reg_eps)[0]
        coefficients = ops.cast(v, "float32")
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}
