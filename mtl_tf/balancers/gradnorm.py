"""GradNorm: gradient normalisation for adaptive loss balancing.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.

The network descends sum_t w_t L_t. The weights w (state, initialised at 1,
kept summing to T) follow, once per step, a gradient step on

    L_grad = sum_t | G_t - mean(G) * r_t^asymmetry |,
    G_t = || grad_W (w_t L_t) ||,   r_t = (L_t / L_t(0)) / mean_j (L_j / L_j(0)),

where W is the last shared layer and the targets mean(G) r_t^asymmetry are held
constant (paper section 3.2). L_t(0) is task t's loss in the first batch
where task t has labels.

Choices: W is the encoder's last trainable variable of rank >= 2 (the kernel of
its last convolution or dense layer); `gradient_at="representation"` measures
G_t at the shared representation instead (cheaper, a common variant). The
weights take a plain gradient step with `weight_learning_rate`, are floored at
1e-3 to stay positive and are then rescaled to sum to T. Both constants are
ours: the paper tunes the weights' learning rate per problem and states
neither a value nor a floor (0.025 is a common choice in public code).
Everything uses global-batch quantities, so replicas keep identical weights.
A task without labels in the batch has weight 0 in that step's objective, and
the means of the weight update run over the labelled tasks only; its own
weight is left as it was.
"""

import keras
from keras import ops

from mtl_tf.backend.ops import add_n
from mtl_tf.balancers.base import Balancer, Update, validate_choice, weighted_sum
from mtl_tf.balancers.options import check_number
from mtl_tf.balancers.registry import register

GRADIENT_AT = ("last_shared_layer", "representation")


@register("gradnorm")
class GradNorm(Balancer):
    """GradNorm: loss weights w_t steered so the weighted gradient norms train at equal rates.

    Args:
      asymmetry: the paper's alpha (>= 0; default 1.5), how strongly tasks
        that train slower get larger gradients.
      weight_learning_rate: step size of the weights' own gradient step
        (> 0; default 0.025, ours: the paper gives none).
      gradient_at: `"last_shared_layer"` (default, the paper: the kernel of
        the encoder's last layer; with per-task representations, as MMoE's,
        the last kernel every task's loss depends on, e.g. an expert's) or
        `"representation"` (G_t at Z, cheaper).

    Logs `{task}_weight` = w_t of the step (0 for a task without labels) and
    `gradnorm_loss` = L_grad.

    Raises:
      ValueError: an option out of its range, or `"last_shared_layer"` with
        an encoder that has no kernel shared by every task (when the step is
        traced).

    Loss range: non-negative. The training rates r_t = (L_t / L_t(0)) / mean_j (L_j / L_j(0)) are
    raised to the power alpha (1.5 by default): a negative ratio gives NaN, and for a loss that
    starts negative r_t falls when the loss rises. A loss of exactly 0: L_t(0) = 0 is floored at
    1e-12, so that task's ratio is huge and its relative rate near T, the largest target norm; L_t =
    0 later gives r_t = 0 and a target of 0. The weights take sign steps, so they stay finite.

    Reference: Chen et al., ICML 2018, section 3 (eqs. 1-2, Algorithm 1).
    """

    loss_range = "non_negative"

    def __init__(self, asymmetry=1.5, weight_learning_rate=0.025, gradient_at="last_shared_layer", **kwargs):
        super().__init__(**kwargs)
        # The paper's asymmetry alpha is 0 to 3; any finite alpha >= 0 is well defined.
        self.asymmetry = check_number("gradnorm", "asymmetry", asymmetry, low=0)
        self.weight_learning_rate = check_number("gradnorm", "weight_learning_rate", weight_learning_rate, low=0,
                                                 low_open=True)
        self.gradient_at = validate_choice("gradient_at", gradient_at, GRADIENT_AT)

    def build_for_tasks(self, task_names, losses=None):
        state = {"trainable": False, "aggregation": "only_first_replica"}
        num_tasks = len(task_names)
        self.loss_weights = self.add_weight(name="loss_weights", shape=(num_tasks,), initializer="ones", **state)
        self.initial_losses = self.add_weight(name="initial_losses", shape=(num_tasks,), initializer="zeros", **state)
        # Per task: L_t(0) is the loss of the first batch in which task t has labels.
        self.has_initial_losses = self.add_weight(
            name="has_initial_losses", shape=(num_tasks,), initializer="zeros", **state
        )
        super().build_for_tasks(task_names, losses)

    def _last_shared_layer(self, problem, representation_grads):
        """The last kernel of the encoder that every task's loss depends on, and its per-task gradients.

        With one shared representation that is the encoder's last kernel. An encoder that gives each
        task its own representation (MMoE, CGC, PLE, cross-stitch) ends in per-task parameters (gates,
        columns), whose gradient is None for the other tasks; the last kernel all tasks share (an
        expert's, a column's before the last stitch) is then taken. Which kernel is chosen depends on
        the graph, not on tensor values, so it is decided once when the step is traced. Each task's
        kernel gradient is one encoder backward pass of its dL_t/dZ, to that kernel only.
        """
        candidates = [v for v in problem.shared_variables if len(v.shape) >= 2]
        for kernel in reversed(candidates):
            gradients = [problem.encoder_backward(dz, variables=[kernel])[0] for dz in representation_grads]
            if all(g is not None for g in gradients):
                return kernel, gradients
        raise ValueError(
            "gradnorm(gradient_at='last_shared_layer') needs a kernel (a shared variable of rank >= 2) that "
            f"every task's loss depends on; the encoder has {len(candidates)} kernels and none is shared by all "
            "tasks. Use gradient_at='representation' for this encoder."
        )

    def compute_update(self, problem):
        num_tasks = self.num_tasks
        weights = ops.stop_gradient(ops.cast(self.loss_weights, "float32"))
        labelled = ops.cast(problem.task_mask, "float32")
        count = ops.maximum(ops.sum(labelled), 1.0)
        coefficients = weights * labelled
        # The update is the gradient of sum_t w_t S L_t: the heads' from one backward pass through
        # them (dS L_t/dtheta^t times w_t), the encoder's from one backward pass of sum_t w_t dS L_t/dZ.
        # G_t at the last shared layer takes T more encoder passes, to that kernel only.
        z = problem.encode(passes=1 if self.gradient_at == "representation" else 1 + num_tasks)
        losses, representation_grads, own_heads = problem.representation_gradients(z)
        flat = [keras.tree.flatten(dz) for dz in representation_grads]
        combined = keras.tree.pack_sequence_as(representation_grads[0], weighted_sum(flat, coefficients))
        shared = problem.encoder_backward(combined)
        heads = {
            t: [None if g is None else ops.cast(coefficients[i], g.dtype) * g for g in own_heads[t]]
            for i, t in enumerate(problem.task_names)
        }

        # G_t from true (unscaled) gradients of the scaled losses.
        if self.gradient_at == "representation":
            sq_norms = ops.stack([
                add_n([ops.sum(ops.square(ops.cast(g, "float32"))) for g in problem.unscale(pieces)])
                for pieces in flat
            ])
            sq_norms = problem.all_reduce_sum(sq_norms)
        else:
            _, gradients = self._last_shared_layer(problem, representation_grads)
            per_task = ops.stack([ops.cast(problem.unscale(g), "float32") for g in gradients])
            per_task = problem.all_reduce_sum(per_task)
            sq_norms = ops.sum(ops.reshape(ops.square(per_task), [num_tasks, -1]), axis=1)
        problem.release_encoder()
        unweighted_norms = ops.sqrt(sq_norms)

        global_losses = problem.global_losses(losses)
        known = self.has_initial_losses > 0.0
        initial = ops.where(known, ops.cast(self.initial_losses, "float32"), global_losses)
        ratios = global_losses / ops.maximum(initial, 1e-12)
        # Means over the labelled tasks only: the step of a model without the others.
        relative_rates = ratios / ops.maximum(ops.sum(labelled * ratios) / count, 1e-12)
        norms = weights * unweighted_norms
        targets = ops.sum(labelled * norms) / count * ops.power(relative_rates, self.asymmetry)
        # d/dw_t |w_t n_t - target_t| = sign(w_t n_t - target_t) n_t, targets constant.
        weight_gradient = labelled * ops.sign(norms - targets) * unweighted_norms
        new_weights = ops.maximum(weights - self.weight_learning_rate * weight_gradient, 1e-3)
        # Renormalised so the labelled tasks keep their total (T when all are
        # labelled); an unlabelled task's weight stays as it was.
        total = ops.sum(labelled * weights) / ops.maximum(ops.sum(labelled * new_weights), 1e-12)
        new_weights = ops.where(problem.task_mask, new_weights * total, weights)

        self.loss_weights.assign(new_weights)
        self.initial_losses.assign(ops.where(known, initial, labelled * global_losses))
        self.has_initial_losses.assign(ops.maximum(self.has_initial_losses, labelled))
        return Update(
            shared=shared,
            heads=heads,
            task_weights=weights * labelled,
            logs={"gradnorm_loss": ops.sum(labelled * ops.abs(norms - targets))},
        )

    def get_config(self):
        return {
            **super().get_config(),
            "asymmetry": self.asymmetry,
            "weight_learning_rate": self.weight_learning_rate,
            "gradient_at": self.gradient_at,
        }
