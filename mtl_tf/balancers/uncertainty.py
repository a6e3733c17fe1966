"""Homoscedastic uncertainty weighting.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018. Each task has a learnable
s_t = log sigma_t^2 (initialised at 0) and the objective is

    sum_t  c_t exp(-s_t) L_t + s_t / 2,

with c_t = 1/2 for a regression task (Gaussian likelihood, the paper's eq. 7
term 1/(2 sigma^2) L + log sigma) and c_t = 1 for a classification task
(softmax likelihood, eq. 10 term 1/sigma^2 L + log sigma). The log-variances are
trainable variables of the balancer, updated by the model's optimizer together
with the network. Logged task weights are c_t exp(-s_t).

Deviation: none in the objective. Many public implementations use
exp(-s_t) L_t + s_t for every task; that is twice the `regression` form, i.e.
the same method with a doubled learning rate.
"""

import tensorflow as tf

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector, validate_choice
from mtl_tf.balancers.registry import register

TASK_TYPES = {"regression": 0.5, "classification": 1.0}


@register("uncertainty")
class Uncertainty(LossWeightingBalancer):
    def __init__(self, task_types="regression", **kwargs):
        super().__init__(**kwargs)
        self.task_types = task_types

    def build_for_tasks(self, task_names):
        if isinstance(self.task_types, str):
            types = [self.task_types] * len(task_names)
        else:
            types = as_task_vector("uncertainty task_types", self.task_types, task_names)
        for kind in types:
            validate_choice("uncertainty task type", kind, TASK_TYPES)
        self._likelihood_scale = [TASK_TYPES[k] for k in types]
        self.log_variances = self.add_weight(
            name="log_variances", shape=(len(task_names),), initializer="zeros", trainable=True
        )
        super().build_for_tasks(task_names)

    def objective(self, problem, losses):
        s = tf.cast(self.log_variances, tf.float32)
        weights = tf.constant(self._likelihood_scale, tf.float32) * tf.exp(-s)
        # The task losses are already divided by the number of replicas; the
        # regulariser must be too, since the optimizer sums replica gradients.
        regulariser = 0.5 * tf.reduce_sum(s) / problem.num_replicas
        return tf.reduce_sum(weights * losses) + regulariser, weights

    def get_config(self):
        return {**super().get_config(), "task_types": self.task_types}
