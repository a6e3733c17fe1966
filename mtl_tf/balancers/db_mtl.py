"""DB-MTL: dual-balancing multi-task learning.

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task
Learning" (arXiv 2308.12029, 2023), section 3, Algorithm 1. Two balancings:

1. Loss scale: every task descends log(L_t + epsilon) instead of L_t, i.e. its
   gradient g_t = grad L_t / (L_t + epsilon) (the heads take exactly that);
2. Gradient magnitude, on the shared parameters: an exponential moving average
   of each task's log-loss gradient, g_hat_t <- beta_k g_hat_t + (1 - beta_k) g_t
   (g_hat_t = 0 before the first step), then every g_hat_t is rescaled to the
   largest norm among the tasks: the shared update is
   sum_t (max_s ||g_hat_s|| / ||g_hat_t||) g_hat_t.

beta_k = beta / k^beta_sigma at step k = 1, 2, ... (the schedule of LibMTL,
the authors' library, `DB_beta`, `DB_beta_sigma`; defaults 0.9 and 0, a
constant beta).

State: the EMAs g_hat_t, one copy of the shared-parameter gradients per task
(T x the shared parameter count, float32; `mtl_tf.balancers.tracked`), and the
step count k. Both move only on a step the model applies.

Choices and deviations:

* No epsilon in max_s ||g_hat_s|| / ||g_hat_t|| (LibMTL adds 1e-8 to the
  norm); a task with ||g_hat_t|| = 0 gets factor 0. LibMTL's epsilon = 1e-8 in
  the logarithm is kept (`epsilon`).
* Labels (rule 3): a task without labels in the global batch keeps its EMA as
  it was, takes no part in the maximum and adds nothing; its weight is 0.
* Replicas (rule 4): the EMAs move with the global-batch gradients (all-reduced)
  divided by the global losses, so every replica holds the same state and
  applies the same update (each returns its 1/num_replicas share of it).
* Under a loss-scaling optimizer the EMAs hold true (unscaled) gradients; the
  returned update is scaled back (rule 1).
* Representation gradients are not offered (LibMTL refuses them too): the
  EMA is over parameter gradients, which a representation of a new batch has
  no counterpart of.

Logs `{task}_weight` = max_s ||g_hat_s|| / ||g_hat_t||, the factor of g_hat_t
in the update (1 for the task with the largest EMA; 0 for an unlabelled task).
"""

import math
import numbers

from keras import ops

from mtl_tf.balancers.base import Update, shared_task_gradients
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.tracked import (
    TrackedGradientBalancer,
    as_replica_share,
    global_task_gradients,
    state_may_move,
    task_norms,
)


@register("db_mtl")
class DBMTL(TrackedGradientBalancer):
    """DB-MTL: log losses, then the EMA of each task's shared gradient rescaled to the largest norm.

    Args:
      beta: the EMA's beta in [0, 1) (default 0.9, LibMTL's `DB_beta`).
      beta_sigma: the decay exponent, beta_k = beta / k^beta_sigma (default 0,
        LibMTL's `DB_beta_sigma`).
      epsilon: added to each loss before the logarithm (default 1e-8).

    Logs `{task}_weight` = the factor max_s ||g_hat_s|| / ||g_hat_t||.

    Raises:
      ValueError: beta outside [0, 1), a negative or non-finite beta_sigma or
        epsilon.

    Loss range: non-negative. Every task descends log(L_t + epsilon), i.e. grad L_t / (L_t +
    epsilon): for L_t < 0 the factor is negative (or, near -epsilon, unbounded) and that task's loss
    climbs (measured with a CosineSimilarity task). A loss of exactly 0 gets the factor 1 / epsilon
    = 1e8 (LibMTL's epsilon), and near 0 a factor close to it, which multiplies its head's gradient
    (measured: an MSE task starting at 0 reached 2916 on the third step of SGD(1e-3)); the shared
    update is rescaled to the largest EMA norm.

    Reference: Lin et al., arXiv 2308.12029 (2023), section 3, Algorithm 1.
    """

    loss_range = "non_negative"

    def __init__(self, beta=0.9, beta_sigma=0.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta = _number("beta", beta)
        if not self.beta < 1.0:
            raise ValueError(f"db_mtl beta must be a number in [0, 1); got {beta!r}")
        self.beta_sigma = _number("beta_sigma", beta_sigma)
        self.epsilon = _number("epsilon", epsilon)

    def compute_update(self, problem):
        tracked = self.ensure_tracked(problem)
        losses, per_task, heads = shared_task_gradients(problem)
        mask = problem.task_mask
        global_losses = problem.global_losses(losses)
        inverse = ops.where(mask, 1.0 / (global_losses + self.epsilon), ops.zeros_like(global_losses))
        # grad log(L_t + eps) = grad L_t / (L_t + eps), with the global loss.
        gradients = [g * ops.reshape(inverse, [-1] + [1] * (len(g.shape) - 1))
                     for g in global_task_gradients(problem, per_task)]
        steps = self.steps + 1.0
        beta = self.beta / ops.power(steps, self.beta_sigma)
        moves = state_may_move(problem, gradients)
        labelled = ops.reshape(mask, [-1])
        new_tracked = []
        for y, current, g in zip(tracked, self.tracked_values(), gradients):
            keep = ops.reshape(labelled, [-1] + [1] * (len(g.shape) - 1))
            moved = beta * current + (1.0 - beta) * g
            new = ops.where(keep, moved, current)
            y.assign(ops.where(moves, new, current))
            new_tracked.append(new)
        self.steps.assign(ops.where(moves, steps, self.steps.value))
        norms = ops.where(mask, task_norms(new_tracked), ops.zeros([self.num_tasks]))
        largest = ops.max(norms)
        factors = ops.where(norms > 0.0, largest / ops.where(norms > 0.0, norms, 1.0), ops.zeros_like(norms))
        direction = [ops.tensordot(factors, y, axes=1) for y in new_tracked]
        shared = as_replica_share(problem, direction, problem.shared_variables)
        # Heads descend their own log loss (local share; the gradients are of S L_t).
        heads = {
            t: [None if g is None else g * ops.cast(inverse[i], g.dtype) for g in heads[t]]
            for i, t in enumerate(problem.task_names)
        }
        return Update(shared=shared, heads=heads, task_weights=factors)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma, "epsilon": self.epsilon}


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"db_mtl {name} must be a finite number >= 0; got {value!r}")
    return float(value)
