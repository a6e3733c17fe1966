"""Single gradient step update (Lee & Son) and its ablation, split-only.

Lee & Son, "Multitask Learning with Single Gradient Step Update for Task
Balancing", section 3, Algorithm 1, eqs. (2)-(4). On one mini-batch, first order:

  (2) inner step, for every task i:  theta_s^i = theta_s - alpha grad_{theta_s} L_i(theta_s, theta_t^i)
  (3) shared step:  theta_s <- theta_s - beta grad sum_i L_i evaluated at (theta_s^i, theta_t^i)
      (the gradient at the moved point is applied to theta_s: no second derivatives)
  (4) heads, for every task i:  theta_t^i <- theta_t^i - alpha grad_{theta_t^i} L_i(theta_s, theta_t^i)
      at the updated theta_s ("the task specific layers are updated ... while the
      shared layers are fixed", after the shared step).

`split_only` is the paper's ablation: (3) with the plain sum of the losses at
theta_s (no inner step), then (4).

How the equations map onto a Keras model, and the options that name the other
readings (defaults are the paper's rule):

* beta is the model optimizer's learning rate: the optimizer applies (3), so
  momentum, Adam and learning-rate schedules act on the shared layers as usual.
  With plain SGD, (3) is exact.
* alpha (`inner_learning_rate`, single_step only) is set once, as the paper
  does: the given value, or the optimizer's learning rate at the first step;
  it does not follow the schedule. `inner_rate_schedule="optimizer"` ties it to
  the schedule instead (alpha_t = alpha * lr_t / lr_0; with alpha unset that is
  the optimizer's current rate, this module's behaviour before version 0.2).
* (4) takes the heads' gradients at the shared weights the optimizer actually
  produced this step (`head_gradients_at="updated"`): the model applies the
  shared update first, then asks for the head gradients (`Update.head_phase`),
  for any optimizer. `"sgd_lookahead"` evaluates them at theta_s - beta * g
  (the new weights for plain SGD only; the behaviour before 0.2) and
  `"original"` at the old theta_s (no extra forward pass).
* The heads are stepped with alpha (`head_learning_rate="inner"`, eq. 4) by a
  second optimizer of the model's kind (`MultiTaskModel.head_optimizer`, a
  clone of the model's optimizer: with momentum or Adam the heads keep their
  own moments, as with a second parameter group in PyTorch), or with the
  model optimizer's rate (`"optimizer"`, the behaviour before 0.2, also the
  only choice of `split_only`, which has no alpha). With plain SGD,
  `head_learning_rate="inner"` and `head_gradients_at="updated"` the step
  equals eqs. (2)-(4) exactly.
* Every replica forms the same theta_s^i from the global-batch gradient; the
  extra forward passes at theta_s^i and at the updated theta_s are stateless
  (they move no batch-norm statistics and draw the real pass's dropout masks).
* A task without labels in the batch has a zero gradient, so theta_s^i = theta_s
  and its terms in (3) and (4) vanish: the step of a model without that task.

Extra logs: `{task}_inner_loss`, the loss of task i at theta_s^i (the red curve of
the paper's Fig. 3), single_step only; like `{task}_loss` an epoch mean.
"""

import numpy as np
from keras import ops

from mtl_tf.backend.ops import add_n
from mtl_tf.balancers.base import (
    Balancer,
    Update,
    shared_task_gradients,
    stack_first_axis,
    validate_choice,
    zeros_for_none,
)
from mtl_tf.balancers.options import check_number
from mtl_tf.balancers.registry import register

HEAD_GRADIENTS_AT = ("updated", "sgd_lookahead", "original")
HEAD_LEARNING_RATES = ("inner", "optimizer")
INNER_RATE_SCHEDULES = ("constant", "optimizer")


class _SharedThenHeads(Balancer):
    """The schedule both methods share: a shared-layer step (eq. 3), then the heads (eq. 4)."""

    inner_step = False
    head_learning_rate = "optimizer"

    def __init__(self, head_gradients_at="updated", **kwargs):
        super().__init__(**kwargs)
        self.head_gradients_at = validate_choice("head_gradients_at", head_gradients_at, HEAD_GRADIENTS_AT)

    @property
    def uses_head_optimizer(self):
        """Whether the heads take a second optimizer step after the shared one (see the module docstring)."""
        return self.head_gradients_at == "updated" or self.head_learning_rate == "inner"

    def build_for_tasks(self, task_names, losses=None):
        state = {"trainable": False, "aggregation": "only_first_replica"}
        # [alpha, lr_0] fixed at the first step, and whether they are set.
        self.base_rates = self.add_weight(name="base_rates", shape=(2,), initializer="zeros", **state)
        self.has_base_rates = self.add_weight(name="has_base_rates", shape=(), initializer="zeros", **state)
        super().build_for_tasks(task_names, losses)

    def configured_inner_rate(self):
        """alpha as given, or None for the optimizer's learning rate at the first step."""
        return None

    def rates(self, problem):
        """(alpha of this step, head learning rate of this step), float32 scalars."""
        lr = problem.learning_rate
        given = self.configured_inner_rate()
        first = ops.stack([lr if given is None else ops.convert_to_tensor(np.float32(given)), lr])
        base = ops.where(self.has_base_rates > 0.0, ops.cast(self.base_rates, "float32"), first)
        self.base_rates.assign(base)
        self.has_base_rates.assign(1.0)
        alpha = base[0]
        if getattr(self, "inner_rate_schedule", "constant") == "optimizer":
            alpha = alpha * lr / ops.maximum(base[1], 1e-30)
        head_rate = alpha if self.head_learning_rate == "inner" else lr
        return alpha, head_rate

    def inner_gradients(self, problem, alpha, shared_values, global_per_task):
        """(outer gradient, inner losses): eq. (3)'s sum over tasks of grad L_i at theta_s^i (eq. 2).

        Each term is one stateless pass at theta_s^i = theta_s - alpha g_i
        (`encode_with`, `heads_with`), differentiated at the moved point.
        """
        outer, inner_losses = None, []
        for i, task in enumerate(problem.task_names):
            moved = [w - ops.cast(alpha, w.dtype) * ops.cast(g[i], w.dtype) for w, g in zip(shared_values, global_per_task)]

            def inner_objective(point, task=task):
                _, (inner_loss,) = problem.heads_with(problem.encode_with(point), tasks=[task])
                return problem.scale(inner_loss), inner_loss

            (_, inner_loss), grads = problem.value_and_gradients(inner_objective, moved)
            outer = grads if outer is None else [a + b for a, b in zip(outer, grads)]
            inner_losses.append(inner_loss)
        return outer, inner_losses

    def compute_update(self, problem):
        shared_vars = problem.shared_variables
        # The weights before this step's update (the head phase reads the new ones).
        shared_values = [ops.copy(v.value) for v in shared_vars]
        alpha, head_rate = self.rates(problem)
        logs = {}
        if self.inner_step:
            _, per_task, own_heads = shared_task_gradients(problem)
            global_per_task = problem.unscale(problem.all_reduce_sum(stack_first_axis(per_task)))
            outer, inner_losses = self.inner_gradients(problem, alpha, shared_values, global_per_task)
            global_inner = problem.global_losses(inner_losses)
            logs = {f"{t}_inner_loss": global_inner[i] for i, t in enumerate(problem.task_names)}
        else:
            # grad of sum_t S L_t: the shared step of split-only and, at the original weights, the heads'.
            _, outer, own_heads, _, _ = problem.objective_gradients(lambda losses: (ops.sum(losses), None))
            outer = zeros_for_none(outer, shared_vars)

        tasks = problem.task_names
        sizes = [len(problem.head_variables[t]) for t in tasks]

        def head_gradients_at(shared_point):
            """{task: grad of S L_t w.r.t. head t} at `shared_point`, from one stateless pass."""

            def total(head_values):
                per_head, start = {}, 0
                for t, k in zip(tasks, sizes):
                    per_head[t], start = head_values[start:start + k], start + k
                _, point_losses = problem.heads_with(problem.encode_with(shared_point), head_values=per_head)
                return problem.scale(add_n(point_losses)), None

            current = [v.value for t in tasks for v in problem.head_variables[t]]
            _, grads = problem.value_and_gradients(total, current)
            heads, start = {}, 0
            for t, k in zip(tasks, sizes):
                heads[t], start = list(grads[start:start + k]), start + k
            return heads

        heads, head_phase = None, None
        if self.head_gradients_at == "original":
            heads = own_heads
        elif self.head_gradients_at == "sgd_lookahead":
            step = problem.unscale(problem.all_reduce_sum(outer))
            lr = problem.learning_rate
            heads = head_gradients_at([w - ops.cast(lr, w.dtype) * ops.cast(g, w.dtype) for w, g in zip(shared_values, step)])
        else:
            # Run by the model once the shared update is applied: reads the new weights.
            head_phase = lambda: head_gradients_at([ops.copy(v.value) for v in shared_vars])  # noqa: E731
        weights = ops.cast(problem.task_mask, "float32")
        return Update(
            shared=outer,
            heads=heads,
            head_phase=head_phase,
            head_learning_rate=head_rate if self.uses_head_optimizer else None,
            task_weights=weights,
            logs=logs,
        )

    def get_config(self):
        return {**super().get_config(), "head_gradients_at": self.head_gradients_at}


@register("single_step")
class SingleStep(_SharedThenHeads):
    """Lee & Son's single gradient step update: inner steps per task, the shared step at the moved points, then the heads.

    Args:
      inner_learning_rate: alpha of eqs. (2) and (4), > 0; default None: the
        optimizer's learning rate at the first step (the paper uses
        alpha = beta = 0.001 with SGD).
      inner_rate_schedule: `"constant"` (default, the paper: alpha set once) or
        `"optimizer"` (alpha scaled with the optimizer's learning-rate schedule).
      head_gradients_at: `"updated"` (default, the paper: at the shared weights
        the optimizer produced this step), `"sgd_lookahead"` or `"original"`.
      head_learning_rate: `"inner"` (default, eq. 4: heads stepped with alpha)
        or `"optimizer"` (with the optimizer's learning rate).

    Logs `{task}_weight` = 1 (0 for a task without labels) and
    `{task}_inner_loss` = L_i(theta_s^i, theta_t^i) (the paper's Fig. 3).

    Raises:
      ValueError: an inner learning rate that is not a positive finite
        number, or an unknown choice.

    Loss range: any real loss. Every step follows gradients of the losses (their sum, at the inner
    points); loss values are only logged, so a negative loss or a loss of exactly 0 is like any
    other.

    Reference: Lee & Son, section 3, eqs. (2)-(4), Algorithm 1.
    """

    loss_range = "any"

    inner_step = True

    def __init__(
        self,
        inner_learning_rate=None,
        inner_rate_schedule="constant",
        head_gradients_at="updated",
        head_learning_rate="inner",
        **kwargs,
    ):
        super().__init__(head_gradients_at=head_gradients_at, **kwargs)
        self.head_learning_rate = validate_choice("head_learning_rate", head_learning_rate, HEAD_LEARNING_RATES)
        # None: the optimizer's learning rate at the first step.
        self.inner_learning_rate = check_number(
            "single_step", "inner_learning_rate", inner_learning_rate, low=0, low_open=True, none_ok=True
        )
        self.inner_rate_schedule = validate_choice("inner_rate_schedule", inner_rate_schedule, INNER_RATE_SCHEDULES)

    def configured_inner_rate(self):
        return self.inner_learning_rate

    def epoch_mean_logs(self, task_names):
        return tuple(f"{t}_inner_loss" for t in task_names)

    def get_config(self):
        return {
            **super().get_config(),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_rate_schedule": self.inner_rate_schedule,
            "head_learning_rate": self.head_learning_rate,
        }


@register("split_only")
class SplitOnly(_SharedThenHeads):
    """Lee & Son's ablation: the shared layers step on the plain sum of losses, then the heads.

    Args:
      head_gradients_at: `"updated"` (default: at the shared weights the
        optimizer produced this step), `"sgd_lookahead"` or `"original"`
        (with `"original"` split-only is plain sum-of-losses training, since
        grad_{theta_t^i} sum_j L_j = grad_{theta_t^i} L_i).

    It has no inner step, so no alpha: the heads take the optimizer's learning
    rate (`head_learning_rate` is fixed to `"optimizer"`; with the paper's
    alpha = beta that is eq. 4).

    Logs `{task}_weight` = 1 (0 for a task without labels).

    Loss range: any real loss. The steps follow gradients of the losses; loss values are only
    logged, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Lee & Son, section 4.1 ("Split-only").
    """

    loss_range = "any"

