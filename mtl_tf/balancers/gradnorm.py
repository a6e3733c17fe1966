"""GradNorm: gradient normalisation for adaptive loss balancing.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.

The network descends sum_t w_t L_t. The weights w (state, initialised at 1,
kept summing to T) follow, once per step, a gradient step on

    L_grad = sum_t | G_t - mean(G) * r_t^asymmetry |,
    G_t = || grad_W (w_t L_t) ||,   r_t = (L_t / L_t(0)) / mean_j (L_j / L_j(0)),

where W is the last shared layer and the targets mean(G) r_t^asymmetry are held
constant (paper section 3.2). L_t(0) are the losses of the first step.

Choices: W is the encoder's last trainable variable of rank >= 2 (the kernel of
its last convolution or dense layer); `gradient_at="representation"` measures
G_t at the shared representation instead (cheaper, a common variant). The
weights take a plain gradient step with `weight_learning_rate` (the paper tunes
this rate per problem; 0.025 is a usual value), are floored at 1e-3 to stay
positive and are then rescaled to sum to T. Everything uses global-batch
quantities, so replicas keep identical weights.
"""

import math

import tensorflow as tf

from mtl_tf.balancers.base import Balancer, Update, all_variables, split_gradients, validate_choice
from mtl_tf.balancers.registry import register

GRADIENT_AT = ("last_shared_layer", "representation")


@register("gradnorm")
class GradNorm(Balancer):
    def __init__(self, asymmetry=1.5, weight_learning_rate=0.025, gradient_at="last_shared_layer", **kwargs):
        super().__init__(**kwargs)
        self.asymmetry = float(asymmetry)
        self.weight_learning_rate = float(weight_learning_rate)
        if not (math.isfinite(self.asymmetry) and self.asymmetry >= 0):
            raise ValueError(f"gradnorm asymmetry must be a finite number >= 0 (the paper uses 0 to 3); got {asymmetry!r}")
        if not (math.isfinite(self.weight_learning_rate) and self.weight_learning_rate > 0):
            raise ValueError(f"gradnorm weight_learning_rate must be a positive finite number; got {weight_learning_rate!r}")
        self.gradient_at = validate_choice("gradient_at", gradient_at, GRADIENT_AT)

    def build_for_tasks(self, task_names):
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.loss_weights = self.add_weight(name="loss_weights", shape=(len(task_names),), initializer="ones", **state)
        self.initial_losses = self.add_weight(name="initial_losses", shape=(len(task_names),), initializer="zeros", **state)
        self.has_initial_losses = self.add_weight(name="has_initial_losses", shape=(), initializer="zeros", **state)
        super().build_for_tasks(task_names)

    def _last_shared_layer(self, problem):
        candidates = [v for v in problem.shared_variables if len(v.shape) >= 2]
        if not candidates:
            raise ValueError("gradnorm needs a shared variable of rank >= 2 (a kernel) in the encoder; "
                             "use gradient_at='representation' for this encoder")
        return candidates[-1]

    def compute_update(self, problem):
        weights = tf.stop_gradient(tf.cast(self.loss_weights, tf.float32))
        variables = all_variables(problem)
        with tf.GradientTape(persistent=True) as tape:
            z, _, losses = problem.forward()
            objective = tf.reduce_sum(weights * tf.stack(losses))
        shared, heads, _ = split_gradients(tape.gradient(objective, variables), problem)

        if self.gradient_at == "representation":
            sq_norms = tf.stack([
                tf.add_n([tf.reduce_sum(tf.square(g)) for g in tf.nest.flatten(tape.gradient(losses[i], z)) if g is not None])
                for i in range(self.num_tasks)
            ])  # None: a part of Z no loss depends on (e.g. SegNet's pooling switches)
            sq_norms = problem.all_reduce_sum(sq_norms)
        else:
            kernel = self._last_shared_layer(problem)
            per_task = tf.stack([tape.gradient(losses[i], kernel) for i in range(self.num_tasks)])
            per_task = problem.all_reduce_sum(per_task)
            sq_norms = tf.reduce_sum(tf.reshape(tf.square(per_task), [self.num_tasks, -1]), axis=1)
        del tape
        unweighted_norms = tf.sqrt(sq_norms)

        global_losses = problem.global_losses(losses)
        first = tf.equal(self.has_initial_losses, 0.0)
        initial = tf.where(first, global_losses, tf.cast(self.initial_losses, tf.float32))
        ratios = global_losses / tf.maximum(initial, 1e-12)
        relative_rates = ratios / tf.maximum(tf.reduce_mean(ratios), 1e-12)
        norms = weights * unweighted_norms
        targets = tf.reduce_mean(norms) * tf.pow(relative_rates, self.asymmetry)
        # d/dw_t |w_t n_t - target_t| = sign(w_t n_t - target_t) n_t, targets constant.
        weight_gradient = tf.sign(norms - targets) * unweighted_norms
        new_weights = tf.maximum(weights - self.weight_learning_rate * weight_gradient, 1e-3)
        new_weights = new_weights * self.num_tasks / tf.reduce_sum(new_weights)

        self.loss_weights.assign(new_weights)
        self.initial_losses.assign(initial)
        self.has_initial_losses.assign(1.0)
        return Update(
            shared=shared,
            heads=heads,
            task_weights=weights,
            logs={"gradnorm_loss": tf.reduce_sum(tf.abs(norms - targets))},
        )

    def get_config(self):
        return {
            **super().get_config(),
            "asymmetry": self.asymmetry,
            "weight_learning_rate": self.weight_learning_rate,
            "gradient_at": self.gradient_at,
        }
