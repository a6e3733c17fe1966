"""Static scaling: minimise sum_t c_t L_t with fixed, user-given weights c.

The grid-search baseline of Sener & Koltun (NeurIPS 2018, section 4) trains one
model per weight vector c on a grid of the simplex (see `launch/train.py`
`--config.method=grid`); each of those runs is this method. Lee & Son's
"ordinary" multi-task baseline is `static` with every weight 1. Weights are used
as given (not renormalised), so both conventions can be expressed.
"""

import tensorflow as tf

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector
from mtl_tf.balancers.registry import register


@register("static")
class Static(LossWeightingBalancer):
    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        if weights is None:
            raise ValueError("method 'static' needs weights: one non-negative number per task")
        self.static_weights = dict(weights) if isinstance(weights, dict) else [float(w) for w in weights]

    def build_for_tasks(self, task_names):
        weights = [float(w) for w in as_task_vector("static weights", self.static_weights, task_names)]
        if any(not w >= 0 for w in weights):
            raise ValueError(f"static weights must be finite and non-negative; got {weights}")
        self._weight_vector = weights
        super().build_for_tasks(task_names)

    def objective(self, problem, losses):
        weights = tf.constant(self._weight_vector, tf.float32)
        return tf.reduce_sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "weights": self.static_weights}
