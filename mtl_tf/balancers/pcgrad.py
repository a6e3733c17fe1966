"""PCGrad: projecting conflicting gradients.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, section 3, Algorithm 1.

For every task i, starting from g_i^PC = g_i, and for every other task j in a
random order: if <g_i^PC, g_j> < 0, remove the conflicting component,
g_i^PC <- g_i^PC - <g_i^PC, g_j> / ||g_j||^2 g_j. The shared update is
sum_i g_i^PC (a sum, not a mean: Algorithm 1 line 8; LibMTL sums too).

Every g_i^PC stays in the span of the task gradients, so it is kept as a row
of coefficients C_i (g_i^PC = sum_k C_ik g_k) and the inner products come from
the Gramian K: <g_i^PC, g_j> = C_i K_j. That is the algorithm's arithmetic
exactly, without materialising the projected vectors (`mtl_tf.balancers.gramian`);
the rows of C are independent, so the T projections of one position of the
order run at once.

Choices and deviations:

* One random order per step, shared by every i (the authors' TensorFlow code
  shuffles the task list once per step; Algorithm 1 and LibMTL draw it per i).
  The order is drawn on the device from a stateless generator keyed by
  (`seed`, step counter); the counter is balancer state, so a run resumed from
  a checkpoint continues the same sequence, and every replica draws the same
  order. `seed=None` takes one from Python's `random`, which
  `keras.utils.set_random_seed` seeds, so seeded runs repeat; the drawn value
  is kept in `get_config`.
* j = i is skipped (Algorithm 1); the authors' TensorFlow code also projects
  g_i^PC on g_i itself, which only matters once g_i^PC has turned against g_i.
* A task with a zero gradient (no labels in the batch) conflicts with nothing
  and its own row contributes nothing; its coefficient is 0.
* `gradient_at="representation"` applies the surgery to dL_t/dZ (not in the
  paper; one encoder backward pass).

The update depends on the random order for T >= 3, so permuting the tasks
changes it (the method is permutation-equivariant in distribution only).

Logs `{task}_weight` = c_t = sum_i C_it, the coefficient of g_t in the update
(1 for every task when no pair conflicts).
"""

import random

from keras import ops

from mtl_tf.backend import random as backend_random
from mtl_tf.backend.solver_ops import gather
from mtl_tf.balancers.gramian import GramianBalancer, safe_divide
from mtl_tf.balancers.registry import register


@register("pcgrad")
class PCGrad(GramianBalancer):
    """PCGrad: each task gradient loses its components that conflict with the others.

    Args:
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).
      seed: int seed of the random task order, or None (default) for one drawn
        from Python's `random` (seeded by `keras.utils.set_random_seed`).

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: an unknown `gradient_at`, or a seed that is not an integer.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Yu et al., NeurIPS 2020, Algorithm 1.
    """

    loss_range = "any"

    property_exceptions = {
        "permutation_equivariant": "the task order is random, so the update is equivariant in distribution only",
    }

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"pcgrad seed must be an integer or None; got {seed!r}")
        self.seed = seed

    def build_for_tasks(self, task_names, losses=None):
        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int32", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        super().build_for_tasks(task_names, losses)

    def task_order(self):
        """[T] int32: this step's random order of the tasks; advances the step counter."""
        key = ops.stack([ops.convert_to_tensor(self.seed, "int32"), ops.copy(self.step_counter)])
        self.step_counter.assign_add(1)
        # Raw 32-bit draws: TensorFlow's float samplers give other numbers under
        # XLA than without it, the bits do not (see `mtl_tf.backend.random`).
        bits = backend_random.uniform_bits([self.num_tasks], key)
        return backend_random.argsort_words(bits)

    def combination(self, gram, losses, mask):
        num_tasks = self.num_tasks
        order = self.task_order()
        rows = ops.eye(num_tasks, dtype="float32")
        squared_norms = ops.diagonal(gram)
        task_index = ops.arange(num_tasks, dtype="int32")
        # Row j of gram^T is column j of gram (one transpose for every k).
        columns = ops.transpose(gram)
        for k in range(num_tasks):
            j = order[k]
            # A gather, not gram[:, j]: XLA's strided slice needs a compile-time index, which would make
            # the random order a compile-time constant and recompile the step every time it changes.
            dots = ops.matmul(rows, gather(columns, j))
            projection = safe_divide(ops.minimum(dots, 0.0), gather(squared_norms, j))
            # Row j is not projected onto g_j itself.
            is_j = task_index == j
            projection = ops.where(is_j, ops.zeros_like(projection), projection)
            rows = rows - projection[:, None] * ops.cast(is_j, "float32")[None, :]
        labelled = ops.cast(mask, "float32")
        # c_t = sum_i rows[i, t] labelled_i
        coefficients = ops.matmul(labelled, rows)
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
