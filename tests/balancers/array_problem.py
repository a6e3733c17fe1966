"""The balancer contract on the tiny linear problem, with hand-derived gradients, on any Keras backend.

`ArrayProblem` implements `mtl_tf.balancers.base.MultiTaskProblem` for
`tests.balancers.tiny` (z = x W + b, heads p_t = z V_t + c_t, mean squared
errors) without a training step: the forward pass is `keras.ops`, every gradient
of a task loss is the closed form of `tiny.task_gradients` written in
`keras.ops`, and only what a balancer itself supplies (its objective of the
losses, a stateless function for `value_and_gradients`) is differentiated by the
backend (`backend_value_and_grad`: a tape on TensorFlow, `jax.value_and_grad`
on JAX). So a balancer's `compute_update` runs unchanged on every backend, and
`tests/engines/same_values_cases.py` compares what it returns under TensorFlow
and under JAX. It is a test harness, not an engine: one replica, no layers'
state, no loss-scaling optimizer (a fixed `loss_scale` may be given).
"""

from __future__ import annotations

import types

import keras
import numpy as np
from keras import ops

from mtl_tf.balancers.base import MultiTaskProblem

LEARNING_RATE = 0.1


def backend_value_and_grad(function, arguments):
    """((value, aux), [d value / d argument]) of `function(arguments) -> (scalar, aux)`, zeros for None.

    TensorFlow: a tape watching identity copies of the arguments. JAX:
    `jax.value_and_grad(..., has_aux=True)`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            arguments = [tf.identity(a) for a in arguments]
            tape.watch(arguments)
            value, aux = function(arguments)
        grads = tape.gradient(value, arguments)
        return (value, aux), [tf.zeros_like(a) if g is None else g for g, a in zip(grads, arguments)]
    if backend == "jax":
        import jax

        return jax.value_and_grad(lambda args: function(list(args)), has_aux=True)(list(arguments))
    raise NotImplementedError(backend)


class ArrayProblem(MultiTaskProblem):
    """One batch of a `tiny.Setup` as a balancer sees it (see the module docstring).

    Args:
      setup: a `tiny.Setup`; its parameters become float32 Keras variables
        (`variables`, in the layout of `tiny`), updated by `apply`.
      method: the balancer (its own trainable variables are differentiated by
        `objective_gradients`; its state assigned inside an objective is kept).
      mask: optional [T] bools, the labelled tasks (default all).
      loss_scale: a fixed S (default 1: `loss_scaled` False).
    """

    def __init__(self, setup, method=None, mask=None, loss_scale=None, variables=None):
        self.setup = setup
        self.method = method
        self.task_names = tuple(setup.tasks)
        self.encoder = types.SimpleNamespace(name="linear")
        self.x = ops.convert_to_tensor(setup.x.astype(np.float32))
        self.y = {t: ops.convert_to_tensor(setup.y[t].astype(np.float32)) for t in self.task_names}
        self.sample_weight = {t: None for t in self.task_names}
        self.optimizer = None
        self.variables = variables or make_variables(setup)
        self.shared_variables = [self.variables["W"], self.variables["b"]]
        self.head_variables = {t: [self.variables["V"][t], self.variables["c"][t]] for t in self.task_names}
        self.loss_scaled = loss_scale is not None
        self.loss_scale = ops.convert_to_tensor(np.float32(1.0 if loss_scale is None else loss_scale))
        self._mask = ops.convert_to_tensor(np.ones(len(self.task_names), bool) if mask is None else np.asarray(mask))
        self.predictions = self.losses = None

    # -- the model, in keras.ops -----------------------------------------------------------

    def encode_with(self, shared_values):
        weight, bias = shared_values
        return ops.matmul(self.x, weight) + bias

    def _head(self, task, z, values=None):
        kernel, bias = values if values is not None else [v.value for v in self.head_variables[task]]
        return ops.matmul(z, kernel) + bias

    def task_loss(self, task, prediction):
        return ops.mean(ops.square(prediction - self.y[task]))

    def heads_with(self, z, head_values=None, tasks=None):
        tasks = self.task_names if tasks is None else tuple(tasks)
        predictions, losses = {}, []
        for t in tasks:
            inputs = z[t] if isinstance(z, dict) else z
            predictions[t] = self._head(t, inputs, (head_values or {}).get(t))
            losses.append(self.task_loss(t, predictions[t]))
        return predictions, losses

    def _real_pass(self):
        z = self.encode_with([v.value for v in self.shared_variables])
        predictions, losses = self.heads_with(z)
        self.predictions, self.losses = predictions, ops.stack(losses)
        return z, predictions, losses

    def _task_gradients(self, z, predictions):
        """Per task (dL_t/dz, [dL_t/dV_t, dL_t/dc_t]), the closed forms of `tiny.task_gradients`."""
        out = []
        for t in self.task_names:
            residual = predictions[t] - self.y[t]
            d_p = 2.0 * residual / float(np.prod(residual.shape))
            kernel = self.head_variables[t][0].value
            out.append((ops.matmul(d_p, ops.transpose(kernel)), [ops.matmul(ops.transpose(z), d_p), ops.sum(d_p, axis=0)]))
        return out

    def _shared_from(self, d_z):
        return [ops.matmul(ops.transpose(self.x), d_z), ops.sum(d_z, axis=0)]

    # -- the contract ------------------------------------------------------------------------

    def forward(self):
        return self._real_pass()

    def objective_gradients(self, objective, own=()):
        own = list(own)
        z, predictions, losses = self._real_pass()
        state = [v for v in getattr(self.method, "variables", []) if not any(v is o for o in own)]

        def value(arguments):
            stacked, own_values = arguments[0], arguments[1:]
            with keras.StatelessScope(state_mapping=list(zip(own, own_values))) as scope:
                result, extra = objective(stacked)
                updates = [scope.get_current_value(v) for v in state]
            return self.scale(result), (extra, updates)

        (_, (extra, updates)), grads = backend_value_and_grad(value, [self.losses] + [v.value for v in own])
        for variable, update in zip(state, updates):
            if update is not None:
                variable.assign(update)
        d_losses, own_gradients = grads[0], list(grads[1:])
        per_task = self._task_gradients(z, predictions)
        shared = None
        heads = {}
        for i, t in enumerate(self.task_names):
            d_z, head = per_task[i]
            term = d_z * d_losses[i]
            shared = term if shared is None else shared + term
            heads[t] = [g * d_losses[i] for g in head]
        return self.losses, self._shared_from(shared), heads, own_gradients, extra

    def encode(self, passes=1):
        self._z = self.encode_with([v.value for v in self.shared_variables])
        return self._z

    def representation_gradients(self, z):
        predictions, losses = self.heads_with(z)
        self.predictions, self.losses = predictions, ops.stack(losses)
        per_task = self._task_gradients(z, predictions)
        scale = self.loss_scale
        return (
            losses,
            [d_z * scale for d_z, _ in per_task],
            {t: [g * scale for g in per_task[i][1]] for i, t in enumerate(self.task_names)},
        )

    def encoder_backward(self, cotangent, variables=None):
        gradients = self._shared_from(cotangent)
        if variables is None:
            return gradients
        return [gradients[[id(v) for v in self.shared_variables].index(id(variable))] for variable in variables]

    def encoder_backward_stacked(self, cotangents):
        return [ops.einsum("bi,tbh->tih", self.x, cotangents), ops.sum(cotangents, axis=1)]

    def value_and_gradients(self, function, arguments):
        return backend_value_and_grad(function, list(arguments))

    def scale(self, objective):
        return objective * ops.cast(self.loss_scale, objective.dtype) if self.loss_scaled else objective

    def unscale(self, gradients):
        if not self.loss_scaled:
            return gradients
        return keras.tree.map_structure(lambda g: None if g is None else g / self.loss_scale, gradients)

    @property
    def task_mask(self):
        return self._mask

    @property
    def num_replicas(self):
        return 1

    def all_reduce_sum(self, values):
        return values

    def global_losses(self, losses):
        return ops.stack(list(losses))

    @property
    def learning_rate(self):
        return ops.convert_to_tensor(np.float32(LEARNING_RATE))


def make_variables(setup):
    """The setup's parameters as float32 Keras variables, in `tiny`'s layout (every bias present)."""
    params = setup.params

    def variable(value, name):
        return keras.Variable(np.asarray(value, np.float32), name=name)

    return {
        "W": variable(params["W"], "W"),
        "b": variable(params["b"], "b"),
        "V": {t: variable(params["V"][t], f"V_{t}") for t in setup.tasks},
        "c": {t: variable(params["c"][t], f"c_{t}") for t in setup.tasks},
    }


def sgd_step(problem, update, method, learning_rate=LEARNING_RATE):
    """Applies `update` by plain SGD: shared, heads (or `head_phase` after the shared step), own variables."""

    def descend(variables, gradients):
        for variable, gradient in zip(variables, gradients):
            if gradient is not None:
                variable.assign(variable.value - learning_rate * ops.cast(gradient, variable.dtype))

    descend(problem.shared_variables, update.shared)
    heads = update.heads if update.heads is not None else update.head_phase()
    for t in problem.task_names:
        descend(problem.head_variables[t], heads[t])
    descend(method.trainable_variables, update.own)
