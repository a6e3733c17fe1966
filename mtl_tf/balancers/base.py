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

Rules every method keeps (the property suite `tests/balancers/test_properties.py`
checks each of them for every name in `mtl_tf.balancers.available()`; a method
that cannot keep one declares it in `Balancer.property_exceptions`, with why):

1. Precision. Under a loss-scaling optimizer (`mixed_float16`: `compile` wraps
   the optimizer in `keras.optimizers.LossScaleOptimizer`, whose `apply`
   divides every gradient by the loss scale S) the gradients a method returns
   must be gradients of S times its objective. `MultiTaskProblem` keeps the
   two apart: the losses it returns (`forward`, `task_loss`, `losses`,
   `global_losses`) are the true, unscaled float32 values, which methods read
   (normalisations, loss ratios, logs); `scale(x)` multiplies an objective by S
   before it is differentiated, `unscale(g)` turns a gradient of a scaled loss
   back into a true gradient where a method uses its value (an inner step, a
   norm). `representation_gradients` already returns gradients of the scaled
   losses. Gram matrices are formed in float32 (`gram_matrix`) whatever the
   policy. A step whose scaled gradients overflow is the loss scaler's to skip.
2. State. Every non-trainable state of the encoder and of every head
   (batch-norm statistics, dropout seed generators) moves exactly once per
   batch, in the real forward pass (`forward`, or `encode` followed by
   `representation_gradients`, each called once). Every extra pass a method
   makes (inner steps, look-aheads, re-evaluations) goes through
   `encode_with` / `heads_with`, which call the layers with `stateless_call`
   and the state from before the real pass: they see the same dropout masks as
   the real pass and their state updates are discarded.
3. Labels. A task whose global batch holds no labelled example
   (`MultiTaskProblem.task_mask` is False: total sample weight zero, or every
   target ignored by its loss) takes no part in that step's weighting: its
   weight is 0, min-norm methods solve over the labelled tasks only, and the
   other tasks get the update of a model without that task. A batch with no
   labelled task is skipped by the model.
   Loss range. A loss outside what the method can take is refused by name
   before any update: every method declares its need of a loss ("any",
   "non_negative" or "positive"; `Balancer.loss_range`, `loss_range_needed()`,
   why in its docstring's "Loss range:" paragraph), and the model does not
   apply a batch in which a labelled task's loss breaks it (skip cause 3;
   `fit` stops with a `LossRangeError` naming the task, the method, the value
   and the fix). See `mtl_tf.balancers.loss_range`.
4. Replicas. Weights and method state come from the global batch (see below),
   so every replica applies the same update.
5. The step stays on the device: no Python control flow on tensor values, no
   host round trip, XLA-compilable.

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
import optree
from keras import ops

from mtl_tf.balancers.labels import broadcast_weight, labelled_count  # noqa: F401 (kept importable from here)
from mtl_tf.balancers.representations import head_input, is_per_task  # noqa: F401 (kept importable from here)


class MultiTaskProblem:
    """One batch of a multi-task problem, as a balancer sees it: the contract an engine implements.

    An engine (`mtl_tf.engines`) builds one per batch inside the model's
    training step; `mtl_tf.engines.tensorflow.TensorFlowProblem` is the
    TensorFlow one. A balancer reads the attributes below and calls the
    methods below, and nothing else of the backend: the math in between is
    `keras.ops`.

    What an engine provides (every method is traced into the compiled step;
    none may leave the device):

    - the batch and model: `task_names`, `x`, `y`, `sample_weight`, `encoder`,
      `heads`, `shared_variables`, `head_variables`, `optimizer`,
      `learning_rate`, `method` (the balancer, for error messages);
    - the real forward pass, once per batch, moving the layers' state (rule 2):
      `forward()` with `objective_gradients(objective)` (a weighted backward pass
      of any scalar objective of the task losses), or `encode()` followed by
      `representation_gradients(z)` (per-task gradients at the representation
      and the heads' gradients, one backward pass through the heads) and
      `encoder_backward(cotangent)` (the encoder's backward pass; as many
      times as `encode(passes=...)` announced, or vectorised over tasks with
      `encoder_backward_stacked`; `release_encoder()` then frees what was kept);
    - stateless re-evaluation at other weights: `encode_with(values)`,
      `heads_with(z, head_values)` (see rule 2), and `task_loss(task, y_pred)`,
      differentiated with `value_and_gradients(function, arguments)`;
    - the loss scale: `loss_scale`, `loss_scaled`, `scale(objective)`,
      `unscale(gradients)` (rule 1);
    - the global batch: `task_mask` (rule 3), `num_replicas`,
      `all_reduce_sum(values)`, `global_losses(losses)` (rule 4).

    What a balancer may assume: losses are unscaled float32 [T] values (a list
    of T scalars where a method differentiates them one by one); every
    gradient an engine returns is of the S-scaled losses and aligned with the
    variables it names (None where a loss does not reach a variable, unless
    the method says zeros); the gradients and values are the replica's own,
    so anything read as "the batch" goes through `all_reduce_sum` first; the
    methods may be called in any order a step needs, but the real forward
    pass (`forward`, `objective_gradients` or `encode`) once.

    Attributes:
      task_names: task names in head order.
      x: the batch's inputs (any structure the encoder takes).
      y: dict task -> targets.
      sample_weight: dict task -> sample weights (entries may be None).
      encoder: the shared representation function g(x; theta_sh).
      heads: dict task -> head f^t(z; theta^t).
      shared_variables: the encoder's trainable variables (theta_sh).
      head_variables: dict task -> the head's trainable variables (theta^t).
      optimizer: the model's optimizer (methods with an inner step read its
        current learning rate).
      loss_scale: float32 scalar S, the loss scale of a loss-scaling optimizer
        (1 otherwise); `loss_scaled` says whether there is one.
      method: the balancer computing the update (None when not given; error
        messages name it).

    Per-task representations. An encoder may return a dict keyed by exactly
    the task names, {task: z_t} (cross-stitch, MMoE, CGC, PLE in
    `mtl_tf.nets`; other dicts: `mtl_tf.balancers.representations`): head t
    then reads z_t only (`head_input`), in every pass and in
    `MultiTaskModel.call`. The shared parameters stay the encoder's variables,
    so the shared-parameter methods are unchanged; but dL_t/dZ is zero outside
    z_t, so a Gramian of representation gradients (`mgda_ub`,
    `gradient_at="representation"`) would be diagonal and is refused
    (`gram_matrix` raises ValueError naming the method, the option and the
    encoder).
    """

    def forward(self):
        """The real forward pass: (z, {task: prediction}, [T] unscaled losses); see the engine's docs."""
        raise NotImplementedError

    def objective_gradients(self, objective, own=()):
        """The real forward pass and one backward pass of `objective(losses)`.

        Args:
          objective: a function of the [T] unscaled float32 task losses
            returning (scalar objective, anything else); it may read `own`
            variables. The engine differentiates S * objective.
          own: extra variables (the balancer's own) to differentiate.

        Returns:
          (losses [T], shared gradients, {task: head gradients}, own gradients,
          the objective function's second output).
        """
        raise NotImplementedError

    def encode(self, passes=1):
        """The real encoder pass z; `passes` backward passes through it follow (`encoder_backward`)."""
        raise NotImplementedError

    def encoder_backward(self, cotangent, variables=None):
        """Gradients of the shared variables (or of `variables`, a subset) for the output gradient `cotangent` at z.

        None where z does not depend on a variable. Each call is one backward
        pass (counted by `encode(passes=...)`).
        """
        raise NotImplementedError

    def encoder_backward_stacked(self, cotangents):
        """`encoder_backward` vectorised over a leading task axis of `cotangents`: [V] tensors [T, ...]."""
        raise NotImplementedError

    def release_encoder(self):
        """Frees what `encode(passes > 1)` kept for its backward passes (a no-op where nothing is kept)."""

    def representation_gradients(self, z):
        """(losses, [T] dL_t/dz, {task: dL_t/dtheta^t}) from the real head passes on z."""
        raise NotImplementedError

    def task_loss(self, task, prediction):
        """The unscaled float32 loss of `task` for `prediction` (replica-scaled, as every Keras loss)."""
        raise NotImplementedError

    def value_and_gradients(self, function, arguments):
        """A stateless objective and its gradient: `((value, aux), d value / d arguments)`.

        `function(arguments)` returns (scalar, anything else) and may read the
        batch only through `encode_with`, `heads_with` and `task_loss` (nothing
        it runs moves state, rule 2); `arguments` is a list of tensors (moved
        weights, copies of z). Gradients come in the order of `arguments`, zeros
        where the value does not depend on one. Like `jax.value_and_grad(...,
        has_aux=True)`; on TensorFlow a tape that watches `arguments`. The
        caller scales what it differentiates (`scale`), as everywhere.
        """
        raise NotImplementedError

    def encode_with(self, shared_values):
        raise NotImplementedError

    def heads_with(self, z, head_values=None, tasks=None):
        raise NotImplementedError

    def scale(self, objective):
        raise NotImplementedError

    def unscale(self, gradients):
        raise NotImplementedError

    @property
    def task_mask(self):
        raise NotImplementedError

    @property
    def num_replicas(self):
        raise NotImplementedError

    def all_reduce_sum(self, values):
        raise NotImplementedError

    def global_losses(self, losses):
        raise NotImplementedError

    @property
    def learning_rate(self):
        raise NotImplementedError

    def _representation_gram_refusal(self):
        """The error message for a Gramian of per-task representation gradients."""
        method = self.method
        name = getattr(method, "method_name", None) or getattr(method, "name", None)
        option = getattr(method, "gradient_at", None)
        if name is None:
            what = "this balancer"
        elif option is not None:
            what = f"balancer {name!r} with gradient_at={option!r}"
        else:
            what = f"balancer {name!r}"
        if name == "mgda_ub":
            instead = "'mgda' instead of 'mgda_ub'"
        elif option is not None:
            instead = f"{name!r} with gradient_at='shared_parameters'"
        else:
            instead = "a method on the shared parameters (e.g. 'mgda' instead of 'mgda_ub')"
        return (
            f"{what} forms the Gramian of the task gradients with respect to the shared representation, but "
            f"the encoder {self.encoder.name!r} ({type(self.encoder).__name__}) gives every task its own "
            f"representation z_t (it returns a dict keyed by the task names {list(self.task_names)}): dL_t/dZ is "
            "zero outside z_t, so that Gramian is diagonal and says nothing about how the tasks conflict. Use "
            f"{instead}: it works on the gradients of every encoder parameter (experts, gates, cross-stitch "
            "units), which the tasks do share."
        )


class TaskRepresentationGradient(dict):
    """dL_t/dZ of a per-task representation Z = {task: z_t}: dL_t/dz_t at key t, zeros elsewhere.

    A plain dict to `keras.tree` and to an engine's gradients; `gram_matrix` refuses it
    with `refusal` (the Gramian of such gradients is diagonal).
    """

    refusal = (
        "the Gramian of representation gradients is not defined for an encoder with per-task "
        "representations (a dict keyed by the task names); use the shared-parameter variant"
    )

    def __init__(self, *args, refusal=None, task=None, **kwargs):
        super().__init__(*args, **kwargs)
        if refusal is not None:
            self.refusal = refusal
        # The task whose loss this is the gradient of: an engine's backward pass
        # may then start from z_task alone (the other entries are zeros), so a
        # variable only the other tasks reach gets None, not a zero gradient.
        self.task = task

    def tree_flatten(self):
        """Children in sorted-key order, as `keras.tree` flattens a dict (see the registration below)."""
        keys = sorted(self)
        return [self[k] for k in keys], (tuple(keys), self.refusal), keys

    @classmethod
    def tree_unflatten(cls, metadata, children):
        # `task` is not carried over: a structure rebuilt by a tree operation may
        # hold a combination of several tasks' gradients.
        keys, refusal = metadata
        return cls(zip(keys, children), refusal=refusal)


# `keras.tree` (optree, namespace "keras"; optree comes with Keras) takes an
# unregistered dict subclass for a leaf; registered, it is a node like the dict it is.
optree.register_pytree_node_class(TaskRepresentationGradient, namespace="keras")


@dataclasses.dataclass
class Update:
    """What a balancer returns for one batch.

    Attributes:
      shared: gradients aligned with `problem.shared_variables` (None allowed).
      heads: dict task -> gradients aligned with `problem.head_variables[task]`;
        None when `head_phase` gives them.
      task_weights: [T] weights to log (alpha for MGDA, loss weights otherwise).
      own: gradients for the balancer's own trainable variables, in the order of
        `balancer.trainable_variables`.
      logs: extra scalars to log, name -> tensor.
      head_phase: optional `() -> {task: gradients}`, called by the model after
        it applied the shared update, so the head gradients can be taken at the
        new shared weights (Lee & Son's eq. 4). Its extra passes must be
        stateless (`encode_with`, `heads_with`).
      head_learning_rate: optional float32 scalar: the heads are then stepped
        by `MultiTaskModel.head_optimizer` (the model optimizer's kind, its own
        moments) at this rate, after the shared step. The balancer must have
        `uses_head_optimizer = True` for the model to create that optimizer.
    All gradients are those of loss-scaled objectives (rule 1).
    """

    shared: list
    heads: dict | None
    task_weights: Any
    own: list = dataclasses.field(default_factory=list)
    logs: dict = dataclasses.field(default_factory=dict)
    head_phase: Any = None
    head_learning_rate: Any = None


def head_optimizer_like(optimizer):
    """A fresh optimizer of the model optimizer's kind and settings, for a separate head step.

    The loss-scaling wrapper is left out (the model un-scales head gradients
    itself); the learning rate starts at 0 and is set by the model each step.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    config = optimizer.get_config()
    config["learning_rate"] = 0.0
    config["name"] = "head_optimizer"
    return type(optimizer).from_config(config)


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

    # Rules of the module docstring this method cannot keep: {rule: why}. The
    # property suite reads it, checks what the method does keep of that rule,
    # and reports the exception by name instead of skipping silently. Keys:
    # "mixed_precision", "stateful_layers", "unlabelled_task",
    # "permutation_equivariant", "simplex".
    property_exceptions: dict = {}
    # True when the method's `Update`s carry a `head_learning_rate` (the model
    # then keeps a second optimizer for the heads).
    uses_head_optimizer = False
    # True when the logged task weights lie on the probability simplex.
    simplex_weights = False
    # What the method needs of a task loss: "any", "non_negative" or "positive"
    # (`mtl_tf.balancers.loss_range`). "any" refuses nothing, so a method written
    # before the rule keeps working; every registered method states its own.
    loss_range = "any"

    def loss_range_needed(self):
        """This instance's loss range: `loss_range`, unless an option changes it (mgda's loss normalisation)."""
        return self.loss_range

    def __init__(self, **kwargs):
        kwargs.setdefault("name", type(self).__name__.lower())
        super().__init__(**kwargs)
        self.task_names = None

    def build_for_tasks(self, task_names, losses=None):
        """Creates method state for the given tasks; called once by the model.

        losses: the model's dict task -> Keras `Loss` (methods whose rule
        depends on the kind of loss read it; None when built without a model).
        """
        self.task_names = tuple(task_names)
        self.built = True

    @property
    def num_tasks(self):
        return len(self.task_names)

    def compute_update(self, problem: MultiTaskProblem) -> Update:
        raise NotImplementedError

    def epoch_mean_logs(self, task_names):
        """Names of the method's logs that the model reports as epoch means (batch-size weighted).

        Loss-like logs belong here (they then read like `{task}_loss`); the
        others are reported as the step's value, like the task weights.
        """
        return ()

    def call(self, *args, **kwargs):  # A balancer is not part of the forward graph.
        raise TypeError(f"{type(self).__name__} is a balancer; use compute_update().")

    def get_config(self):
        return super().get_config()


# -- helpers shared by the methods ----------------------------------------------------


def zeros_for_none(gradients, variables):
    """None gradients (a variable the loss does not reach) as zeros of the variable's shape."""
    return [ops.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]


def gram_matrix(per_task):
    """G G^T for per-task gradient lists [T][V] (or a list of T nested tensors).

    Works variable by variable (reshape the T gradients of one variable to a
    [T, n] matrix and accumulate its Gram), so the gradients are never
    concatenated into one long vector.

    Raises:
      ValueError: the entries are gradients with respect to a per-task
        representation (`TaskRepresentationGradient`): their Gramian is
        diagonal, so no method may read it as the tasks' conflicts.
    """
    for g in per_task:
        if isinstance(g, TaskRepresentationGradient):
            raise ValueError(g.refusal)
    flat = [keras.tree.flatten(g) for g in per_task]
    gram = None
    for pieces in zip(*flat):
        stacked = ops.stack([ops.reshape(ops.cast(p, "float32"), [-1]) for p in pieces])
        block = ops.matmul(stacked, ops.transpose(stacked))
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
            term = ops.cast(weights[t], piece.dtype) * piece
            total = term if total is None else total + term
        combined.append(total)
    return combined


def stack_first_axis(per_task):
    """[T][V] -> [V] tensors with a leading task axis (for one all-reduce)."""
    return [ops.stack(pieces) for pieces in zip(*per_task)]


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
    the [T] task weights to log, from unscaled losses; the base class scales it
    under a loss-scaling optimizer. Weights of the tasks outside
    `problem.task_mask` must be 0 and those tasks' terms left out (rule 3). The
    objective may depend on the balancer's own trainable variables (they then
    get gradients too).
    """

    def objective(self, problem, losses):
        raise NotImplementedError

    def compute_update(self, problem):
        _, shared, heads, own, weights = problem.objective_gradients(
            lambda losses: self.objective(problem, losses), own=self.trainable_variables
        )
        return Update(shared=shared, heads=heads, task_weights=weights, own=own)


def mask_weights(weights, mask):
    """Weights with the entries of unlabelled tasks set to 0 (rule 3)."""
    return ops.where(mask, weights, ops.zeros_like(weights))


def shared_task_gradients(problem):
    """(losses, [T][V] local per-task gradients of the shared variables (of S L_t), {task: head gradients}).

    One real forward pass; the heads are differentiated once
    (`representation_gradients`) and the encoder once per task with that
    task's dL_t/dZ as the output gradient (T encoder backward passes).
    """
    shared_vars = problem.shared_variables
    z = problem.encode(passes=len(problem.task_names))
    losses, representation_grads, heads = problem.representation_gradients(z)
    per_task = [zeros_for_none(problem.encoder_backward(dz), shared_vars) for dz in representation_grads]
    problem.release_encoder()
    return losses, per_task, heads
