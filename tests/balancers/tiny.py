"""A tiny multi-task problem with an exact float64 NumPy reference, for the balancer tests.

Model: a linear encoder z = x W + b (B x h) and T linear heads p_t = z V_t + c_t
(B x k), each with a mean-squared-error loss

    L_t = sum((p_t - y_t)^2) / (B k)     (Keras' MSE: mean over the last axis,
                                         then mean over the batch).

Its gradients, written out by hand (r_t = p_t - y_t, dP_t = 2 r_t / (B k)):

    dL_t/dV_t = z^T dP_t     dL_t/dc_t = sum_rows dP_t     dL_t/dz = dP_t V_t^T
    dL_t/dW   = x^T dL_t/dz  dL_t/db   = sum_rows dL_t/dz

The Keras side (`Linear`, `CountingEncoder`) starts from exactly the same
numbers, so one `model.fit` step with `SGD(learning_rate)` can be compared,
variable by variable, with an update worked out here from a paper's formulas.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools

import keras
import numpy as np

import mtl_tf
from tests.balancers.official_reference import official_min_norm  # noqa: F401  (moved; the tests use tiny.official_min_norm)

LEARNING_RATE = 0.1
BATCH, INPUT_DIM, HIDDEN_DIM, OUTPUT_DIM = 4, 3, 2, 2
TASKS = ("a", "b", "c", "d", "e")


# -- Keras side ------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mtl_tf_tests")
class Linear(keras.layers.Layer):
    """y = x K (+ c), starting from the given kernel (and bias)."""

    def __init__(self, kernel, bias=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_kernel = np.asarray(kernel, np.float32)
        self.initial_bias = None if bias is None else np.asarray(bias, np.float32)

    def build(self, input_shape):
        # An initializer, not an assign: the model may be built inside the traced step.
        self.kernel = self.add_weight(
            name="kernel", shape=self.initial_kernel.shape, initializer=keras.initializers.Constant(self.initial_kernel)
        )
        if self.initial_bias is not None:
            self.bias = self.add_weight(
                name="bias", shape=self.initial_bias.shape, initializer=keras.initializers.Constant(self.initial_bias)
            )

    def call(self, inputs):
        outputs = keras.ops.matmul(inputs, self.kernel)
        return outputs if self.initial_bias is None else outputs + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.initial_kernel.shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "kernel": self.initial_kernel.tolist(),
            "bias": None if self.initial_bias is None else self.initial_bias.tolist(),
        }


@keras.saving.register_keras_serializable(package="mtl_tf_tests")
class CountingEncoder(keras.layers.Layer):
    """A `Linear` encoder that counts how often its forward pass runs.

    The count is a variable incremented inside the traced step, so it counts
    executed forward passes, not traces.
    """

    def __init__(self, kernel, bias=None, **kwargs):
        super().__init__(**kwargs)
        self.linear = Linear(kernel, bias, name="linear")
        # Python-side count of `call` invocations: every forward pass placed in
        # a traced graph, including `stateless_call`s, whose variable updates
        # (and so `forward_calls` increments) Keras discards.
        self.traced_calls = 0

    def build(self, input_shape):
        self.linear.build(input_shape)
        self.forward_calls = self.add_weight(name="forward_calls", shape=(), initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        self.traced_calls += 1
        self.forward_calls.assign_add(1.0)
        return self.linear(inputs)

    def compute_output_shape(self, input_shape):
        return self.linear.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), **{k: v for k, v in self.linear.get_config().items() if k in ("kernel", "bias")}}


# -- the problem -------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """Inputs, targets and initial parameters (float64) of one tiny problem."""

    x: np.ndarray
    y: dict
    params: dict  # {"W": d x h, "b": h or None, "V": {t: h x k}, "c": {t: k or None}}

    @property
    def tasks(self):
        return tuple(self.y)

    @property
    def num_tasks(self):
        return len(self.y)


def make_setup(num_tasks=2, seed=0, bias=True, target_scales=None, conflicting=False):
    """A random tiny problem; float32-representable numbers, kept in float64.

    target_scales: per-task multipliers of the targets (unbalanced losses).
    conflicting: two tasks with the same head whose residuals are exactly
      opposite, so their gradients (w.r.t. z and w.r.t. W, b) are negatives of
      each other: a Pareto-stationary point.
    """
    rng = np.random.default_rng(seed)

    def draw(*shape, scale=1.0):
        return (scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64)

    tasks = TASKS[:num_tasks]
    params = {
        "W": draw(INPUT_DIM, HIDDEN_DIM),
        "b": draw(HIDDEN_DIM, scale=0.5) if bias else None,
        "V": {t: draw(HIDDEN_DIM, OUTPUT_DIM) for t in tasks},
        "c": {t: draw(OUTPUT_DIM, scale=0.5) if bias else None for t in tasks},
    }
    x = draw(BATCH, INPUT_DIM)
    scales = target_scales or [1.0] * num_tasks
    y = {t: draw(BATCH, OUTPUT_DIM, scale=s) for t, s in zip(tasks, scales)}
    if conflicting:
        first, second = tasks[:2]
        params["V"][second] = params["V"][first].copy()
        if bias:
            params["c"][second] = params["c"][first].copy()
        prediction = predictions(params, x)[first]
        offset = draw(BATCH, OUTPUT_DIM)
        y[first] = (prediction + offset).astype(np.float32).astype(np.float64)
        y[second] = (prediction - offset).astype(np.float32).astype(np.float64)
    return Setup(x=x, y=y, params=params)


# -- NumPy reference (float64) -----------------------------------------------------------


def representation(params, x):
    z = x @ params["W"]
    return z if params["b"] is None else z + params["b"]


def predictions(params, x):
    z = representation(params, x)
    out = {}
    for t, kernel in params["V"].items():
        p = z @ kernel
        out[t] = p if params["c"][t] is None else p + params["c"][t]
    return out


def losses(params, setup):
    """[T] task losses in task order."""
    p = predictions(params, setup.x)
    return np.array([np.mean((p[t] - setup.y[t]) ** 2) for t in setup.tasks])


def task_gradients(params, setup):
    """Per task, dict with the gradients of L_t w.r.t. W, b, z, V_t, c_t (hand-derived)."""
    z = representation(params, setup.x)
    p = predictions(params, setup.x)
    out = {}
    for t in setup.tasks:
        d_p = 2.0 * (p[t] - setup.y[t]) / p[t].size
        d_z = d_p @ params["V"][t].T
        out[t] = {
            "W": setup.x.T @ d_z,
            "b": None if params["b"] is None else d_z.sum(axis=0),
            "z": d_z,
            "V": z.T @ d_p,
            "c": None if params["c"][t] is None else d_p.sum(axis=0),
        }
    return out


def shared_vector(grad):
    """The shared-parameter gradient of one task as one flat vector (W then b)."""
    parts = [grad["W"].ravel()]
    if grad["b"] is not None:
        parts.append(grad["b"].ravel())
    return np.concatenate(parts)


def shared_step(params, direction_W, direction_b, lr=LEARNING_RATE):
    """params with theta_sh <- theta_sh - lr * direction (a copy)."""
    new = copy.deepcopy(params)
    new["W"] = params["W"] - lr * direction_W
    if params["b"] is not None:
        new["b"] = params["b"] - lr * direction_b
    return new


def head_step(params, task, grad_V, grad_c, lr=LEARNING_RATE):
    """Moves head `task` in place: theta^t <- theta^t - lr * gradient."""
    params["V"][task] = params["V"][task] - lr * grad_V
    if params["c"][task] is not None:
        params["c"][task] = params["c"][task] - lr * grad_c


def weighted_step(params, setup, weights, lr=LEARNING_RATE):
    """One SGD step on sum_t w_t L_t (every variable; heads get w_t times their gradient)."""
    grads = task_gradients(params, setup)
    new = shared_step(
        params,
        sum(w * grads[t]["W"] for w, t in zip(weights, setup.tasks)),
        None if params["b"] is None else sum(w * grads[t]["b"] for w, t in zip(weights, setup.tasks)),
        lr,
    )
    for w, t in zip(weights, setup.tasks):
        head_step(new, t, w * grads[t]["V"], None if grads[t]["c"] is None else w * grads[t]["c"], lr)
    return new


def exact_min_norm(gram):
    """alpha on the simplex minimising alpha^T M alpha, by enumerating every face.

    On each face S the affine minimiser solves [M_S 1; 1^T 0] [a; l] = [0; 1]
    (least squares when singular); the best feasible one over all faces is the
    exact optimum. Fine for the handful of points these tests use.
    """
    gram = np.asarray(gram, np.float64)
    n = gram.shape[0]
    best, best_value = None, np.inf
    for size in range(1, n + 1):
        for face in itertools.combinations(range(n), size):
            idx = list(face)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(idx, idx)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            # A face is feasible unless its solution leaves the simplex by more than its own rounding:
            # 1e-12 (4500 eps) on entries <= 1; the sum is met to 1e-9 also for singular faces, where
            # lstsq's minimum-norm answer meets the equality only to cond * eps.
            if not (abs(solution.sum() - 1.0) < 1e-9 and np.all(solution >= -1e-12)):
                continue
            alpha = np.zeros(n)
            alpha[idx] = np.clip(solution, 0.0, None)
            alpha /= alpha.sum()
            value = alpha @ gram @ alpha
            if best is None or value < best_value:
                best, best_value = alpha, value
    return best


def two_task_alpha(gram):
    """Sener & Koltun eq. 4 / Algorithm 1: gamma = clip((g2 - g1)^T g2 / ||g1 - g2||^2, 0, 1)."""
    a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
    gamma = np.clip((c - b) / (a - 2 * b + c), 0.0, 1.0)
    return np.array([gamma, 1.0 - gamma])


# -- running the Keras model ---------------------------------------------------------------


def build_model(setup, balancer, options=None, tasks=None, counting=False, optimizer=None):
    """A compiled MultiTaskModel holding `setup.params`, heads in the order `tasks`.

    optimizer: a Keras optimizer config dict (`keras.optimizers.serialize`);
    default plain SGD at `LEARNING_RATE`.
    """
    params = setup.params
    encoder_cls = CountingEncoder if counting else Linear
    encoder = encoder_cls(params["W"], params["b"], name="encoder")
    heads = {t: Linear(params["V"][t], params["c"][t], name=f"head_{t}") for t in (tasks or setup.tasks)}
    model = mtl_tf.MultiTaskModel(
        encoder=encoder,
        heads=heads,
        losses={t: keras.losses.MeanSquaredError() for t in heads},
        balancer=balancer,
        balancer_options=options,
    )
    if optimizer is None:
        optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE)
    else:
        optimizer = keras.optimizers.deserialize(copy.deepcopy(optimizer))
    model.compile(optimizer=optimizer)
    return model


class StepLogs(keras.callbacks.Callback):
    """Collects the logs of every training batch as floats."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(np.asarray(v)) for k, v in (logs or {}).items()})


def fit(model, setup, epochs=1):
    """`model.fit` for `epochs` epochs of one full batch; returns the per-step logs (list of dicts).

    The batch comes as a one-element `tf.data.Dataset`: the same step as
    `fit(x, y, batch_size=B, shuffle=False)` (test_uniform checks that path),
    without Keras re-building an input pipeline from arrays on every call.
    """
    recorder = StepLogs()
    x = setup.x.astype(np.float32)
    y = {t: setup.y[t].astype(np.float32) for t in model.task_names}
    import tensorflow as tf  # here only: the reference half of this module runs under every backend

    batches = tf.data.Dataset.from_tensors((x, y))
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=[recorder])
    return recorder.steps


_MODELS = {}


def run(setup, balancer, options=None, epochs=1, tasks=None, optimizer=None):
    """Fits `epochs` one-batch steps from `setup.params`; returns (model, per-step logs).

    Models are cached per (method, options, head order, shapes): a cached model
    gets the setup's parameters loaded and its balancer and optimizer state
    reset to their initial values, so it behaves exactly like a new one while
    its traced step is reused (tracing costs ~10x the tiny step).
    """
    tasks = tuple(tasks or setup.tasks)
    key = (balancer, repr(sorted((options or {}).items())), tasks, setup.params["b"] is None, setup.x.shape,
           repr(optimizer))
    if key not in _MODELS:
        model = build_model(setup, balancer, options, tasks=tasks, optimizer=optimizer)
        model.build(setup.x.shape)
        model.optimizer.build(model.trainable_variables)
        state = list(model.balancer.variables) + list(model.optimizer.variables)
        if model.head_optimizer is not None:
            state += list(model.head_optimizer.variables)
        _MODELS[key] = (model, state, [np.array(keras.ops.convert_to_numpy(v)) for v in state])
    model, state, initial = _MODELS[key]
    load_params(model, setup.params)
    for variable, value in zip(state, initial):
        variable.assign(value)
    return model, fit(model, setup, epochs)


def load_params(model, params):
    """Assigns reference parameters to a built model's variables.

    Lets one compiled model (and its traced step) serve several problems of the
    same shapes: a new trace costs far more than the tiny step itself.
    """
    encoder = model.encoder.linear if isinstance(model.encoder, CountingEncoder) else model.encoder
    encoder.kernel.assign(params["W"].astype(np.float32))
    if params["b"] is not None:
        encoder.bias.assign(params["b"].astype(np.float32))
    for t, head in model.heads.items():
        head.kernel.assign(params["V"][t].astype(np.float32))
        if params["c"][t] is not None:
            head.bias.assign(params["c"][t].astype(np.float32))


def model_params(model):
    """The model's current variables in the reference layout (float64)."""

    def value(v):
        return np.asarray(keras.ops.convert_to_numpy(v), np.float64)

    encoder = model.encoder.linear if isinstance(model.encoder, CountingEncoder) else model.encoder
    return {
        "W": value(encoder.kernel),
        "b": value(encoder.bias) if encoder.initial_bias is not None else None,
        "V": {t: value(h.kernel) for t, h in model.heads.items()},
        "c": {t: value(h.bias) if h.initial_bias is not None else None for t, h in model.heads.items()},
    }


def assert_params_close(model, expected, atol=1e-5, rtol=1e-5):
    """Every variable of `model` equals the reference parameters `expected`."""
    actual = model_params(model)
    pairs = [("W", actual["W"], expected["W"]), ("b", actual["b"], expected["b"])]
    for t in model.task_names:
        pairs += [(f"V[{t}]", actual["V"][t], expected["V"][t]), (f"c[{t}]", actual["c"][t], expected["c"][t])]
    for name, got, want in pairs:
        if want is None:
            assert got is None, name
            continue
        np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=f"variable {name}")


def logged_weights(step_logs, tasks):
    """[T] logged `{task}_weight` of one step."""
    return np.array([step_logs[f"{t}_weight"] for t in tasks])


# -- a task whose loss is exactly 0 ----------------------------------------------------------


@keras.saving.register_keras_serializable(package="mtl_tf_tests")
class TimesZero(keras.layers.Layer):
    """x * 0: a head whose mse against a target of 0 is exactly 0 at every step (and so is its gradient)."""

    def call(self, inputs):
        return inputs * 0.0


def zero_loss_model(method, options=None, optimizer=None, steps_per_execution=1):
    """Two tasks on a linear encoder: `a` an ordinary mse (loss >= 1), `b` exactly 0 at every step.

    Returns (model, (x, y)) for one batch. `a`'s targets are +1 and -1 for the
    same inputs, so its loss stays >= 1 whatever the weights, and its Hessian
    is small (inputs 0.1, no biases: its largest eigenvalue is about 0.3), so
    SGD(1.0) is stable on it for any task weight up to ~6. `b`'s head is a
    Dense layer times 0 against zeros: loss and gradients exactly 0.
    """
    ones = keras.initializers.Ones()
    encoder = keras.layers.Dense(2, use_bias=False, kernel_initializer=ones, name="encoder")
    heads = {
        "a": keras.layers.Dense(1, use_bias=False, kernel_initializer=ones, name="head_a"),
        "b": keras.Sequential([keras.layers.Dense(1, use_bias=False, kernel_initializer=ones), TimesZero()],
                              name="head_b"),
    }
    model = mtl_tf.MultiTaskModel(encoder, heads, {"a": "mse", "b": "mse"}, balancer=method,
                                  balancer_options=options)
    # No XLA: compiling costs more than the 1,000 tiny steps it would speed up.
    model.compile(optimizer=optimizer or keras.optimizers.SGD(1.0), steps_per_execution=steps_per_execution,
                  jit_compile=False)
    x = np.full((4, 2), 0.1, "float32")
    y = {"a": np.array([[1.0], [-1.0], [1.0], [-1.0]], "float32"), "b": np.zeros((4, 1), "float32")}
    return model, (x, y)
