"""Uniform scaling: minimise (1/T) sum_t L_t.

The "uniform scaling" baseline of Sener & Koltun, "Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, section 4. (Lee & Son's "ordinary"
baseline is the plain sum, weight 1 per task: `static` with weights [1, ..., 1].)
"""

import tensorflow as tf

from mtl_tf.balancers.base import LossWeightingBalancer
from mtl_tf.balancers.registry import register


@register("uniform")
class Uniform(LossWeightingBalancer):
    def objective(self, problem, losses):
        weights = tf.fill([self.num_tasks], 1.0 / self.num_tasks)
        return tf.reduce_sum(weights * losses), weights
