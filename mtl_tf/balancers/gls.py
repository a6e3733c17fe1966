"""GLS: the geometric loss strategy.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
Workshops 2019, section 3 ("geometric loss strategy"): the network
descends the geometric mean of the T task losses,

    GLS = (prod_t L_t)^(1/T).

Its gradient is sum_t w_t grad L_t with w_t = dGLS/dL_t = GLS / (T L_t): a
task with a small loss gets a large weight, so no task is left behind in
relative terms (the objective is invariant to rescaling one loss, up to a
constant factor). The step descends exactly that gradient; the weights are
formed in float32 from the global-batch losses and then multiply the local
losses (stop-gradient), which is the chain rule of the objective evaluated
on the global batch (rule 4) and the gradient of GLS itself on one device.

Choices and deviations:

* Computed as exp(mean_t log L_t), in float32 from the unscaled losses (the
  product of many small losses underflows); each loss is floored at 1e-12
  before the log, so a task whose loss is exactly 0 gets a large finite weight
  instead of a NaN (the geometric mean has no gradient there).
* A task without labels in the batch is left out: T is the number of labelled
  tasks, the step of a model without that task (rule 3).
* Logs `{task}_weight` = GLS / (T L_t), the effective weight of grad L_t in the
  update. (LibMTL logs L_t / (T prod_s L_s), which is not that weight.)

No options.
"""

from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer
from mtl_tf.balancers.registry import register

# A zero loss has no geometric-mean gradient; flooring keeps the weight finite.
LOSS_FLOOR = 1e-12


@register("gls")
class GLS(LossWeightingBalancer):
    """Geometric loss strategy: descends (prod_t L_t)^(1/T).

    No options. Logs `{task}_weight` = GLS / (T L_t) for the T tasks labelled
    in the batch (the weight of grad L_t in the update), 0 for the others.

    Loss range: non-negative. The geometric mean of losses of mixed signs measures no progress: its
    log is undefined, and flooring a negative loss at 1e-12 gives that task a weight of order 1e6
    and the others near 0 (measured: both losses climbed). A loss of exactly 0 is floored at 1e-12:
    GLS is then near 0 (minimal already), that task gets a weight of order 1e6 and the others near
    0, so they stop training (measured: 2e6 and 1.25e-7 against an MSE of 16), all finite.

    Reference: Chennupati et al., CVPR Workshops 2019, section 3 (geometric loss strategy).
    """

    loss_range = "non_negative"

    def objective(self, problem, losses):
        mask = problem.task_mask
        labelled = ops.cast(mask, "float32")
        count = ops.maximum(ops.sum(labelled), 1.0)
        log_losses = ops.log(ops.maximum(problem.all_reduce_sum(losses), LOSS_FLOOR))
        log_losses = ops.where(mask, log_losses, ops.zeros_like(log_losses))
        log_gls = ops.sum(log_losses) / count
        # dGLS/dL_t = GLS / (T L_t), formed in log space so no product under- or overflows.
        weights = labelled * ops.exp(log_gls - log_losses) / count
        weights = ops.stop_gradient(weights)
        return ops.sum(weights * losses), weights
