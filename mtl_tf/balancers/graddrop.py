"""GradDrop: gradient sign dropout.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
section 3, Algorithm 1. GradDrop acts at a layer's activations A (here the
shared representation Z, the encoder's output), element by element:

1. nabla_i = sign(A) * dL_i/dA, summed over the batch dimension (the paper's
   "batch-separated" case: one statistic per element of one example's
   activation, A's shape without the batch axis);
2. the positive sign purity P = 1/2 (1 + sum_i nabla_i / sum_i |nabla_i|);
3. U ~ Uniform(0, 1) of P's shape, and for every task the keep mask
   M_i = [f(P) > U] [nabla_i > 0] + [f(P) < U] [nabla_i < 0]: every element
   keeps the positive-signed or the negative-signed gradients, the positive
   ones with probability f(P). Algorithm 1 allows any monotone f from [0, 1]
   onto itself; here f is the identity (TorchJD's default; LibMTL has no f);
4. the gradient passed below A is sum_i (l_i + (1 - l_i) M_i) dL_i/dA, with
   M_i broadcast over the batch and l_i the leak of task i (l_i = 1: task i
   is never dropped).

The encoder is then differentiated once with that output gradient (one
backward pass, as MGDA-UB); the heads descend their own gradients.

Options (`gradient_at`):

* `"representation"` (default, the paper): A = Z as above.
* `"shared_parameters"`: Algorithm 1 applied to the per-task gradients of
  the shared parameters themselves, element by element (each parameter
  element one "element"; no sign(A) factor, as a parameter is not an
  activation; the batch sum is already in the parameter gradient). Not in
  the paper; T encoder backward passes. It is what a gradient aggregator
  such as TorchJD's `GradDrop` does with a Jacobian of the shared parameters.

Data parallelism: the statistics nabla_i are sums over the GLOBAL batch
(each replica sums its examples, then `all_reduce_sum`), so P and the mask
are those of one device holding the whole batch; U is drawn from a stateless
stream keyed by (seed, step counter, which leaf/variable), the same on every
replica. An element is a position of one example's activation (or one
parameter entry), so the same element gets the same mask on every replica
and for every example of the global batch. The mask multiplies each
replica's own share of the gradient; the optimizer's cross-replica sum then
gives the global-batch update. Under a loss-scaling optimizer the gradients
are those of the scaled losses: P, the signs and so the mask do not depend on
that positive factor (nor on the replicas' 1/num_replicas loss scale).

Choices and deviations:

* U comes from raw random words (`mtl_tf.backend.random.unit_uniform`: on
  TensorFlow Philox words of `tf.random.stateless_uniform` with
  `dtype=uint32`), turned into floats ((top 24 bits + 1/2) / 2^24), so
  jit-compiled and eager steps draw the same numbers (TensorFlow's float
  samplers differ under XLA); the key of leaf/variable k is
  (crc32(f"{seed}:{k}") & 0x7FFFFFFF, step). `seed=None` takes one from
  Python's `random` (seeded by `keras.utils.set_random_seed`), kept in
  `get_config`; the step counter is balancer state (checkpoints resume the
  sequence).
* Where sum_i |nabla_i| = 0 (no task has a signed statistic there), P = 1/2;
  every M_i is 0 there anyway. LibMTL adds 1e-7 to that denominator instead.
* LibMTL (`GradDrop`, representation gradients only) has one leak for all
  tasks; here `leak` is one number or one per task.
* An encoder with per-task representations ({task: z_t}: cross-stitch, MMoE,
  CGC, PLE) gives every task its own activations: no element is shared, so
  there is no sign to pick. `gradient_at="representation"` refuses it
  (ValueError); use `gradient_at="shared_parameters"`. (LibMTL stacks such
  representations and mixes signs across different tasks' activations.)
* Unlabelled tasks (rule 3): their gradients are 0, so they take no part in
  P and pass nothing; their logged weight is 0.

Permuting the tasks permutes nothing random (U is drawn per element, not per
task), so the method is exactly permutation-equivariant under a fixed seed.

Logs `{task}_weight` = the fraction of task i's non-zero gradient elements
(statistics nabla_i != 0) that pass, l_i + (1 - l_i) M_i averaged over them
(1 when no element conflicts; 0 for an unlabelled task). Not on the simplex.
"""

import numbers
import random
import zlib

import keras
import numpy as np
from keras import ops

from mtl_tf.backend import random as backend_random
from mtl_tf.balancers.base import (
    Balancer,
    Update,
    as_task_vector,
    is_per_task,
    shared_task_gradients,
    stack_first_axis,
    validate_choice,
)
from mtl_tf.balancers.registry import register

GRADIENT_AT = ("representation", "shared_parameters")
# Named explicitly: TensorFlow's default ("auto_select") picks another generator under XLA.
RNG_ALGORITHM = backend_random.PHILOX


def unit_uniform(shape, seed):
    """U(0, 1) float32 draws of `shape` (never 0 or 1) from a stateless stream keyed by `seed` ([2] int32).

    Built from raw 32-bit words (the same with and without XLA; Philox on
    TensorFlow): (k + 1/2) / 2^24 with k the top 24 bits
    (`mtl_tf.backend.random.unit_uniform`).
    """
    return backend_random.unit_uniform(shape, seed)


def stream_key(seed, index):
    """The int32 key of the stream of leaf/variable `index` under `seed`."""
    return zlib.crc32(f"{seed}:{index}".encode("utf-8")) & 0x7FFFFFFF


@register("graddrop")
class GradDrop(Balancer):
    """GradDrop: every element of the shared representation keeps one sign of the task gradients.

    Args:
      gradient_at: `"representation"` (default, the paper: Algorithm 1 at the
        encoder's output, one encoder backward pass) or `"shared_parameters"`
        (Algorithm 1 on the per-task gradients of the encoder's variables,
        element by element; T encoder backward passes).
      leak: l_i in [0, 1]: one number for every task, or a list (head order) /
        dict (by task); default 0 (the paper's plain GradDrop).
      seed: int seed of the uniform draws, or None (default) for one drawn
        from Python's `random` (seeded by `keras.utils.set_random_seed`).

    Logs `{task}_weight` = the fraction of the task's non-zero gradient
    elements that pass (see the module docstring).

    Raises:
      ValueError: an unknown `gradient_at`, a leak outside [0, 1] or of the
        wrong length / keys, a seed that is not an integer; at the first step,
        `gradient_at="representation"` with an encoder that returns per-task
        representations.

    Loss range: any real loss. The masks come from the signs of the task gradients; loss values are
    never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Chen et al., NeurIPS 2020, section 3, Algorithm 1.
    """

    loss_range = "any"

    def __init__(self, gradient_at="representation", leak=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.gradient_at = validate_choice("graddrop gradient_at", gradient_at, GRADIENT_AT)
        if isinstance(leak, numbers.Number):
            leak = _leak_value(leak)
        elif isinstance(leak, dict):
            leak = {t: _leak_value(v) for t, v in leak.items()}
        else:
            leak = [_leak_value(v) for v in leak]
        self.leak = leak
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"graddrop seed must be an integer or None; got {seed!r}")
        self.seed = seed

    def build_for_tasks(self, task_names, losses=None):
        if isinstance(self.leak, float):
            self._leaks = [self.leak] * len(task_names)
        else:
            self._leaks = as_task_vector("graddrop leak", self.leak, task_names)
        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int32", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        super().build_for_tasks(task_names, losses)

    def masks(self, statistics, step):
        """Per leaf k: [T, *shape_k] float32 multipliers l_i + (1 - l_i) M_i, from global statistics nabla.

        statistics: list over leaves of [T, *shape_k] float32 global sums nabla_i.
        Returns (multipliers, kept, nonzero): the multipliers per leaf, and [T]
        sums of the multipliers and counts over the elements where nabla_i != 0.
        """
        leaks = ops.convert_to_tensor(np.asarray(self._leaks, np.float32))
        multipliers = []
        kept = ops.zeros([self.num_tasks], "float32")
        nonzero = ops.zeros([self.num_tasks], "float32")
        for k, stat in enumerate(statistics):
            total = ops.sum(stat, axis=0)
            magnitude = ops.sum(ops.abs(stat), axis=0)
            signed = magnitude > 0.0
            purity = 0.5 * (1.0 + ops.where(signed, total / ops.where(signed, magnitude, 1.0), 0.0))
            key = ops.stack([ops.convert_to_tensor(stream_key(self.seed, k), "int32"), step])
            uniform = unit_uniform(ops.shape(purity), key)
            keep_positive = ops.cast(purity > uniform, "float32")
            keep_negative = ops.cast(purity < uniform, "float32")
            mask = keep_positive[None] * ops.cast(stat > 0.0, "float32") + keep_negative[None] * ops.cast(
                stat < 0.0, "float32")
            leak = ops.reshape(leaks, [-1] + [1] * (len(stat.shape) - 1))
            multiplier = leak + (1.0 - leak) * mask
            multipliers.append(multiplier)
            present = ops.reshape(ops.cast(stat != 0.0, "float32"), [self.num_tasks, -1])
            kept += ops.sum(ops.reshape(multiplier, [self.num_tasks, -1]) * present, axis=1)
            nonzero += ops.sum(present, axis=1)
        return multipliers, kept, nonzero

    def next_step(self):
        step = ops.copy(self.step_counter)  # read before the increment
        self.step_counter.assign_add(1)
        return step

    def compute_update(self, problem):
        if self.gradient_at == "representation":
            shared, heads, kept, nonzero = self._at_representation(problem)
        else:
            shared, heads, kept, nonzero = self._at_shared_parameters(problem)
        weights = ops.where(nonzero > 0.0, kept / ops.maximum(nonzero, 1.0), ops.zeros_like(kept))
        weights = ops.where(problem.task_mask, weights, ops.zeros_like(weights))
        return Update(shared=shared, heads=heads, task_weights=weights)

    def _at_representation(self, problem):
        z = problem.encode()
        if is_per_task(z, problem.task_names):
            raise ValueError(
                f"balancer 'graddrop' with gradient_at='representation' picks one sign per element of the shared "
                f"representation, but the encoder {problem.encoder.name!r} ({type(problem.encoder).__name__}) "
                f"gives every task its own representation z_t (it returns a dict keyed by the task names "
                f"{list(problem.task_names)}): no element is shared, so there is no sign to pick. Use "
                "gradient_at='shared_parameters' (GradDrop on the gradients of the encoder's variables, which "
                "the tasks do share)."
            )
        _, per_task, heads = problem.representation_gradients(z)
        activations = keras.tree.flatten(z)
        leaves = [keras.tree.flatten(g) for g in per_task]  # [T][K], each [B, ...]
        statistics = []
        for k, a in enumerate(activations):
            sign = ops.sign(ops.cast(a, "float32"))
            statistics.append(ops.stack([ops.sum(sign * ops.cast(g[k], "float32"), axis=0) for g in leaves]))
        statistics = problem.all_reduce_sum(statistics)
        multipliers, kept, nonzero = self.masks(statistics, self.next_step())
        combined = []
        for k in range(len(activations)):
            total = None
            for t in range(self.num_tasks):
                g = leaves[t][k]
                term = ops.cast(multipliers[k][t], g.dtype)[None] * g
                total = term if total is None else total + term
            combined.append(total)
        combined = keras.tree.pack_sequence_as(z, combined)
        shared = problem.encoder_backward(combined)
        return shared, heads, kept, nonzero

    def _at_shared_parameters(self, problem):
        _, per_task, heads = shared_task_gradients(problem)
        stacked = stack_first_axis(per_task)  # [V] of [T, *variable shape]
        statistics = problem.all_reduce_sum([ops.cast(s, "float32") for s in stacked])
        multipliers, kept, nonzero = self.masks(statistics, self.next_step())
        shared = [
            ops.sum(ops.cast(m, s.dtype) * s, axis=0) for m, s in zip(multipliers, stacked)
        ]
        return shared, heads, kept, nonzero

    def get_config(self):
        return {**super().get_config(), "gradient_at": self.gradient_at, "leak": self.leak, "seed": self.seed}


def _leak_value(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"graddrop leak values must be numbers in [0, 1]; got {value!r}")
    return float(value)
