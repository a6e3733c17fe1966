"""RLW: random loss weighting.

Lin, Ye, Xu, Shi, Zhang & Kwok (Lin et al.), "Reasonable Effectiveness of
Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022, section 3
(random loss weighting): every step draws unnormalised weights
lambda~ ~ p(lambda~), normalises them, lambda = softmax(lambda~), and descends
sum_t lambda_t L_t. The paper's default p is the standard normal N(0, I).

Distributions (`distribution`):

* `"normal"` (default): lambda~_t ~ N(0, 1), lambda = softmax(lambda~).
* `"uniform"`: lambda~_t ~ U(0, 1), lambda = softmax(lambda~).
* `"dirichlet"`: lambda~ ~ Dir(1, ..., 1) (normalised exponential draws), then
  softmax, as LibMTL does.
* `"bernoulli"`: lambda_t ~ Bernoulli(1/2), not normalised, redrawn while every
  labelled task drew 0 (LibMTL's rule; on the device a `keras.ops.while_loop`).

Choices and deviations:

* The draws come from stateless generators on the device, keyed by (`seed`, a
  step counter kept as balancer state, a per-task key from the task's name): a
  run resumed from a checkpoint continues the same sequence, every replica
  draws the same weights, with or without XLA (raw random bits,
  `mtl_tf.backend.random`, Philox on TensorFlow, turned into floats:
  TensorFlow's own float samplers differ under XLA), and a
  task's draw does not depend on where its head
  sits or on which other tasks exist. So permuting the heads permutes the
  weights exactly, and a task without labels in the batch is simply left out
  of the softmax: the others get the weights a model without it would draw
  (rule 3). `seed=None` takes one from Python's `random`, which
  `keras.utils.set_random_seed` seeds, so seeded runs repeat; the drawn value
  is kept in `get_config`.
* Normal draws are Box-Muller transforms of two uniform draws, Dirichlet(1)
  draws normalised -log(U) (exponential) draws: the same distributions,
  from the bits above.

Logs `{task}_weight` = lambda_t of the step (on the simplex except for
`"bernoulli"`).
"""

import math
import random
import zlib

from keras import ops

from mtl_tf.backend import random as backend_random
from mtl_tf.balancers.base import LossWeightingBalancer, validate_choice
from mtl_tf.balancers.registry import register

DISTRIBUTIONS = ("normal", "uniform", "dirichlet", "bernoulli")
# Named explicitly: TensorFlow's default ("auto_select") picks another
# generator under XLA, so a jit-compiled run would not repeat an eager one.
RNG_ALGORITHM = backend_random.PHILOX
# Redraws of an all-zero Bernoulli vector: (1/2)^T' per try, so 64 tries fail
# with probability 2^-64 for a single labelled task. After them every labelled
# task gets weight 1 (the loop must end on the device).
_MAX_BERNOULLI_TRIES = 64


def task_key(name):
    """A stable int32 key of a task name (Python's `hash` of a string changes between runs)."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


@register("rlw")
class RLW(LossWeightingBalancer):
    """Random loss weighting: each step descends sum_t lambda_t L_t with lambda = softmax(random draws).

    Args:
      distribution: `"normal"` (default, the paper's), `"uniform"`,
        `"dirichlet"` or `"bernoulli"`; see the module docstring.
      seed: int seed of the draws, or None (default) for one drawn from
        Python's `random` (seeded by `keras.utils.set_random_seed`).

    Logs `{task}_weight` = lambda_t (0 for a task without labels in the batch).

    Raises:
      ValueError: an unknown distribution, or a seed that is not an integer.

    Loss range: any real loss. The weights are random draws and the objective is linear in the
    losses: a negative loss or a loss of exactly 0 is like any other.

    Reference: Lin et al., TMLR 2022, section 3.
    """

    loss_range = "any"

    simplex_weights = True  # except with distribution="bernoulli" (set per instance)

    def __init__(self, distribution="normal", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.distribution = validate_choice("rlw distribution", distribution, DISTRIBUTIONS)
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"rlw seed must be an integer or None; got {seed!r}")
        self.seed = seed
        self.simplex_weights = distribution != "bernoulli"

    def build_for_tasks(self, task_names, losses=None):
        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int32", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self._task_keys = [task_key(t) for t in task_names]
        super().build_for_tasks(task_names, losses)

    def _draw(self, kind, step, attempt=0):
        """[T] float32: one draw per task, from its own stateless stream."""
        values = []
        for key in self._task_keys:
            seed = ops.stack([ops.convert_to_tensor(self.seed ^ key, "int32"), step * _MAX_BERNOULLI_TRIES + attempt])
            first, second = uniform_pair(seed)
            if kind == "normal":  # Box-Muller
                values.append(ops.sqrt(-2.0 * ops.log(first)) * ops.cos(2.0 * math.pi * second))
            else:
                values.append(first)
        return ops.stack(values)

    def sample_weights(self, mask):
        """[T] weights of this step for the labelled tasks `mask`; advances the step counter."""
        step = ops.copy(self.step_counter)  # read before the increment
        self.step_counter.assign_add(1)
        labelled = ops.cast(mask, "float32")
        if self.distribution == "bernoulli":
            return self._bernoulli(step, labelled)
        if self.distribution == "normal":
            logits = self._draw("normal", step)
        elif self.distribution == "uniform":
            logits = self._draw("uniform", step)
        else:  # dirichlet(1): exponential draws over the labelled tasks, normalised
            exponential = -ops.log(ops.maximum(self._draw("uniform", step), 1e-12))
            logits = exponential / ops.maximum(ops.sum(labelled * exponential), 1e-12)
        return masked_softmax(logits, mask)

    def _bernoulli(self, step, labelled):
        def draw(attempt):
            return labelled * ops.cast(self._draw("uniform", step, attempt) < 0.5, "float32")

        def redraw(attempt, weights):
            return attempt + 1, draw(attempt + 1)

        def all_zero(attempt, weights):
            return ops.logical_and(attempt < _MAX_BERNOULLI_TRIES - 1, ops.sum(weights) == 0.0)

        _, weights = ops.while_loop(all_zero, redraw, (ops.convert_to_tensor(0, "int32"), draw(0)))
        return ops.where(ops.sum(weights) > 0.0, weights, labelled)

    def objective(self, problem, losses):
        weights = self.sample_weights(problem.task_mask)
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "distribution": self.distribution, "seed": self.seed}


def uniform_pair(seed):
    """Two float32 U(0, 1) draws (never 0 or 1) from a stateless stream keyed by `seed` ([2] int32).

    TensorFlow's float samplers give other numbers under XLA than without it
    (even with the algorithm named); their raw 32-bit outputs agree, so the
    floats are made from the top 24 bits: (k + 1/2) / 2^24
    (`mtl_tf.backend.random.unit_uniform`; Philox words on TensorFlow).
    """
    uniform = backend_random.unit_uniform([2], seed)
    return uniform[0], uniform[1]


def masked_softmax(logits, mask):
    """softmax over the entries where `mask` is True; 0 elsewhere (all 0 when none is)."""
    shifted = logits - ops.max(ops.where(mask, logits, -1e30))
    exp = ops.where(mask, ops.exp(ops.where(mask, shifted, ops.zeros_like(shifted))), ops.zeros_like(logits))
    return exp / ops.maximum(ops.sum(exp), 1e-30)
