"""The TensorFlow engine: what a balancer needs from a training step, with tapes and `tf.distribute`.

`TensorFlowProblem` implements the contract `mtl_tf.balancers.base.MultiTaskProblem`
states (the batch, the task losses, per-task gradients at the representation
and at the shared parameters, a weighted backward pass, stateless
re-evaluation at other weights, cross-replica sums, the loss scale) for Keras'
TensorFlow backend: `MultiTaskModel.train_step` builds one per batch.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_tf.balancers.base import MultiTaskProblem, TaskRepresentationGradient, all_variables, split_gradients
from mtl_tf.balancers.labels import labelled_count
from mtl_tf.balancers.representations import head_input, is_per_task


class TensorFlowProblem(MultiTaskProblem):
    """`MultiTaskProblem` on TensorFlow: tapes (`tf.GradientTape`) and `tf.distribute` collectives.

    Every gradient is a tape's: the heads on one tape (`_differentiate_heads`),
    the encoder on its own (`encode`), so the T per-task gradients at the
    representation take one backward pass through the heads and the encoder is
    walked only as often as a method needs. Cross-replica sums are the replica
    context's all-reduce, chained so that every replica runs them in the same
    order.
    """

    def __init__(self, *, encoder, heads, loss_fns, x, y, sample_weight, optimizer, loss_scale=None, method=None):
        self.encoder = encoder
        # The balancer, when the model gives it: only error messages read it.
        self.method = method
        self.heads = heads
        self.task_names = tuple(heads)
        self.loss_fns = loss_fns
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.optimizer = optimizer
        self.loss_scaled = loss_scale is not None
        self.loss_scale = tf.constant(1.0) if loss_scale is None else tf.cast(loss_scale, tf.float32)
        self.shared_variables = list(encoder.trainable_variables)
        self.head_variables = {t: list(heads[t].trainable_variables) for t in self.task_names}
        # The state before the real forward pass moves it: extra passes run
        # from here, so they draw the real pass's dropout masks (rule 2).
        self._encoder_state = _state_before(encoder)
        self._head_state = {t: _state_before(heads[t]) for t in self.task_names}
        # Filled by `forward`, read by the model for metrics.
        self.predictions = None
        self.losses = None
        self._last_collective = None
        self._task_mask = None
        self._encoder_tape = self._z = None

    # -- forward passes -------------------------------------------------------------

    def forward(self):
        """Runs encoder and heads with the real variables, under the caller's tape.

        This is the real forward pass (it moves batch-norm statistics and
        dropout seeds); call it once per batch. Returns (z, predictions, losses):
        the shared representation, a dict of head outputs and the list of the T
        replica-scaled, unscaled-by-S task losses. They are a list, not a
        stacked tensor, because a persistent tape only records inside its
        context: indexing a stacked tensor afterwards would cut the graph, while
        `tape.gradient(losses[t], ...)` on a list entry does not.
        """
        z = self.encoder(self.x, training=True)
        predictions, losses = self._heads_and_losses({t: head_input(z, t, self.task_names) for t in self.task_names})
        self.predictions, self.losses = predictions, tf.stack(losses)
        return z, predictions, losses

    def _heads_and_losses(self, inputs):
        """The real head passes, head t reading `inputs[t]`."""
        predictions = {t: self.heads[t](inputs[t], training=True) for t in self.task_names}
        return predictions, [self.task_loss(t, predictions[t]) for t in self.task_names]

    def encode(self, passes=1):
        """The real encoder pass z = g(x; theta_sh) (once per batch), recorded for `passes` backward passes."""
        with tf.GradientTape(persistent=passes > 1) as tape:
            z = self.encoder(self.x, training=True)
        self._encoder_tape, self._z = tape, z
        return z

    def encoder_backward(self, cotangent, variables=None):
        """d(z . cotangent)/dtheta_sh through the tape `encode` recorded (None where z does not reach)."""
        variables = self.shared_variables if variables is None else list(variables)
        target = self._z
        if isinstance(cotangent, TaskRepresentationGradient) and cotangent.task is not None:
            # dL_t/dZ is zero outside z_t: start from z_t alone (same values, None where only others reach).
            target, cotangent = target[cotangent.task], cotangent[cotangent.task]
        return self._encoder_tape.gradient(target, variables, output_gradients=cotangent)

    def encoder_backward_stacked(self, cotangents):
        """One vectorised backward pass (`tf.vectorized_map`, pfor) over the leading task axis.

        Needs `encode(passes=2)` or more (a persistent tape). Returns [V] tensors
        [T, *variable.shape], zeros where z does not reach a variable.
        """
        variables = self.shared_variables

        def one(dz):
            grads = self._encoder_tape.gradient(self._z, variables, output_gradients=dz)
            return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]

        return tf.vectorized_map(one, cotangents)

    def release_encoder(self):
        self._encoder_tape = None

    def objective_gradients(self, objective, own=()):
        own = list(own)
        variables = all_variables(self, own)
        with tf.GradientTape() as tape:
            _, _, losses = self.forward()
            value, extra = objective(tf.stack(losses))
            scaled = self.scale(value)
        gradients = tape.gradient(scaled, variables)
        shared, heads, own_gradients = split_gradients(gradients, self, own)
        return self.losses, shared, heads, own_gradients, extra

    def representation_gradients(self, z):
        """The real head passes on z; returns (losses, [T] dL_t/dz, {task: dL_t/dtheta^t}).

        The gradients are those of the scaled losses S L_t (rule 1); the
        returned losses are unscaled. One backward pass through the heads
        serves every task: each head reads its own identity copy z_t of z, so
        the gradient of sum_t L_t with respect to z_t is exactly dL_t/dz, and
        with respect to head t's variables it is dL_t/dtheta^t. Only the heads
        are recorded (the caller records the encoder on its own tape), so the
        backward pass never walks the encoder's operations. Heads that share
        variables fall back to one backward pass per task, which keeps each
        head gradient its own task's. Sets `predictions` and `losses` like
        `forward`.

        For per-task representations z = {task: z_t} (see the class doc), head
        t reads its own copy of z_t and dL_t/dz is a dict equal to dL_t/dz_t
        at key t and zero elsewhere (a `TaskRepresentationGradient`, which
        `gram_matrix` refuses: that Gramian would be diagonal). Feeding it to
        the encoder's backward pass (`tape.gradient(z, shared_variables,
        output_gradients=...)`) gives grad_sh L_t exactly, as for a shared z.
        """
        if is_per_task(z, self.task_names):
            return self._per_task_representation_gradients(z)
        losses, per_task = self._differentiate_heads({t: tf.nest.map_structure(tf.identity, z) for t in self.task_names})
        representation_grads = [
            tf.nest.map_structure(lambda g, ref: tf.zeros_like(ref) if g is None else g, dz, z) for dz, _ in per_task
        ]
        heads = {t: list(per_task[i][1]) for i, t in enumerate(self.task_names)}
        return losses, representation_grads, heads

    def _per_task_representation_gradients(self, z):
        """`representation_gradients` for z = {task: z_t}: each head differentiated at its own z_t."""
        tasks = self.task_names
        losses, per_task = self._differentiate_heads({t: tf.nest.map_structure(tf.identity, z[t]) for t in tasks})
        refusal = self._representation_gram_refusal()
        representation_grads = []
        for i, t in enumerate(tasks):
            own = tf.nest.map_structure(lambda g, ref: tf.zeros_like(ref) if g is None else g, per_task[i][0], z[t])
            full = {s: own if s == t else tf.nest.map_structure(tf.zeros_like, z[s]) for s in z}
            representation_grads.append(TaskRepresentationGradient(full, refusal=refusal, task=t))
        heads = {t: list(per_task[i][1]) for i, t in enumerate(tasks)}
        return losses, representation_grads, heads

    def _differentiate_heads(self, copies):
        """The real head passes, head t on `copies[t]`: (losses, [T] (dL_t/dcopy_t, dL_t/dtheta^t)).

        One backward pass through every head (gradients of the scaled losses),
        or one per task when heads share variables, so each head gradient
        stays its own task's. Sets `predictions` and `losses`.
        """
        tasks = self.task_names
        head_variables = [self.head_variables[t] for t in tasks]
        flat_ids = [id(v) for vs in head_variables for v in vs]
        overlapping = len(flat_ids) != len(set(flat_ids))
        with tf.GradientTape(persistent=overlapping) as tape:
            tape.watch(tf.nest.flatten(copies))
            predictions, losses = self._heads_and_losses(copies)
            scaled = [self.scale(loss) for loss in losses]
            total = tf.add_n(scaled)
        self.predictions, self.losses = predictions, tf.stack(losses)
        if overlapping:
            per_task = [tape.gradient(scaled[i], (copies[t], head_variables[i])) for i, t in enumerate(tasks)]
            del tape
        else:
            z_grads, head_grads = tape.gradient(total, ([copies[t] for t in tasks], head_variables))
            per_task = list(zip(z_grads, head_grads))
        return losses, per_task

    def task_loss(self, task, prediction):
        """The unscaled float32 loss of `task` (replica-scaled, as every Keras loss)."""
        loss = self.loss_fns[task](self.y[task], prediction, sample_weight=self.sample_weight[task])
        return tf.cast(loss, tf.float32)

    def value_and_gradients(self, function, arguments):
        """((value, aux), gradients): a tape watching `arguments` around `function(arguments)`; None as zeros.

        Each argument is watched through its own identity copy, so one tensor
        passed twice (z for two heads) gets two gradients, not their sum.
        """
        with tf.GradientTape() as tape:
            arguments = tf.nest.map_structure(tf.identity, list(arguments))
            tape.watch(tf.nest.flatten(arguments))
            value, aux = function(arguments)
        gradients = tape.gradient(value, arguments)
        return (value, aux), tf.nest.map_structure(lambda g, a: tf.zeros_like(a) if g is None else g, gradients, arguments)

    def encode_with(self, shared_values):
        """The representation computed with `shared_values` in place of theta_sh, statelessly.

        Uses Keras' `stateless_call` with the encoder's state from before the
        real forward pass, so the real variables are untouched, gradients flow
        to the tensors in `shared_values`, the pass sees the real pass's dropout
        masks, and its state updates (batch-norm statistics, seeds) are
        discarded: only the real forward pass moves them (rule 2).
        """
        return _stateless(self.encoder, list(shared_values), self._encoder_state, self.x)

    def heads_with(self, z, head_values=None, tasks=None):
        """Stateless head passes: (predictions, unscaled losses) for `tasks` (default all).

        z: one representation for every head, or a dict task -> representation.
        head_values: optional dict task -> values in place of that head's
        trainable variables (default: their current values, read in the pass).
        Like `encode_with`, nothing here moves any state.
        """
        tasks = self.task_names if tasks is None else tuple(tasks)
        predictions, losses = {}, []
        for t in tasks:
            values = (head_values or {}).get(t)
            if values is None:
                values = [v.value for v in self.head_variables[t]]
            inputs = z[t] if isinstance(z, dict) else z
            # A dict of per-task copies of a per-task representation: head t reads z_t.
            inputs = head_input(inputs, t, self.task_names)
            predictions[t] = _stateless(self.heads[t], list(values), self._head_state[t], inputs)
            losses.append(self.task_loss(t, predictions[t]))
        return predictions, losses

    # -- loss scaling ---------------------------------------------------------------------

    def scale(self, objective):
        """S * objective: what to differentiate so the loss-scaling optimizer gets what it expects."""
        if not self.loss_scaled:
            return objective
        return objective * tf.cast(self.loss_scale, objective.dtype)

    def unscale(self, gradients):
        """Gradients of scaled losses divided by S (nested; None entries kept): true gradients."""
        if not self.loss_scaled:
            return gradients
        return tf.nest.map_structure(
            lambda g: None if g is None else g / tf.cast(self.loss_scale, g.dtype), gradients
        )

    # -- labels -------------------------------------------------------------------------

    @property
    def task_mask(self):
        """[T] bool: the tasks with at least one labelled example in the global batch (rule 3).

        A task is unlabelled when its total sample weight is zero or when its
        loss ignores every target (`ignore_class` of a Keras cross-entropy, or a
        loss's own `labelled_count`); see `labelled_count`.
        """
        if self._task_mask is None:
            counts = tf.stack([
                labelled_count(self.loss_fns[t], self.y[t], self.sample_weight[t]) for t in self.task_names
            ])
            self._task_mask = self.all_reduce_sum(counts) > 0.0
        return self._task_mask

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
        """[T] unscaled task losses of the global batch (the replica-scaled losses summed)."""
        return self.all_reduce_sum(tf.stack(losses))

    @property
    def learning_rate(self):
        return tf.cast(self.optimizer.learning_rate, tf.float32)


def _state_before(layer):
    return [tf.identity(v.value) for v in layer.non_trainable_variables]


def _stateless(layer, trainable_values, state, inputs):
    """`layer(inputs, training=True)` with the given variable values, moving no state."""
    # `layer(x, training=...)` drops the flag for a `call` without one;
    # `stateless_call` hands it to `call` as is.
    has_training = "training" in getattr(layer, "call_signature_parameters", ("training",))
    outputs, _ = layer.stateless_call(trainable_values, list(state), inputs, **({"training": True} if has_training else {}))
    return outputs

