"""GradVac: gradient vaccine.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
section 3 (eqs. 2-3) and Algorithm 1. A generalisation of PCGrad: instead of
projecting only when two gradients conflict (cosine < 0), GradVac keeps an
adaptive target cosine phi_hat_ij per ordered task pair, an exponential moving
average of the observed cosines (initialised at 0), and every step, for every
task i and every other task j in a random order::

    phi_ij = <g_i', g_j> / (||g_i'|| ||g_j||)          (g_i' starts at g_i)
    if phi_ij < phi_hat_ij:
        g_i' <- g_i' + ||g_i'|| (phi_hat_ij sqrt(1 - phi_ij^2)
                                  - phi_ij sqrt(1 - phi_hat_ij^2))
                       / (||g_j|| sqrt(1 - phi_hat_ij^2)) g_j
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij

which raises the cosine of g_i' and g_j to exactly phi_hat_ij (with
phi_hat_ij = 0 it is PCGrad's projection). The shared update is sum_i g_i'.
Every g_i' stays in the span of the task gradients, so it is kept as a row
of coefficients and every inner product comes from the Gramian
(`mtl_tf.balancers.gramian`, as `pcgrad`).

Choices and deviations:

* beta = 1e-2 by default (the paper's setting); LibMTL's default is 0.5.
* The target is updated at every visited pair, after the comparison (an EMA
  of the observed cosines, eq. 3). LibMTL updates it only when
  phi_ij < phi_hat_ij, which can only lower the target (from 0 downwards);
  TorchJD updates it before the comparison and compares the original g_i.
* No epsilons: a zero gradient (no labels, or a vanishing one) has cosine 0
  and moves nothing; where phi_hat_ij = +-1 the adjustment is taken as 0.
  Cosines are clipped to [-1, 1] against round-off. LibMTL adds 1e-8 to the
  denominators.
* Random order: every task i draws its own order of the other tasks each step
  (Algorithm 1, LibMTL), on the device: row i visits j != i in increasing
  order of the random words W[i, j] of a [T, T] draw keyed by (`seed`, step
  counter) (raw 32-bit words, `mtl_tf.backend.random`: Philox on TensorFlow;
  the same with and without XLA and on every replica). `seed=None` takes
  one from Python's `random`, kept in `get_config`. The order matters for
  T >= 3, so the method is permutation-equivariant in distribution only.
* Granularity: the vectors are the whole shared-parameter gradients, as
  Algorithm 1 states it and as LibMTL's default (`GradVac_group_type=0`).
  The paper's per-layer application (LibMTL's group types 1-2) is not
  offered here.
* Targets are balancer state [T, T] (`targets`), formed from the global-batch
  Gramian, so identical on every replica and kept in checkpoints.
* Labels (rule 3): pairs with an unlabelled task are skipped and their target
  does not move; such a task's coefficient is 0.
* `gradient_at="representation"` runs the same arithmetic on dL_t/dZ (not in
  the paper; one encoder backward pass).

Logs `{task}_weight` = c_t, the coefficient of g_t in the update (1 for every
task when no pair is below its target).
"""

import random

from keras import ops

from mtl_tf.backend import random as backend_random
from mtl_tf.backend.solver_ops import gather
from mtl_tf.balancers.gramian import GramianBalancer, safe_divide
from mtl_tf.balancers.registry import register

# Named explicitly: TensorFlow's default ("auto_select") picks another generator under XLA.
RNG_ALGORITHM = backend_random.PHILOX


@register("gradvac")
class GradVac(GramianBalancer):
    """GradVac: each task gradient is pulled towards an adaptive target cosine with every other one.

    Args:
      beta: the EMA rate of the target cosines, in (0, 1] (default 1e-2, the
        paper's).
      gradient_at: `"shared_parameters"` (default, the paper) or
        `"representation"` (on dL_t/dZ, one encoder backward pass).
      seed: int seed of the random task orders, or None (default) for one
        drawn from Python's `random` (seeded by `keras.utils.set_random_seed`).

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: beta outside (0, 1], an unknown `gradient_at`, or a seed that
        is not an integer.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Wang et al., ICLR 2021, section 3, Algorithm 1.
    """

    loss_range = "any"

    property_exceptions = {
        "permutation_equivariant": "every task visits the others in a random order, so the update is "
                                   "equivariant in distribution only",
    }

    def __init__(self, beta=1e-2, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"gradvac beta must be a number in (0, 1]; got {beta!r}")
        self.beta = float(beta)
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"gradvac seed must be an integer or None; got {seed!r}")
        self.seed = seed

    def build_for_tasks(self, task_names, losses=None):
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.step_counter = self.add_weight(name="step_counter", shape=(), dtype="int32", initializer="zeros", **state)
        self.targets = self.add_weight(
            name="targets", shape=(len(task_names), len(task_names)), initializer="zeros", **state
        )
        super().build_for_tasks(task_names, losses)

    def task_orders(self):
        """[T, T - 1] int32: row i lists the tasks j != i in this step's order for i; advances the counter."""
        num_tasks = self.num_tasks
        key = ops.stack([ops.convert_to_tensor(self.seed, "int32"), ops.copy(self.step_counter)])
        self.step_counter.assign_add(1)
        words = backend_random.uniform_bits([num_tasks, num_tasks], key)
        # Row i's own column sorts last (after every 32-bit word) and is dropped.
        order = backend_random.argsort_words(words, last=ops.eye(num_tasks, dtype="bool"))
        return order[:, : num_tasks - 1]

    def combination(self, gram, losses, mask):
        num_tasks = self.num_tasks
        orders = self.task_orders()
        # Flattened, so that entry (i, j_i) of every row is one gather and one scatter at i T + j_i.
        targets = ops.reshape(ops.cast(self.targets, "float32"), [-1])
        rows = ops.eye(num_tasks, dtype="float32")
        row_starts = ops.arange(num_tasks, dtype="int32") * num_tasks
        diagonal = ops.diagonal(gram)
        # Row m of gram^T gathered at j_m is column j_m of gram (one transpose for every k).
        columns = ops.transpose(gram)
        for k in range(num_tasks - 1):
            j = orders[:, k]  # row i's k-th other task
            pair = row_starts + j  # (i, j_i), flattened
            g_j_norm = ops.sqrt(ops.maximum(gather(diagonal, j), 0.0))
            dots = ops.sum(rows * gather(columns, j), axis=1)  # <g_i', g_j>
            own_norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(rows, gram) * rows, axis=1), 0.0))
            cosine = ops.clip(safe_divide(dots, own_norm * g_j_norm), -1.0, 1.0)
            target = gather(targets, pair)
            valid = ops.logical_and(mask, gather(mask, j))
            slack = ops.sqrt(ops.maximum(1.0 - ops.square(target), 0.0))
            numerator = own_norm * (target * ops.sqrt(ops.maximum(1.0 - ops.square(cosine), 0.0)) - cosine * slack)
            step = safe_divide(numerator, g_j_norm * slack)
            step = ops.where(ops.logical_and(valid, cosine < target), step, ops.zeros_like(step))
            rows = rows + step[:, None] * ops.one_hot(j, num_tasks, dtype="float32")
            moved = (1.0 - self.beta) * target + self.beta * cosine
            targets = ops.scatter_update(targets, ops.expand_dims(pair, 1), ops.where(valid, moved, target))
        self.targets.assign(ops.reshape(targets, [num_tasks, num_tasks]))
        labelled = ops.cast(mask, "float32")
        # c_t = sum_i rows[i, t] labelled_i
        coefficients = ops.matmul(labelled, rows)
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
