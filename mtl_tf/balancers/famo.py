"""FAMO: fast adaptive multitask optimization.

Liu, Liu, Jin, Stone & Liu (B. Liu et al.), "FAMO: Fast Adaptive Multitask
Optimization", NeurIPS 2023, section 3, Algorithm 1. FAMO keeps task logits
xi (initialised at 0) and, every step t:

1. forms z = softmax(xi) and descends the log losses with normalised weights:
   d_t = c_t sum_i (z_i / L_i) grad L_i with c_t = (sum_i z_i / L_i)^-1, i.e.
   the gradient of sum_i c_t z_i log L_i with c_t held fixed (each L_i is
   L_i - min_i + epsilon, min_i a known lower bound of the loss, 0 by
   default); the effective weights w_i = c_t z_i / L_i sum to 1;
2. after the model's step, measures each task's log-loss decrease
   delta_i = log L_i(theta_t) - log L_i(theta_t+1) and moves the logits
   against J^T delta, J = dz/dxi = diag(z) - z z^T (a task that improved more
   than the z-weighted average loses weight), with learning rate beta and a
   decay gamma.

When the logits move: delta needs the losses after the model's step, which a
balancer cannot see inside its own step (the model applies the update after
`compute_update` returns). The official trainers (Cranial-XIX/FAMO,
`experiments/*/trainer.py`) run an extra forward pass of the same batch after
`optimizer.step()`. Here the logits are moved at the start of the NEXT step,
with that step's losses as L(theta_t+1): no extra pass, nothing leaves the
device, and the state (logits, the previous losses, the logits' Adam moments)
is balancer variables. The difference: the "after" losses come from the next
batch instead of the same one, so delta also carries batch-to-batch noise;
on a data set of one batch the two coincide exactly (the tests use that).
The logits used by step t+1 are those after update t in both.

Other choices and deviations:

* The logits' own optimizer (`logit_optimizer`): `"adam"` (default) is the
  official code's torch Adam with coupled weight decay gamma (betas 0.9 /
  0.999, eps 1e-8); `"sgd"` is Algorithm 1's plain step
  xi <- xi - beta (J^T delta + gamma xi). The logits are updated by this rule,
  not by the model's optimizer (they are not trainable weights): FAMO's
  logit step has its own learning rate and direction, which is not the
  gradient of the model's objective.
* Defaults beta = 0.025 and gamma = 1e-3 (LibMTL's FAMO_w_lr / FAMO_w_gamma;
  the official famo.py example uses gamma = 0.01, its trainers 1e-5 unless
  the run scripts set it), epsilon = 1e-8 (official).
* The official famo.py clips the shared gradient to norm 1 after the
  backward pass; that is not part of Algorithm 1 and is left to the
  optimizer (`clipnorm`).
* Labels (rule 3): a task without labels in the batch gets weight 0 and the
  softmax runs over the labelled tasks; its logit moves only at a step where
  it is labelled in both the previous and the current batch (delta needs
  both), and then only its own Adam moments move. With every task labelled
  this is the algorithm above.
* All of it from the global-batch losses (rule 4): the weights w are formed
  once per step and multiply the local losses (stop-gradient), which is the
  gradient of the objective on the global batch.

Logs `{task}_weight` = w_i = c_t z_i / L_i, the weight of grad L_i in the
update (on the simplex).
"""

import math
import numbers

import numpy as np
from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector, validate_choice
from mtl_tf.balancers.options import check_task_values
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.rlw import masked_softmax

LOGIT_OPTIMIZERS = ("adam", "sgd")
# torch.optim.Adam's defaults, which the official code uses for the logits.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@register("famo")
class FAMO(LossWeightingBalancer):
    """FAMO: softmax task logits, normalised log-loss weights, logits moved by the losses' decrease.

    Args:
      logit_learning_rate: beta, the learning rate of the logits (default 0.025).
      logit_decay: gamma, the logits' weight decay (default 1e-3).
      logit_optimizer: `"adam"` (default, the official code) or `"sgd"`
        (Algorithm 1's plain step).
      min_losses: lower bounds of the task losses, one number for every task
        or a list (head order) / dict (by task); default 0.
      epsilon: added to L_i - min_i before the log (default 1e-8).

    Logs `{task}_weight` = the weight of grad L_i in the update (on the simplex).

    Raises:
      ValueError: a learning rate that is not a positive finite number, a
        negative or non-finite decay or epsilon, an unknown logit optimizer,
        or min_losses of the wrong length / keys.

    Loss range: non-negative, measured from `min_losses`: L_t >= min_t. FAMO descends log(L_t -
    min_t + epsilon) and moves its logits by the decrease of those logs, so min_t must be a lower
    bound of the loss (the paper's assumption). A loss below its bound is refused: its gap would be
    floored at 1e-30, every logit step would be 0 and the run would equal `uniform` silently
    (measured with a CosineSimilarity task: the other task's weight fell to 6e-32). For a loss that
    can be negative give its bound (CosineSimilarity: min_losses={task: -1.0}). A loss of exactly
    min_t gives log(epsilon), finite; that task's weight c_t z_t / epsilon then takes nearly all of
    the update (measured: 1 against 6e-10 for an MSE of 16, which then stopped training).

    Reference: B. Liu et al., NeurIPS 2023, section 3, Algorithm 1.
    """

    loss_range = "non_negative"
    # The option that sets `loss_range_floors` (named by the refusal message).
    loss_range_floor_option = "min_losses"

    simplex_weights = True

    def __init__(self, logit_learning_rate=0.025, logit_decay=1e-3, logit_optimizer="adam", min_losses=0.0,
                 epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.logit_learning_rate = _number("logit_learning_rate", logit_learning_rate, positive=True)
        self.logit_decay = _number("logit_decay", logit_decay)
        self.epsilon = _number("epsilon", epsilon)
        self.logit_optimizer = validate_choice("famo logit_optimizer", logit_optimizer, LOGIT_OPTIMIZERS)
        if isinstance(min_losses, numbers.Number):
            min_losses = _number("min_losses", min_losses, negative_ok=True)
        else:
            check_task_values("famo", "min_losses", min_losses,
                              lambda label, value: _number(label, value, negative_ok=True), none_ok=False)
        self.min_losses = min_losses

    def build_for_tasks(self, task_names, losses=None):
        if isinstance(self.min_losses, numbers.Number):
            bounds = [float(self.min_losses)] * len(task_names)
        else:
            bounds = [_number("min_losses entry", v, negative_ok=True)
                      for v in as_task_vector("famo min_losses", self.min_losses, task_names)]
        self._min_losses = bounds
        state = {"shape": (len(task_names),), "initializer": "zeros", "trainable": False,
                 "aggregation": "only_first_replica"}
        self.logits = self.add_weight(name="logits", **state)
        self.previous_losses = self.add_weight(name="previous_losses", **state)
        self.previous_labelled = self.add_weight(name="previous_labelled", **state)
        if self.logit_optimizer == "adam":
            self.logit_moment_1 = self.add_weight(name="logit_moment_1", **state)
            self.logit_moment_2 = self.add_weight(name="logit_moment_2", **state)
            self.logit_steps = self.add_weight(name="logit_steps", **state)
        super().build_for_tasks(task_names, losses)

    def loss_range_floors(self):
        """[T] min_losses: the bounds the loss range is measured from (`mtl_tf.balancers.loss_range`)."""
        return list(self._min_losses)

    def _shifted_log(self, losses):
        gaps = losses - ops.convert_to_tensor(np.asarray(self._min_losses, np.float32)) + self.epsilon
        return ops.log(ops.maximum(gaps, 1e-30))

    def update_logits(self, losses, mask):
        """Algorithm 1's logit step for the last step's decrease; returns the new logits."""
        logits = ops.cast(self.logits, "float32")
        valid = ops.logical_and(mask, self.previous_labelled > 0.0)
        decrease = self._shifted_log(ops.cast(self.previous_losses, "float32")) - self._shifted_log(losses)
        decrease = ops.where(valid, decrease, ops.zeros_like(decrease))
        z = masked_softmax(logits, valid)
        # J^T delta with J = diag(z) - z z^T (the softmax Jacobian, symmetric).
        direction = z * (decrease - ops.sum(z * decrease))
        gradient = direction + self.logit_decay * logits
        if self.logit_optimizer == "sgd":
            new_logits = logits - self.logit_learning_rate * gradient
        else:
            steps = self.logit_steps + 1.0
            moment_1 = ADAM_BETA_1 * self.logit_moment_1 + (1.0 - ADAM_BETA_1) * gradient
            moment_2 = ADAM_BETA_2 * self.logit_moment_2 + (1.0 - ADAM_BETA_2) * ops.square(gradient)
            corrected_1 = moment_1 / (1.0 - ops.power(ADAM_BETA_1, steps))
            corrected_2 = moment_2 / (1.0 - ops.power(ADAM_BETA_2, steps))
            new_logits = logits - self.logit_learning_rate * corrected_1 / (ops.sqrt(corrected_2) + ADAM_EPSILON)
            # A task outside `valid` takes no part: its logit and its moments stay.
            self.logit_moment_1.assign(ops.where(valid, moment_1, self.logit_moment_1.value))
            self.logit_moment_2.assign(ops.where(valid, moment_2, self.logit_moment_2.value))
            self.logit_steps.assign(ops.where(valid, steps, self.logit_steps.value))
        new_logits = ops.where(valid, new_logits, logits)
        self.logits.assign(new_logits)
        return new_logits

    def objective(self, problem, losses):
        mask = problem.task_mask
        global_losses = problem.all_reduce_sum(losses)
        logits = self.update_logits(global_losses, mask)
        z = masked_softmax(logits, mask)
        inverse_gaps = ops.exp(-self._shifted_log(global_losses))
        inverse_gaps = ops.where(mask, inverse_gaps, ops.zeros_like(inverse_gaps))
        weighted = z * inverse_gaps
        weights = ops.stop_gradient(weighted / ops.maximum(ops.sum(weighted), 1e-30))
        self.previous_losses.assign(global_losses)
        self.previous_labelled.assign(ops.cast(mask, "float32"))
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {
            **super().get_config(),
            "logit_learning_rate": self.logit_learning_rate,
            "logit_decay": self.logit_decay,
            "logit_optimizer": self.logit_optimizer,
            "min_losses": self.min_losses,
            "epsilon": self.epsilon,
        }


def _number(name, value, positive=False, negative_ok=False):
    """A finite float option (> 0 when `positive`, >= 0 unless `negative_ok`), else a ValueError naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    elif ok and not negative_ok:
        ok = value >= 0
    if not ok:
        what = "a positive finite number" if positive else "a finite number" if negative_ok else "a finite number >= 0"
        raise ValueError(f"famo {name} must be {what}; got {value!r}")
    return float(value)
