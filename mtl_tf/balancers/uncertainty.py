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

Deviation: s_t >= -10 (c_t exp(-s_t) <= c_t e^10 = c_t 22,026;
`mtl_tf.balancers.log_scales`, where the value is argued). The paper's s_t
is unbounded: with a loss of exactly 0 its gradient is the constant 1/2, so
s_t falls by half the learning rate every step until exp(-s_t) overflows
(178 steps at SGD(1.0)). The bound changes nothing while a task's loss stays
above 1/(2 c_t e^10) (2.3e-5 classification, 4.5e-5 regression; the paper's
fixed point is c_t exp(-s_t) = 1/(2 L_t)); below it the task keeps the
bounded weight. The objective is otherwise the paper's. Many public
implementations use exp(-s_t) L_t + s_t for every task; that is twice the
`regression` form, i.e. the same method with a doubled learning rate.
"""

import numpy as np
from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector, mask_weights, validate_choice
from mtl_tf.balancers.log_scales import LOG_SCALE_BOUND, LogScaleBound
from mtl_tf.balancers.options import check_task_values
from mtl_tf.balancers.registry import register

TASK_TYPES = {"regression": 0.5, "classification": 1.0}

# Keras' losses by the likelihood they are the negative log of (up to constants).
_CLASSIFICATION = (
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy",
)
_REGRESSION = (
    "mean_squared_error", "mean_absolute_error", "huber", "log_cosh",
    "mean_squared_logarithmic_error", "mean_absolute_percentage_error",
)


def task_type_of(loss):
    """`"classification"`, `"regression"` or None (unknown) for a Keras loss object.

    A loss may say it itself with a `likelihood` attribute (`mtl_tf.losses`'
    losses do); otherwise Keras' loss classes and functions are recognised by
    name: the cross-entropies are classification, MSE, MAE, Huber, log-cosh,
    MSLE and MAPE regression.
    """
    declared = getattr(loss, "likelihood", None)
    if declared is not None:
        return declared
    fn = getattr(loss, "fn", None)  # a loss function wrapped as a Loss
    names = [getattr(fn, "__name__", "")] if fn is not None else []
    for klass in type(loss).__mro__:
        names.append(_snake(klass.__name__))
    for name in names:
        if name in _CLASSIFICATION:
            return "classification"
        if name in _REGRESSION:
            return "regression"
    return None


def _snake(name):
    """`MeanSquaredError` -> `mean_squared_error` (Keras' class and function names agree so)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@register("uncertainty")
class Uncertainty(LossWeightingBalancer):
    """Homoscedastic uncertainty weighting: sum_t c_t exp(-s_t) L_t + s_t / 2, s_t learnt.

    Args:
      task_types: `None` (default: each task's form from its loss: a
        cross-entropy is `classification`, MSE, MAE, Huber and the like are
        `regression`), one of `"classification"` / `"regression"` for every
        task, or a list (head order) / dict (by task) of them.

    Logs `{task}_weight` = c_t exp(-s_t) (0 for a task without labels in the
    batch, whose s_t then does not move).

    Raises:
      ValueError: an unknown task type, or (with `task_types=None`) a task
        whose loss is not recognised; the message names the task.

    Loss range: non-negative. The log-variance descends c_t e^{-s_t} L_t + s_t / 2, whose minimum
    s_t = log(2 c_t L_t) exists only for L_t > 0: for a negative loss the objective falls as s_t
    falls, so s_t sinks to the bound s_t >= -10 (module docstring) and the task's weight c_t e^10
    dominates the update. A loss of exactly 0 has no minimum either: s_t falls by half the learning
    rate every step down to that bound and the task keeps the weight c_t e^10, finite.

    Reference: Kendall, Gal & Cipolla, CVPR 2018, eqs. 7 and 10.
    """

    loss_range = "non_negative"

    def __init__(self, task_types=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(task_types, str):
            validate_choice("uncertainty task_types", task_types, TASK_TYPES)
        else:
            check_task_values("uncertainty", "task_types", task_types,
                              lambda label, kind: validate_choice(f"uncertainty {label}", kind, TASK_TYPES))
        self.task_types = task_types

    def build_for_tasks(self, task_names, losses=None):
        if self.task_types is None:
            types = []
            for t in task_names:
                kind = task_type_of((losses or {}).get(t))
                if kind is None:
                    loss_name = type((losses or {}).get(t)).__name__ if losses else "unknown (no losses given)"
                    raise ValueError(
                        f"uncertainty cannot tell whether task {t!r} (loss {loss_name}) is a classification "
                        "or a regression task; give task_types, e.g. "
                        f"balancer_options={{'task_types': {{{t!r}: 'regression'}}}}"
                    )
                types.append(kind)
        elif isinstance(self.task_types, str):
            types = [self.task_types] * len(task_names)
        else:
            types = as_task_vector("uncertainty task_types", self.task_types, task_names)
        for kind in types:
            validate_choice("uncertainty task type", kind, TASK_TYPES)
        self._likelihood_scale = [TASK_TYPES[k] for k in types]
        self.log_variances = self.add_weight(
            name="log_variances", shape=(len(task_names),), initializer="zeros", trainable=True,
            constraint=LogScaleBound(lower=-LOG_SCALE_BOUND),
        )
        super().build_for_tasks(task_names, losses)

    def objective(self, problem, losses):
        s = ops.cast(self.log_variances, "float32")
        labelled = ops.cast(problem.task_mask, "float32")
        likelihood_scale = ops.convert_to_tensor(np.asarray(self._likelihood_scale, np.float32))
        weights = mask_weights(likelihood_scale * ops.exp(-s), problem.task_mask)
        # The task losses are already divided by the number of replicas; the
        # regulariser must be too, since the optimizer sums replica gradients.
        regulariser = 0.5 * ops.sum(labelled * s) / problem.num_replicas
        return ops.sum(weights * losses) + regulariser, weights

    def get_config(self):
        return {**super().get_config(), "task_types": self.task_types}
