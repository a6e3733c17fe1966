"""Static scaling: minimise sum_t c_t L_t with fixed, user-given weights c.

The grid-search baseline of Sener & Koltun (NeurIPS 2018, section 4) trains one
model per weight vector c on a grid of the simplex (see `launch/train.py`
`--config.method=grid`); each of those runs is this method. Lee & Son's
"ordinary" multi-task baseline is `static` with every weight 1. Weights are used
as given (not renormalised), so both conventions can be expressed.
"""

import math

import numpy as np
from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector, mask_weights
from mtl_tf.balancers.registry import register


@register("static")
class Static(LossWeightingBalancer):
    """Static scaling: the update descends sum_t c_t L_t with fixed weights c.

    Args:
      weights: one finite number >= 0 per task, a list in head order or a dict
        keyed by task name; required. Used as given (not renormalised):
        `[1, 1]` is Lee & Son's "ordinary" sum of losses, `[0.5, 0.5]` uniform.

    Logs `{task}_weight` = c_t, 0 for a task without labels in the batch.

    Raises:
      ValueError: weights missing, of the wrong length or keys, negative or
        not finite.

    Loss range: any real loss. The update descends a fixed weighted sum of the losses, linear in
    them: a negative loss or a loss of exactly 0 is like any other.

    Reference: Sener & Koltun, NeurIPS 2018, section 4 (grid search of static
    scalings); Lee & Son, Table 1 ("ordinary").
    """

    loss_range = "any"

    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        if weights is None:
            raise ValueError("method 'static' needs weights: one non-negative number per task")
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
            raise ValueError(
                f"static weights are {weights!r}; expected a list with one weight per task, in head order, "
                "or a dict keyed by task name"
            )
        if isinstance(weights, dict):
            self.static_weights = {task: _as_weight(w, f"weight of task {task!r}") for task, w in weights.items()}
        else:
            self.static_weights = [_as_weight(w, f"weight {i} (0-based)") for i, w in enumerate(weights)]

    def build_for_tasks(self, task_names, losses=None):
        self._weight_vector = as_task_vector("static weights", self.static_weights, task_names)
        super().build_for_tasks(task_names, losses)

    def objective(self, problem, losses):
        weights = mask_weights(ops.convert_to_tensor(np.asarray(self._weight_vector, np.float32)), problem.task_mask)
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "weights": self.static_weights}


def _as_weight(value, what):
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"static weights: {what} is {value!r}; expected a finite, non-negative number") from None
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"static weights: {what} is {weight}; expected a finite, non-negative number")
    return weight
