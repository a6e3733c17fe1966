"""The balancer contract: a balancer turns one batch into one update.

Every balancing method differs in what it needs from a batch: uniform and
uncertainty weighting need only the task losses; MGDA needs per-task gradients
with respect to the shared parameters; MGDA-UB needs them with respect to the
shared representation and then a single backward pass through the encoder;
single-step needs extra forward passes with temporarily moved shared weights.
A surrogate loss covers some of these and not others, so the contract is one
level lower: a balancer receives a `MultiTaskProblem` (the batch, the encoder,
the named heads, the task losses and helpers) and returns an `Update` (a
gradient for every trainable variable and the task weights to log).
`MultiTaskModel.train_step` only applies the update, so it has a single code
path for every method.

Distribution convention. Task losses are Keras `Loss` values, which TensorFlow
scales by 1/num_replicas; the optimizer sums gradients across replicas, so a
gradient computed from the scaled local losses is the replica's share of the
global-batch gradient. Anything a method derives from the batch as a whole
(Gram matrices, loss values for normalisation, method state) is summed across
replicas with `MultiTaskProblem.all_reduce_sum` first, so every replica
computes the same weights and applies the same update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf


class MultiTaskProblem:
    """One batch of a multi-task problem, as a balancer sees it.

    Attributes:
      task_names: task names in head order.
      x, y, sample_weight: the batch; `y` and `sample_weight` are dicts keyed by
        task (`sample_weight` entries may be None).
      encoder: the shared representation function g(x; theta_sh).
      heads: dict task -> head f^t(z; theta^t).
      shared_variables: the encoder's trainable variables (theta_sh).
      head_variables: dict task -> the head's trainable variables (theta^t).
      optimizer: the model's optimizer (methods with an inner step read its
        current learning rate).
    """

    def __init__(self, *, encoder, heads, loss_fns, x, y, sample_weight, optimizer):
        self.encoder = encoder
        self.heads = heads
        self.task_names = tuple(heads)
        self.loss_fns = loss_fns
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.optimizer = optimizer
        self.shared_variables = list(encoder.trainable_variables)
        self.head_variables = {t: list(heads[t].trainable_variables) for t in self.task_names}
        # Filled by `forward`, read by the model for metrics.
        self.predictions = None
        self.losses = None
        self._last_collective = None

    # -- forward passes -------------------------------------------------------------

    def forward(self):
        """Runs encoder and heads with the real variables, under the caller's tape.

        Returns (z, predictions, losses): the shared representation, a dict of
        head outputs and the list of the T replica-scaled task losses. They are
        a list, not a stacked tensor, because a persistent tape only records
        inside its context: indexing a stacked tensor afterwards would cut the
        graph, while `tape.gradient(losses[t], ...)` on a list entry does not.
        """
        z = self.encoder(self.x, training=True)
        predictions, losses = self.heads_and_losses(z)
        self.predictions, self.losses = predictions, tf.stack(losses)
        return z, predictions, losses

    def heads_and_losses(self, z):
        """Head outputs and the list of T task losses for representation z."""
        return self._heads_and_losses({t: z for t in self.task_names})

    def _heads_and_losses(self, inputs):
        """Like `heads_and_losses`, with head t reading `inputs[t]`."""
        predictions = {t: self.heads[t](inputs[t], training=True) for t in self.task_names}
        return predictions, [self.task_loss(t, predictions[t]) for t in self.task_names]

    def encode(self):
        """The shared representation z = g(x; theta_sh) with the real variables, under the caller's tape."""
        return self.encoder(self.x, training=True)

    def representation_gradients(self, z):
        """Runs the heads on z; returns (losses, [T] dL_t/dz, {task: dL_t/dtheta^t}).

        One backward pass through the heads serves every task: each head
        reads its own identity copy z_t of z, so the gradient of sum_t L_t
        with respect to z_t is exactly dL_t/dz, and with respect to head t's
        variables it is dL_t/dtheta^t. Only the heads are recorded (the caller
        records the encoder on its own tape), so the backward pass never walks
        the encoder's operations. Heads that share variables fall back to one
        backward pass per task, which keeps each head gradient its own task's.
        Sets `predictions` and `losses` like `forward`.
        """
        copies = {t: tf.nest.map_structure(tf.identity, z) for t in self.task_names}
        head_variables = [self.head_variables[t] for t in self.task_names]
        flat_ids = [id(v) for vs in head_variables for v in vs]
        overlapping = len(flat_ids) != len(set(flat_ids))
        with tf.GradientTape(persistent=overlapping) as tape:
            tape.watch(tf.nest.flatten(copies))
            predictions, losses = self._heads_and_losses(copies)
            total = tf.add_n(losses)
        self.predictions, self.losses = predictions, tf.stack(losses)
        if overlapping:
            per_task = [tape.gradient(losses[i], (copies[t], head_variables[i])) for i, t in enumerate(self.task_names)]
            del tape
        else:
            z_grads, head_grads = tape.gradient(total, ([copies[t] for t in self.task_names], head_variables))
            per_task = list(zip(z_grads, head_grads))
        representation_grads = [
            tf.nest.map_structure(lambda g, ref: tf.zeros_like(ref) if g is None else g, dz, z) for dz, _ in per_task
        ]
        heads = {t: list(per_task[i][1]) for i, t in enumerate(self.task_names)}
        return losses, representation_grads, heads

    def task_loss(self, task, prediction):
        loss = self.loss_fns[task](self.y[task], prediction, sample_weight=self.sample_weight[task])
        return tf.cast(loss, tf.float32)

    def encode_with(self, shared_values):
        """The representation computed with `shared_values` in place of theta_sh.

        Uses Keras' `stateless_call`, so the real variables are untouched and
        gradients flow to the tensors in `shared_values`. Updates of
        non-trainable state (batch-norm statistics, dropout seeds) made by this
        extra pass are discarded: only the real forward pass moves them.
        """
        # `layer(x, training=...)` drops the flag for a `call` without one;
        # `stateless_call` hands it to `call` as is.
        has_training = "training" in getattr(self.encoder, "call_signature_parameters", ("training",))
        z, _ = self.encoder.stateless_call(
            list(shared_values),
            [v.value for v in self.encoder.non_trainable_variables],
            self.x,
            **({"training": True} if has_training else {}),
        )
        return z

    # -- cross-replica helpers --------------------------------------------------------

    @property
    def num_replicas(self):
        return tf.distribute.get_strategy().num_replicas_in_sync

    def all_reduce_sum(self, values):
        """Sums a (nested) tensor over replicas; the identity on one replica.

        Successive reductions are chained by control dependencies. Two
        collectives with no data dependency between them may otherwise run in
        different orders on different replicas, which pairs up the wrong
        tensors (TensorFlow reports a collective shape mismatch or hangs).
        """
        if self.num_replicas == 1:
            return values
        if self._last_collective is not None:
            with tf.control_dependencies(tf.nest.flatten(self._last_collective)):
                values = tf.nest.map_structure(tf.identity, values)
        reduced = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)
        self._last_collective = reduced
        return reduced

    def global_losses(self, losses):
        """[T] task losses of the global batch (the replica-scaled losses summed)."""
        return self.all_reduce_sum(tf.stack(losses))

    @property
    def learning_rate(self):
        return tf.cast(self.optimizer.learning_rate, tf.float32)


@dataclasses.dataclass
class Update:
    """What a balancer returns for one batch.

    Attributes:
      shared: gradients aligned with `problem.shared_variables` (None allowed).
      heads: dict task -> gradients aligned with `problem.head_variables[task]`.
      task_weights: [T] weights to log (alpha for MGDA, loss weights otherwise).
      own: gradients for the balancer's own trainable variables, in the order of
        `balancer.trainable_variables`.
      logs: extra scalars to log, name -> tensor.
    """

    shared: list
    heads: dict
    task_weights: tf.Tensor
    own: list = dataclasses.field(default_factory=list)
    logs: dict = dataclasses.field(default_factory=dict)


class Balancer(keras.layers.Layer):
    """Base class of the balancing methods.

    A balancer is a Keras layer only so that the model tracks its state: its
    variables land in checkpoints and `.keras` files, and trainable ones (the
    uncertainty log-variances) are updated by the model's optimizer. Subclasses
    create state in `build_for_tasks` and implement `compute_update`.
    Variables that a method assigns inside the step are created with
    `aggregation="only_first_replica"`: their new values come from globally
    reduced quantities, so every replica holds the same value anyway and no
    replica can drift.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("name", type(self).__name__.lower())
        super().__init__(**kwargs)
        self.task_names = None

    def build_for_tasks(self, task_names):
        """Creates method state for the given tasks; called once by the model."""
        self.task_names = tuple(task_names)
        self.built = True

    @property
    def num_tasks(self):
        return len(self.task_names)

    def compute_update(self, problem: MultiTaskProblem) -> Update:
        raise NotImplementedError

    def call(self, *args, **kwargs):  # A balancer is not part of the forward graph.
        raise TypeError(f"{type(self).__name__} is a balancer; use compute_update().")

    def get_config(self):
        return super().get_config()


# -- helpers shared by the methods ----------------------------------------------------


def gradients_per_task(tape, losses, variables, num_tasks):
    """[T][V] gradients of each task loss with respect to `variables` (T backward passes)."""
    return [tape.gradient(losses[t], variables) for t in range(num_tasks)]


def zeros_for_none(gradients, variables):
    return [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]


def gram_matrix(per_task):
    """G G^T for per-task gradient lists [T][V] (or a list of T nested tensors).

    Works variable by variable (reshape the T gradients of one variable to a
    [T, n] matrix and accumulate its Gram), so the gradients are never
    concatenated into one long vector.
    """
    flat = [tf.nest.flatten(g) for g in per_task]
    gram = None
    for pieces in zip(*flat):
        stacked = tf.stack([tf.reshape(tf.cast(p, tf.float32), [-1]) for p in pieces])
        block = tf.matmul(stacked, stacked, transpose_b=True)
        gram = block if gram is None else gram + block
    return gram


def global_parameter_gram(problem, stacked):
    """Gram matrix of the global-batch task gradients from [V] tensors of shape [T, ...].

    Parameter gradients must be summed over replicas before the products are
    taken (the cross terms between replicas do not vanish), so this all-reduces
    T gradients once; the combination itself uses the local ones.
    """
    stacked = problem.all_reduce_sum(stacked)
    num_tasks = stacked[0].shape[0]
    return gram_matrix([[s[t] for s in stacked] for t in range(num_tasks)])


def weighted_sum(per_task, weights):
    """sum_t weights[t] * per_task[t], variable by variable ([T][V] -> [V])."""
    combined = []
    for pieces in zip(*per_task):
        total = None
        for t, piece in enumerate(pieces):
            term = tf.cast(weights[t], piece.dtype) * piece
            total = term if total is None else total + term
        combined.append(total)
    return combined


def stack_first_axis(per_task):
    """[T][V] -> [V] tensors with a leading task axis (for one all-reduce)."""
    return [tf.stack(pieces) for pieces in zip(*per_task)]


def validate_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {sorted(choices)}.")
    return value


def as_task_vector(name, values, task_names) -> list[float] | Any:
    """A per-task option given as a list or a {task: value} dict, as a list in task order."""
    if isinstance(values, dict):
        missing = [t for t in task_names if t not in values]
        unknown = [t for t in values if t not in task_names]
        if missing or unknown:
            raise ValueError(
                f"{name} is keyed by tasks {sorted(values)} but the model's tasks are "
                f"{list(task_names)} (missing: {missing}, unknown: {unknown})."
            )
        return [values[t] for t in task_names]
    values = list(values)
    if len(values) != len(task_names):
        raise ValueError(
            f"{name} has {len(values)} entries but the model has {len(task_names)} tasks "
            f"{list(task_names)}; give one value per task, in head order, or a dict keyed by task."
        )
    return values


def all_variables(problem, own=()):
    """shared + every head's + `own` variables, the order `split_gradients` undoes."""
    variables = list(problem.shared_variables)
    for t in problem.task_names:
        variables += problem.head_variables[t]
    return variables + list(own)


def split_gradients(gradients, problem, own=()):
    """Inverse of `all_variables`: (shared, {task: heads}, own) gradient lists."""
    gradients = list(gradients)
    n = len(problem.shared_variables)
    shared, rest = gradients[:n], gradients[n:]
    heads = {}
    for t in problem.task_names:
        k = len(problem.head_variables[t])
        heads[t], rest = rest[:k], rest[k:]
    return shared, heads, rest[: len(own)]


class LossWeightingBalancer(Balancer):
    """Methods whose update is the gradient of one scalar objective, sum_t w_t L_t (+ terms).

    Subclasses implement `objective(problem, losses)` returning the objective and
    the [T] task weights to log. The objective may depend on the balancer's own
    trainable variables (they then get gradients too).
    """

    def objective(self, problem, losses):
        raise NotImplementedError

    def compute_update(self, problem):
        own = self.trainable_variables
        variables = all_variables(problem, own)
        with tf.GradientTape() as tape:
            _, _, losses = problem.forward()
            objective, weights = self.objective(problem, tf.stack(losses))
        shared, heads, own_grads = split_gradients(tape.gradient(objective, variables), problem, own)
        return Update(shared=shared, heads=heads, task_weights=weights, own=own_grads)
