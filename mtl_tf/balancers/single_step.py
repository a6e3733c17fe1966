"""Single gradient step update (Lee & Son) and its ablation, split-only.

Lee & Son, "Multitask Learning with Single Gradient Step Update for Task
Balancing" (Algorithm 1, eqs. 2-4). On one mini-batch, first order:

1. inner step, for every task i:  theta_s^i = theta_s - a * grad_{theta_s} L_i(theta_s, theta_t^i)
2. outer step:  theta_s <- theta_s - b * sum_i grad L_i evaluated at (theta_s^i, theta_t^i)
   (the gradient at the moved point is applied to theta_s: no second derivatives)
3. heads, for every task i:  theta_t^i <- theta_t^i - a * grad_{theta_t^i} L_i(theta_s, theta_t^i)

`split_only` is the paper's ablation: step 2 with the plain sum of the losses at
theta_s (no inner step), then step 3.

Choices where the paper is silent or a Keras model differs:
* Step sizes. b is the model optimizer's learning rate and the optimizer applies
  the outer and the head updates together, once per batch (so momentum, Adam
  and learning-rate schedules work as usual). a (`inner_learning_rate`) defaults
  to the optimizer's current learning rate; the paper uses a = b = 0.001 (SGD).
  Heads are stepped by the optimizer, i.e. with b; with the default a = b this is
  the paper's rule.
* Which theta_s step 3 sees. The paper alternates: shared layers first, then the
  heads "while the shared layers are fixed", at the new theta_s. With
  `head_gradients_at="updated"` (default) the head gradients are evaluated at
  theta_s - b * (outer gradient), which is exactly the new theta_s for plain SGD
  (the paper's optimiser) and a one-step look-ahead for other optimisers. With
  `"original"` they are evaluated at the old theta_s (no extra forward pass).
  Without the alternation split-only would coincide with plain sum-of-losses
  training, since grad_{theta_t^i} sum_j L_j = grad_{theta_t^i} L_i.
* Every replica forms the same theta_s^i from the global-batch gradient.

Extra logs: `{task}_inner_loss`, the loss of task i at theta_s^i (the red curve of
the paper's Fig. 3).
"""

import math

import tensorflow as tf

from mtl_tf.balancers.base import (
    Balancer,
    Update,
    gradients_per_task,
    stack_first_axis,
    validate_choice,
)
from mtl_tf.balancers.registry import register

HEAD_GRADIENTS_AT = ("updated", "original")


class _SharedThenHeads(Balancer):
    """The schedule both methods share: a shared-layer step, then the heads (eq. 4)."""

    inner_step = False

    def __init__(self, head_gradients_at="updated", **kwargs):
        super().__init__(**kwargs)
        self.head_gradients_at = validate_choice("head_gradients_at", head_gradients_at, HEAD_GRADIENTS_AT)

    def inner_rate(self, problem):
        return problem.learning_rate

    def compute_update(self, problem):
        shared_vars = problem.shared_variables
        shared_values = [v.value for v in shared_vars]
        with tf.GradientTape(persistent=True) as tape:
            _, _, losses = problem.forward()
        logs = {}
        if self.inner_step:
            per_task = gradients_per_task(tape, losses, shared_vars, self.num_tasks)
            per_task = [[tf.zeros_like(v) if g is None else g for g, v in zip(gs, shared_vars)] for gs in per_task]
            global_per_task = problem.all_reduce_sum(stack_first_axis(per_task))
            inner_rate = self.inner_rate(problem)
            outer, inner_losses = None, []
            for i, task in enumerate(problem.task_names):
                moved = [w - tf.cast(inner_rate, w.dtype) * g[i] for w, g in zip(shared_values, global_per_task)]
                with tf.GradientTape() as inner_tape:
                    inner_tape.watch(moved)
                    prediction = problem.heads[task](problem.encode_with(moved), training=True)
                    inner_loss = problem.task_loss(task, prediction)
                grads = inner_tape.gradient(inner_loss, moved)
                grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, moved)]
                outer = grads if outer is None else [a + b for a, b in zip(outer, grads)]
                inner_losses.append(inner_loss)
            global_inner = problem.global_losses(inner_losses)
            logs = {f"{t}_inner_loss": global_inner[i] for i, t in enumerate(problem.task_names)}
        else:
            outer = tape.gradient(losses, shared_vars)  # a list target: the sum's gradient
            outer = [tf.zeros_like(v) if g is None else g for g, v in zip(outer, shared_vars)]

        head_vars = [v for t in problem.task_names for v in problem.head_variables[t]]
        if self.head_gradients_at == "original":
            flat_heads = tape.gradient(losses, head_vars)
        else:
            step = problem.all_reduce_sum(outer)
            lr = problem.learning_rate
            updated = [w - tf.cast(lr, w.dtype) * g for w, g in zip(shared_values, step)]
            with tf.GradientTape() as head_tape:
                _, updated_losses = problem.heads_and_losses(problem.encode_with(updated))
            flat_heads = head_tape.gradient(updated_losses, head_vars)
        del tape
        heads, k = {}, 0
        for t in problem.task_names:
            n = len(problem.head_variables[t])
            heads[t], k = flat_heads[k : k + n], k + n
        return Update(shared=outer, heads=heads, task_weights=tf.ones([self.num_tasks]), logs=logs)

    def get_config(self):
        return {**super().get_config(), "head_gradients_at": self.head_gradients_at}


@register("single_step")
class SingleStep(_SharedThenHeads):
    """Lee & Son's method: inner steps per task, outer step on the moved points, then the heads."""

    inner_step = True

    def __init__(self, inner_learning_rate=None, head_gradients_at="updated", **kwargs):
        super().__init__(head_gradients_at=head_gradients_at, **kwargs)
        if inner_learning_rate is not None:
            rate = float(inner_learning_rate)
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(
                    f"single_step inner_learning_rate must be a positive finite number (or None for the "
                    f"optimizer's learning rate); got {inner_learning_rate!r}"
                )
            inner_learning_rate = rate
        self.inner_learning_rate = inner_learning_rate

    def inner_rate(self, problem):
        if self.inner_learning_rate is None:
            return problem.learning_rate
        return tf.constant(self.inner_learning_rate, tf.float32)

    def get_config(self):
        return {**super().get_config(), "inner_learning_rate": self.inner_learning_rate}


@register("split_only")
class SplitOnly(_SharedThenHeads):
    """Lee & Son's ablation: shared layers on the plain sum of losses, heads updated after.

    It has no inner step, so it takes no `inner_learning_rate`.
    """
