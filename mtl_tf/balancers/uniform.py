"""Uniform scaling: minimise (1/T) sum_t L_t.

The "uniform scaling" baseline of Sener & Koltun, "Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, section 4. (Lee & Son's "ordinary"
baseline is the plain sum, weight 1 per task: `static` with weights [1, ..., 1].)

A task without labels in the batch is left out of the mean: the weights are
1/T' over the T' labelled tasks, the step of a model without that task.
"""

from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer
from mtl_tf.balancers.registry import register


@register("uniform")
class Uniform(LossWeightingBalancer):
    """Uniform scaling: the update descends the mean of the task losses.

    No options. Logs `{task}_weight` = 1/T' for the T' tasks labelled in the
    batch, 0 for the others.

    Loss range: any real loss. The update descends the mean of the losses, which is linear in them:
    a negative loss or a loss of exactly 0 is like any other.

    Reference: Sener & Koltun, NeurIPS 2018, section 4 ("uniform scaling").
    """

    loss_range = "any"

    simplex_weights = True

    def objective(self, problem, losses):
        labelled = ops.cast(problem.task_mask, "float32")
        weights = labelled / ops.maximum(ops.sum(labelled), 1.0)
        return ops.sum(weights * losses), weights
