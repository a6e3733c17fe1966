"""MoCo: multi-objective gradient correction with tracked gradients.

Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
section 3, Algorithm 1. MoCo replaces each task's stochastic gradient h_t by a
tracked gradient y_t and its MGDA weights by weights lambda moved one
projected-gradient step per iteration (k = 1, 2, ...):

    y_t    <- y_t - beta_k (y_t - h_t)                          (every task)
    lambda <- Proj_simplex(lambda - gamma_k (Y^T Y + rho I) lambda)
    update  = Y lambda = sum_t lambda_t y_t

with Y = [y_1 .. y_T], y_t = 0 and lambda uniform at the start, and the
step sizes beta_k = beta / k^beta_sigma, gamma_k = gamma / k^gamma_sigma.
Defaults: LibMTL's `MoCo_beta` 0.5, `MoCo_beta_sigma` 0.5, `MoCo_gamma` 0.1,
`MoCo_gamma_sigma` 0.5, `MoCo_rho` 0. Heads descend their own gradients.

Cost: the state holds one copy of the shared-parameter gradients per task
(T x the shared parameter count, float32; `mtl_tf.balancers.tracked`), plus
lambda [T] and the step count. Each step takes T encoder backward passes.

Options beyond the paper's Algorithm 1 (both from LibMTL, which follows the
authors' shared code):

* `gradient_normalization="loss"`: h_t = L_t g_t / ||g_t|| (each task
  gradient rescaled to its loss); default `"none"` (h_t = g_t, Algorithm 1).
* `lambda_update="softmax"`: lambda <- softmax(lambda - gamma_k (Y^T Y +
  rho I) lambda) (LibMTL's form) instead of the Euclidean projection onto the
  simplex (default, the paper's).

Choices and deviations:

* The paper's projection of y_t onto a ball of radius L_t (a bound of the
  gradient, for its analysis) is left out, as in LibMTL and the authors' code.
* The projection onto the simplex is exact (sort-based, on the values
  shifted by their largest entry, so exact to a few float32 epsilons at any
  gradient scale), on the device.
* Labels (rule 3): a task without labels in the global batch keeps y_t and
  its lambda_t as they were and takes no part: lambda's step runs on the
  labelled tasks' weights renormalised to sum 1, the result is scaled back to
  their previous share, and the update is sum over the labelled tasks of
  their renormalised new weights times y_t. With every task labelled this is
  Algorithm 1; with one left out it is the step of a model without it.
* Replicas (rule 4): y moves with the global-batch gradients (all-reduced), so
  every replica holds the same state and applies the same update (each returns
  its 1/num_replicas share); under a loss-scaling optimizer y holds true
  gradients and the update is scaled back (rule 1). The state moves only on a
  step the model applies.
* No representation-gradient variant (LibMTL refuses it too): y tracks
  parameter gradients across batches, which a representation of a new batch
  has no counterpart of.

Measured (multi-fashion, Lee & Son's protocol with the official recipe: raw
pixels, SGD 1e-3 with momentum 0.9; `launch/reproduce.py
--table=method_zoo_multi_fashion`): with the defaults (Algorithm 1, raw
gradients) the network collapsed in the first epoch (both tasks at chance for
all 10 epochs); with `gradient_normalization="loss"` it trained like `mgda`
(2 epochs on 30k examples: 49.4 / 45.6 % against mgda's 51.5 / 46.8 %). The
first losses there are 7 to 10 and the raw gradients large; which part of
Algorithm 1 fails on them (y_t lagging the model while SGD's momentum
accumulates it, or lambda's single projected step jumping between vertices)
is not measured. Where the losses or gradients are large, prefer
`gradient_normalization="loss"` (the authors' code).

Logs `{task}_weight` = the step's lambda_t (on the simplex; 0 for an
unlabelled task).
"""

import math
import numbers

import keras
from keras import ops

from mtl_tf.backend.ops import add_n
from mtl_tf.backend.solver_ops import gather
from mtl_tf.balancers.base import Update, shared_task_gradients, validate_choice
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.rlw import masked_softmax
from mtl_tf.balancers.tracked import (
    TrackedGradientBalancer,
    as_replica_share,
    global_task_gradients,
    state_may_move,
    task_norms,
)

NORMALIZATIONS = ("none", "loss")
LAMBDA_UPDATES = ("projection", "softmax")


@register("moco")
class MoCo(TrackedGradientBalancer):
    """MoCo: tracked task gradients combined by weights moved one projected-gradient step per iteration.

    Args:
      beta, beta_sigma: the tracking rate beta_k = beta / k^beta_sigma
        (defaults 0.5, 0.5; beta in (0, 1]).
      gamma, gamma_sigma: lambda's step size gamma_k = gamma / k^gamma_sigma
        (defaults 0.1, 0.5).
      rho: the l2 regularisation of lambda's step (default 0).
      gradient_normalization: `"none"` (default, Algorithm 1) or `"loss"`
        (h_t = L_t g_t / ||g_t||, the authors' code via LibMTL).
      lambda_update: `"projection"` (default, the paper's Euclidean projection
        onto the simplex) or `"softmax"` (LibMTL's).

    Logs `{task}_weight` = lambda_t of the step (on the simplex).

    Raises:
      ValueError: beta outside (0, 1], a negative or non-finite rate,
        exponent or rho, an unknown normalisation or lambda update.

    Loss range: any real loss with `gradient_normalization="none"` (default): the tracked gradients
    and lambda never read a loss value. Non-negative with `"loss"`, which rescales each gradient to
    norm L_t: a negative loss would turn its task's tracked gradient around, so the method would
    ascend that loss. A loss of exactly 0 gives h_t = 0 there (the task's tracked gradient decays
    towards 0).

    Reference: Fernando et al., ICLR 2023, section 3, Algorithm 1.
    """

    loss_range = "any"

    simplex_weights = True

    def __init__(self, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, gradient_normalization="none",
                 lambda_update="projection", **kwargs):
        super().__init__(**kwargs)
        self.beta = _number("beta", beta)
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"moco beta must be a number in (0, 1]; got {beta!r}")
        self.beta_sigma = _number("beta_sigma", beta_sigma)
        self.gamma = _number("gamma", gamma)
        self.gamma_sigma = _number("gamma_sigma", gamma_sigma)
        self.rho = _number("rho", rho)
        self.gradient_normalization = validate_choice("moco gradient_normalization", gradient_normalization,
                                                      NORMALIZATIONS)
        self.lambda_update = validate_choice("moco lambda_update", lambda_update, LAMBDA_UPDATES)

    def loss_range_needed(self):
        """Non-negative with `gradient_normalization="loss"` (h_t = L_t g_t / ||g_t||), else any."""
        return "non_negative" if self.gradient_normalization == "loss" else "any"

    def build_for_tasks(self, task_names, losses=None):
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.lambdas = self.add_weight(
            name="lambdas", shape=(len(task_names),), initializer=keras.initializers.Constant(1.0 / len(task_names)), **state
        )
        super().build_for_tasks(task_names, losses)

    def compute_update(self, problem):
        tracked = self.ensure_tracked(problem)
        losses, per_task, heads = shared_task_gradients(problem)
        mask = problem.task_mask
        h = global_task_gradients(problem, per_task)
        if self.gradient_normalization == "loss":
            norms = task_norms(h)
            factor = ops.where(norms > 0.0, problem.global_losses(losses) / ops.where(norms > 0.0, norms, 1.0), 0.0)
            h = [g * _per_task(factor, g) for g in h]
        steps = self.steps + 1.0
        beta = self.beta / ops.power(steps, self.beta_sigma)
        gamma = self.gamma / ops.power(steps, self.gamma_sigma)
        moves = state_may_move(problem, h)

        new_tracked = []
        for y, current, g in zip(tracked, self.tracked_values(), h):
            new_tracked.append(ops.where(_per_task(mask, g), current - beta * (current - g), current))
        labelled = ops.cast(mask, "float32")
        flat = [ops.reshape(y, [self.num_tasks, -1]) * labelled[:, None] for y in new_tracked]
        gram = add_n([ops.matmul(f, ops.transpose(f)) for f in flat])

        previous = ops.cast(self.lambdas, "float32")
        share = ops.sum(labelled * previous)
        uniform = labelled / ops.maximum(ops.sum(labelled), 1.0)
        restricted = ops.where(share > 0.0, labelled * previous / ops.where(share > 0.0, share, 1.0), uniform)
        regularised = gram + self.rho * ops.eye(self.num_tasks, dtype="float32")
        stepped = restricted - gamma * ops.matmul(regularised, restricted)
        if self.lambda_update == "softmax":
            weights = masked_softmax(stepped, mask)
        else:
            weights = project_to_simplex(stepped, mask)
        stored = ops.where(share > 0.0, ops.where(mask, weights * share, previous), weights)

        for y, current, new in zip(tracked, self.tracked_values(), new_tracked):
            y.assign(ops.where(moves, new, current))
        self.lambdas.assign(ops.where(moves, stored, previous))
        self.steps.assign(ops.where(moves, steps, self.steps.value))
        direction = [ops.tensordot(weights, y, axes=1) for y in new_tracked]
        shared = as_replica_share(problem, direction, problem.shared_variables)
        return Update(shared=shared, heads=heads, task_weights=weights)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "gamma": self.gamma,
            "gamma_sigma": self.gamma_sigma,
            "rho": self.rho,
            "gradient_normalization": self.gradient_normalization,
            "lambda_update": self.lambda_update,
        }


def project_to_simplex(values, mask):
    """The Euclidean projection of values[mask] onto the probability simplex; 0 outside `mask` ([T] float32).

    Sort-based (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with u the
    masked values sorted decreasingly, rho the largest k with
    u_k > (sum_{i <= k} u_i - 1) / k, the projection is max(v - theta, 0),
    theta = (sum_{i <= rho} u_i - 1) / rho. All zeros when no entry is masked.

    Computed on the values minus their largest masked entry m (the projection
    is the same: theta moves by m). The entries that decide it lie within 1
    of m (theta >= m - 1), so their differences to m are exact in float32 and
    the result is exact to a few float32 epsilons at any scale; summed
    unshifted, the -1 and the differences vanish in the rounding of sums of
    order |m| (float32 gave [0, 0] for [1e8, 1e8 + 100]).
    """
    num = values.shape[0]
    neg_inf = -float("inf")
    largest = ops.max(ops.where(mask, values, neg_inf))
    shifted = ops.where(mask, values - largest, ops.zeros_like(values))
    # Sorted in decreasing order: top_k of every entry (what a descending `tf.sort` runs).
    ordered = ops.top_k(ops.where(mask, shifted, neg_inf), num)[0]
    valid = ops.arange(num, dtype="int32") < ops.sum(ops.cast(mask, "int32"))
    sums = ops.cumsum(ops.where(valid, ordered, ops.zeros_like(ordered)))
    counts = ops.cast(ops.arange(1, num + 1, dtype="int32"), values.dtype)
    active = ops.logical_and(valid, ordered - (sums - 1.0) / counts > 0.0)
    rho = ops.max(ops.where(active, ops.arange(1, num + 1, dtype="int32"), 0))
    theta = (gather(sums, ops.maximum(rho - 1, 0)) - 1.0) / ops.cast(ops.maximum(rho, 1), values.dtype)
    projected = ops.maximum(shifted - theta, 0.0)
    return ops.where(ops.logical_and(mask, rho > 0), projected, ops.zeros_like(values))


def _per_task(vector, like):
    """A [T] vector shaped to broadcast against a [T, ...] tensor."""
    return ops.reshape(vector, [-1] + [1] * (len(like.shape) - 1))


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"moco {name} must be a finite number >= 0; got {value!r}")
    return float(value)
