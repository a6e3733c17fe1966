"""Gradient methods whose shared update is a combination of the task gradients fixed by their Gramian.

Most gradient-manipulation methods (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL,
UPGrad, Aligned-MTL, ...) return a shared direction d that lies in the span of
the task gradients g_1..g_T, d = sum_t c_t g_t, with coefficients c that depend
on the gradients only through their inner products, the Gramian
K = G G^T (K_ij = <g_i, g_j>), and on the task losses. The projections of
PCGrad are a sequence of such inner products; CAGrad's inner problem and
Nash-MTL's bargaining equation are stated on K; UPGrad's dual-cone projection
is a quadratic program on K. Writing such a method as `combination(K, losses)
-> c` has three consequences this module implements once:

* The long gradient vectors are never concatenated: K is accumulated variable
  by variable (`gram_matrix`) and d is `sum_t c_t g_t` variable by variable,
  so memory stays at T gradients of the shared parameters.
* The same method runs on the gradients with respect to the shared
  representation Z (`gradient_at="representation"`, the MGDA-UB idea: one
  backward pass through the heads for every dL_t/dZ, the Gramian of those,
  then ONE encoder backward pass with sum_t c_t dL_t/dZ). The default,
  `"shared_parameters"`, takes T encoder backward passes, as the papers do.
* Replicas: K is formed from the global-batch gradients (all-reduced once), so
  every replica computes the same c; each replica then combines its own share
  of the gradients, and the optimizer's cross-replica sum gives sum_t c_t g_t
  of the global batch.

Rules of `mtl_tf.balancers.base`: the Gramian is formed in float32 from the
gradients of the scaled losses and divided by S^2 (rule 1); the encoder and the
heads run once, in the real pass (rule 2); c_t of a task without labels in the
global batch is 0, and each method decides what else "without the task" means
for it, using `mask` (rule 3).

Heads: every head descends its own task's gradient, unweighted (the papers
manipulate only the shared parameters' gradients; LibMTL and the authors' code
do the same).
"""

import keras
from keras import ops

from mtl_tf.backend.precision import float64_available
from mtl_tf.balancers.base import (
    Balancer,
    Update,
    global_parameter_gram,
    gram_matrix,
    shared_task_gradients,
    stack_first_axis,
    validate_choice,
    weighted_sum,
)

GRADIENT_AT = ("shared_parameters", "representation")


class GramianBalancer(Balancer):
    """Base class: the shared update is sum_t c_t g_t with c = `combination(K, losses, mask)`.

    Subclasses implement `combination`. Args of every subclass:
      gradient_at: `"shared_parameters"` (default: g_t = grad of L_t with
        respect to all encoder variables, T encoder backward passes) or
        `"representation"` (g_t = dL_t/dZ of the whole batch, one encoder
        backward pass; cheaper, the MGDA-UB approximation).
    """

    def __init__(self, gradient_at="shared_parameters", **kwargs):
        super().__init__(**kwargs)
        self.gradient_at = validate_choice("gradient_at", gradient_at, GRADIENT_AT)

    def combination(self, gram, losses, mask):
        """Coefficients of the shared update.

        Args:
          gram: [T, T] float32 Gramian of the true (unscaled) global-batch task
            gradients; rows and columns of unlabelled tasks are zero.
          losses: [T] float32 unscaled global-batch task losses.
          mask: [T] bool, the tasks with labels in the global batch.

        Returns:
          (c, weights, logs): c [T] float32, the combination coefficients;
          weights [T] float32, what to log as `{task}_weight` (often c itself);
          logs, a dict of extra scalars (may be empty).
        """
        raise NotImplementedError

    def compute_update(self, problem):
        if self.gradient_at == "representation":
            z = problem.encode()
            losses, per_task, heads = problem.representation_gradients(z)
            gram = problem.all_reduce_sum(gram_matrix(per_task))
        else:
            losses, per_task, heads = shared_task_gradients(problem)
            gram = global_parameter_gram(problem, stack_first_axis(per_task))
        gram = gram / ops.square(problem.loss_scale)
        mask = problem.task_mask
        coefficients, weights, logs = self.combination(gram, problem.global_losses(losses), mask)
        zero = ops.zeros_like(coefficients)
        coefficients = ops.stop_gradient(ops.where(mask, coefficients, zero))
        weights = ops.where(mask, weights, zero)
        if self.gradient_at == "representation":
            flat = [keras.tree.flatten(g) for g in per_task]
            combined = keras.tree.pack_sequence_as(z, weighted_sum(flat, coefficients))
            shared = problem.encoder_backward(combined)
        else:
            shared = weighted_sum(per_task, coefficients)
        return Update(shared=shared, heads=heads, task_weights=weights, logs=logs)

    def get_config(self):
        return {**super().get_config(), "gradient_at": self.gradient_at}


def safe_divide(numerator, denominator):
    """numerator / denominator where denominator > 0, else 0 (a zero gradient projects onto nothing)."""
    positive = denominator > 0.0
    return ops.where(positive, numerator / ops.where(positive, denominator, ops.ones_like(denominator)),
                     ops.zeros_like(numerator))


def working_dtype():
    """The dtype the methods' small T x T computations run in: float64 where the backend computes it.

    TensorFlow (and JAX with `jax_enable_x64`): "float64", as the methods always did. Elsewhere
    (JAX without `jax_enable_x64`) "float32", as the solvers' default (`mtl_tf.backend.precision`).
    """
    return "float64" if float64_available() else "float32"
