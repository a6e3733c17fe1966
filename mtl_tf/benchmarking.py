"""What every balancing method costs per training step, and the min-norm solver alone.

Speed is half of MGDA-UB's claim (Sener & Koltun, "Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, section 3.3 and Table 2: one
forward pass and one encoder backward pass, so a step costs about what uniform
scaling costs, against T encoder backward passes for exact MGDA). This module
turns that claim into numbers measured in one process; `launch/benchmark.py`
is its command line.

Training steps (`benchmark_steps`)
  * One `MultiTaskModel` per method on the same model shape, built from the
    same seed, compiled with the same optimizer and `jit_compile` setting.
    What is timed is `model.train_function`, the compiled function `fit`
    calls, on one fixed batch already in device memory, so the input pipeline
    is not part of the figure (random inputs and labels: only the cost of a
    step is measured, never an accuracy).
  * Warm-up: the first call traces (and with XLA compiles) the step; its wall
    time is reported as `first_step_seconds`; then `warmup` more steps.
  * One sample = `steps` consecutive steps followed by reading the loss back
    to the host (which waits for every queued kernel on an asynchronous
    device), divided by `steps`. Samples are taken in rounds: each round takes
    one sample of every method, in alternating order, so that a change of the
    machine's load reaches every method alike. `repeats` rounds.
  * Reported per method: median, quartiles, min and max of the wall-clock
    samples (`time.perf_counter`) and the median of the process CPU time
    (`time.process_time`, all threads). On a machine shared with other jobs
    the wall time includes waiting for a core; the CPU time is the steadier
    measure of the work a step does (it also counts the worker threads'
    spinning, equally for every method). Ratios to `uniform` are ratios of
    medians of samples taken in the same rounds.
  * Memory: the peak of `tf.config.experimental.get_memory_info(device)` over
    `memory_steps` steps (2) after `reset_memory_stats`, minus the bytes allocated before
    them: the step's transient memory (activations kept for the backward pass,
    gradients, Jacobians, temporaries of XLA programs). It works on the CPU in
    TensorFlow 2.21. The persistent state (weights, optimizer slots, method
    state) is `state_bytes`. Where the allocator statistics are unavailable,
    the process's resident-set high-water mark is used instead (`VmHWM` of
    /proc/self/status, reset through /proc/self/clear_refs), minus the resident
    set before the step; `memory_source` names which.

Solver (`benchmark_solver`)
  Random Gram matrices M = G G^T of T gradients for three cases: `spread`
  (D = 10 T independent gradients of norms spread over two decades: interior
  optimum, alpha^T M alpha > 0), `correlated` (a common component plus noise:
  the optimum lies on a face of the simplex) and `conflicting` (D = T // 2
  dimensions, fewer than tasks: the hull contains 0 for most draws, optimum 0).
  A batch of problems is solved inside one compiled `tf.function`, one solve
  after the other (each waits for the previous result), so the time per solve
  is device time without the per-call dispatch. Iterations come from
  `mtl_tf.solvers.min_norm_weights_with_info`. The objective ||G^T alpha||^2
  is compared in float64 with an exact QP solution (`exact_min_norm`: scipy's
  Lawson-Hanson NNLS on the lifted points (g_t, 1), then a least-squares polish
  on its support).

Model shapes (`model_shape`)
  * `multilenet`: Sener's MultiLeNet (`mtl_tf.nets.lenet`), 28x28x1, batch 256,
    2 tasks, SGD 0.05 with momentum 0.9, accuracy metrics.
  * `resnet18`: Sener's CelebA ResNet-18 (`mtl_tf.nets.resnet`), 64x64x3,
    40 linear heads, Adam 5e-4, accuracy metrics. The paper's batch is 256; the
    default here is 8, so that exact MGDA's 40 encoder backward passes fit in a
    CPU benchmark (`batch_size` overrides it).
  * `cityscapes`: Sener's Cityscapes model (`mtl_tf.nets.pspnet`: ResNet-50
    dilated to output stride 8, one pyramid-pooling decoder per task) for
    segmentation (19 classes), instance offsets (2) and disparity (1) with the
    masked losses of `mtl_tf.losses`, Adam 5e-4, at a reduced resolution of
    64x128 (the paper trains at 256x512), batch 2.
  The `smoke` variants keep the structure at toy sizes (a ResNet with one block
  per stage and width 4 on 16x16 inputs with 5 tasks; for Cityscapes a three-layer strided
  convolution encoder stands in for the ResNet-50, with small decoders); they
  check the pipeline, their figures mean nothing.

Method labels: a method name, optionally with options, `name:key=value:...`
(values parsed as Python literals), e.g. `mgda:jacobian=True`. Every other
option keeps its default; `static` without weights gets weight 1 per task.
"""

from __future__ import annotations

import ast
import dataclasses
import gc
import os
import statistics
import time
from typing import Any, Callable

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from mtl_tf import balancers, solvers
from mtl_tf.model import MultiTaskModel

SHAPES = ("multilenet", "resnet18", "cityscapes")
SOLVER_TASKS = (2, 3, 10, 40, 100)
SOLVER_CASES = ("spread", "correlated", "conflicting")
BASELINE = "uniform"


# ----------------------------------------------------------------------------
# Model shapes.


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """A model to time: how to build it, one batch for it, and its default schedule.

    Attributes:
      name: the shape's name (with ` (smoke)` for the smoke variant).
      description: what the shape is, for the table.
      task_names: the tasks, in head order.
      batch_size: examples per step.
      input_shape: the shape of one input example.
      build: `fn() -> (encoder, heads, losses, metrics)`, fresh and unbuilt.
      targets: `fn(rng, batch_size) -> {task: numpy array}`.
      optimizer: `fn() -> keras optimizer`.
      steps, repeats: default schedule (steps per sample, samples per method).
    """

    name: str
    description: str
    task_names: tuple
    batch_size: int
    input_shape: tuple
    build: Callable[[], tuple]
    targets: Callable[[np.random.Generator, int], dict]
    optimizer: Callable[[], Any]
    steps: int
    repeats: int

    @property
    def num_tasks(self):
        return len(self.task_names)

    def batch(self, seed=0):
        """One fixed batch `(x, {task: target})` as device tensors."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch_size, *self.input_shape)).astype(np.float32)
        y = self.targets(rng, self.batch_size)
        return tf.constant(x), {t: tf.constant(y[t]) for t in self.task_names}


def _class_targets(task_names, num_classes, spatial=()):
    def targets(rng, batch_size):
        return {t: rng.integers(0, num_classes, size=(batch_size, *spatial)).astype(np.int32) for t in task_names}

    return targets


def _multilenet(smoke):
    from mtl_tf.nets import lenet

    tasks = ("left", "right")

    def build():
        encoder = lenet.multi_lenet_encoder()
        heads = {t: lenet.multi_lenet_head(10, name=f"{t}_head") for t in tasks}
        losses = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}
        return encoder, heads, losses, {t: ["accuracy"] for t in tasks}

    return ModelShape(
        name="multilenet",
        description="MultiLeNet (Sener), 28x28x1",
        task_names=tasks,
        batch_size=16 if smoke else 256,
        input_shape=(28, 28, 1),
        build=build,
        targets=_class_targets(tasks, 10),
        optimizer=lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        steps=2 if smoke else 10,
        repeats=3 if smoke else 15,
    )


def _resnet18(smoke):
    from mtl_tf.nets import resnet

    num_tasks = 5 if smoke else 40
    tasks = tuple(f"attribute_{i:02d}" for i in range(num_tasks))
    size = 16 if smoke else 64

    def build():
        if smoke:
            encoder = resnet.ResNetEncoder(blocks=(1, 1, 1, 1), width=4, pool_size=2, seed=0, name="resnet_encoder")
        else:
            encoder = resnet.resnet18_encoder(seed=0)
        heads = {t: resnet.attribute_head(2, seed=1000 + i, name=f"{t}_head") for i, t in enumerate(tasks)}
        losses = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}
        return encoder, heads, losses, {t: ["accuracy"] for t in tasks}

    return ModelShape(
        name="resnet18",
        description=(
            f"ResNet-10 stand-in (one block per stage, width 4), {size}x{size}x3" if smoke
            else f"ResNet-18 (Sener's CelebA net), {size}x{size}x3"
        ),
        task_names=tasks,
        batch_size=4 if smoke else 8,
        input_shape=(size, size, 3),
        build=build,
        targets=_class_targets(tasks, 2),
        optimizer=lambda: keras.optimizers.Adam(5e-4),
        steps=1,
        repeats=3 if smoke else 5,
    )


class _SmokeDenseEncoder(keras.layers.Layer):
    """Three stride-2 convolutions: output stride 8, like the dilated ResNet-50 (smoke only)."""

    def __init__(self, channels=8, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.convs = [
            keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
            for i in range(3)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _cityscapes(smoke):
    from mtl_tf import losses as dense_losses
    from mtl_tf.nets import pspnet

    tasks = ("segmentation", "instance", "disparity")
    outputs = {"segmentation": 19, "instance": 2, "disparity": 1}
    height, width = (32, 64) if smoke else (64, 128)
    feature_size = (height // 8, width // 8)

    def build():
        if smoke:
            encoder = _SmokeDenseEncoder(name="smoke_encoder")
            heads = {t: pspnet.pyramid_pooling_decoder(outputs[t], channels=4, name=f"{t}_decoder") for t in tasks}
        else:
            encoder = pspnet.dilated_resnet50_encoder()
            heads = {t: pspnet.pyramid_pooling_decoder(outputs[t], name=f"{t}_decoder") for t in tasks}
        losses = {
            "segmentation": dense_losses.MaskedSparseCategoricalCrossentropy(),
            "instance": dense_losses.MaskedL1(invalid_value=dense_losses.INVALID_OFFSET),
            "disparity": dense_losses.MaskedL1(),
        }
        return encoder, heads, losses, None

    def targets(rng, batch_size):
        return {
            "segmentation": rng.integers(0, 19, size=(batch_size, *feature_size)).astype(np.int32),
            "instance": rng.normal(0.0, 10.0, size=(batch_size, *feature_size, 2)).astype(np.float32),
            "disparity": rng.uniform(1.0, 100.0, size=(batch_size, *feature_size, 1)).astype(np.float32),
        }

    return ModelShape(
        name="cityscapes",
        description=(
            "Cityscapes 3 tasks, small conv encoder stand-in, " if smoke else "Cityscapes 3 tasks, dilated ResNet-50 + PSP decoders, "
        ) + f"{height}x{width}x3",
        task_names=tasks,
        batch_size=2,
        input_shape=(height, width, 3),
        build=build,
        targets=targets,
        optimizer=lambda: keras.optimizers.Adam(5e-4),
        steps=1,
        repeats=3 if smoke else 5,
    )


_SHAPE_BUILDERS = {"multilenet": _multilenet, "resnet18": _resnet18, "cityscapes": _cityscapes}


def model_shape(name, smoke=False, batch_size=None) -> ModelShape:
    """The named model shape (see the module docstring); `batch_size` overrides its default."""
    if name not in _SHAPE_BUILDERS:
        raise ValueError(f"unknown model shape {name!r}; expected one of {list(SHAPES)}")
    shape = _SHAPE_BUILDERS[name](smoke)
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ValueError(f"batch size of shape {name!r} must be a positive integer; got {batch_size}")
        shape = dataclasses.replace(shape, batch_size=int(batch_size))
    if smoke:
        shape = dataclasses.replace(shape, name=f"{name} (smoke)")
    return shape


# ----------------------------------------------------------------------------
# Method labels.


# Options of a method label that set up the step rather than the balancer:
# `policy` (a Keras dtype policy, e.g. mixed_float16) and `loss_scaling`
# (False: under mixed_float16, train with the plain optimizer, no loss scale,
# to isolate what the scaling itself costs).
STEP_OPTIONS = ("policy", "loss_scaling")


def parse_method(label):
    """`"mgda:jacobian=True"` -> ("mgda", {"jacobian": True}); checks the name and options.

    `policy=...` and `loss_scaling=...` (see `STEP_OPTIONS`) are accepted too;
    `build_model` takes them out.
    """
    name, *parts = str(label).split(":")
    if name not in balancers.available():
        raise ValueError(f"unknown balancing method {name!r} in {label!r}; expected one of {balancers.available()}")
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {part!r} in {label!r} must be key=value, e.g. mgda:jacobian=True")
        if key not in balancers.option_names(name) and key not in STEP_OPTIONS:
            raise ValueError(
                f"method {name!r} has no option {key!r} (in {label!r}); its options are {list(balancers.option_names(name))}"
            )
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return name, options


# ----------------------------------------------------------------------------
# Memory.


class _AllocatorMemory:
    """Peak bytes of TensorFlow's allocator on `device` during a call."""

    def __init__(self, device):
        self.device = device
        self.source = f"tf.config.experimental.get_memory_info('{device}') peak above the bytes in use before the step"

    def measure(self, fn):
        gc.collect()
        tf.config.experimental.reset_memory_stats(self.device)
        before = tf.config.experimental.get_memory_info(self.device)["current"]
        fn()
        return int(tf.config.experimental.get_memory_info(self.device)["peak"] - before)


class _ResidentMemory:
    """Growth of the process's resident-set high-water mark during a call (Linux)."""

    source = "process resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs) above the resident set before the step"

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"/proc/self/status has no {field} line")

    def measure(self, fn):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        before = self._status("VmRSS")
        fn()
        return int(self._status("VmHWM") - before)


def memory_meter():
    """The allocator statistics of the first GPU (else the CPU), or the RSS high-water mark."""
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    try:
        tf.config.experimental.get_memory_info(device)
        tf.config.experimental.reset_memory_stats(device)
        return _AllocatorMemory(device)
    except (ValueError, RuntimeError, tf.errors.OpError):
        return _ResidentMemory()


def _state_bytes(model):
    variables = {id(v): v for v in [*model.variables, *model.optimizer.variables]}
    return int(sum(np.prod(v.shape, dtype=np.int64) * tf.as_dtype(v.dtype).size for v in variables.values()))


# ----------------------------------------------------------------------------
# Step timing.


def _wait(logs):
    # Reading a value back waits for every kernel the step queued.
    float(np.asarray(logs["loss"]))


def build_model(shape: ModelShape, method_label, jit_compile, seed=0):
    """A compiled MultiTaskModel of `shape` with the labelled method, train function made."""
    name, options = parse_method(method_label)
    policy = options.pop("policy", None)
    loss_scaling = bool(options.pop("loss_scaling", True))
    if name == "static" and "weights" not in options:
        # Lee & Son's "ordinary" baseline: every task weight 1.
        options["weights"] = [1.0] * shape.num_tasks
    keras.utils.set_random_seed(seed)
    previous = keras.mixed_precision.global_policy()
    if policy is not None:
        keras.mixed_precision.set_global_policy(policy)
    try:
        encoder, heads, losses, metrics = shape.build()
        model = MultiTaskModel(encoder, heads, losses, metrics, balancer=name, balancer_options=options)
        model.compile(optimizer=shape.optimizer(), jit_compile=bool(jit_compile))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if not loss_scaling and isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        model.optimizer = model.optimizer.inner_optimizer
    model.make_train_function()
    return model


def _summary(samples):
    a = np.asarray(samples, np.float64)
    return {
        "median": float(np.median(a)),
        "p25": float(np.percentile(a, 25)),
        "p75": float(np.percentile(a, 75)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def benchmark_steps(
    shape: ModelShape,
    methods,
    jit_compile,
    steps=None,
    repeats=None,
    warmup=2,
    memory_steps=2,
    seed=0,
    log=print,
):
    """Times one training step of every method on `shape`; returns one row per method.

    `uniform` is added if missing (every ratio is to it). A method whose model
    fails to build or step gets a row with `error` set and no figures.
    """
    steps = int(steps or shape.steps)
    repeats = int(repeats or shape.repeats)
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be positive; got steps={steps}, repeats={repeats}")
    methods = list(dict.fromkeys([BASELINE, *methods]))
    batch = shape.batch(seed)
    meter = memory_meter()
    base = {
        "shape": shape.name,
        "description": shape.description,
        "tasks": shape.num_tasks,
        "batch_size": shape.batch_size,
        "input_shape": list(shape.input_shape),
        "jit_compile": bool(jit_compile),
        "steps": steps,
        "repeats": repeats,
        "memory_source": meter.source,
    }
    rows = {m: {**base, "method": m, "error": None} for m in methods}
    step_fns = {}
    for method in methods:
        try:
            model = build_model(shape, method, jit_compile, seed)
            start = time.perf_counter()
            _wait(model.train_function([batch]))
            first = time.perf_counter() - start
            for _ in range(warmup):
                _wait(model.train_function([batch]))
            step_fns[method] = (model, lambda model=model: model.train_function([batch]))
            rows[method]["first_step_seconds"] = first
            rows[method]["state_bytes"] = _state_bytes(model)
            log(f"  {shape.name} jit={jit_compile} {method}: first step (trace/compile) {first:.1f} s")
        except Exception as error:  # noqa: BLE001 - a benchmark reports a broken method and goes on
            rows[method]["error"] = f"{type(error).__name__}: {error}"
            log(f"  {shape.name} jit={jit_compile} {method}: FAILED {rows[method]['error']}")
    if BASELINE not in step_fns:
        return [_finish_row(r) for r in rows.values()]

    for method, (_, step) in step_fns.items():
        # The peak over a few steps: which tensors are alive together can vary
        # from step to step with the executor's scheduling.
        rows[method]["peak_memory_bytes"] = meter.measure(lambda: [_wait(step()) for _ in range(memory_steps)])

    wall = {m: [] for m in step_fns}
    cpu = {m: [] for m in step_fns}
    order = list(step_fns)
    for round_index in range(repeats):
        for method in order if round_index % 2 == 0 else order[::-1]:
            step = step_fns[method][1]
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            logs = None
            for _ in range(steps):
                logs = step()
            _wait(logs)
            wall[method].append((time.perf_counter() - start_wall) / steps)
            cpu[method].append((time.process_time() - start_cpu) / steps)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    base_wall = statistics.median(wall[BASELINE])
    base_cpu = statistics.median(cpu[BASELINE])
    base_memory = rows[BASELINE]["peak_memory_bytes"]
    for method in step_fns:
        w, c = _summary(wall[method]), _summary(cpu[method])
        rows[method].update(
            step_seconds_median=w["median"],
            step_seconds_p25=w["p25"],
            step_seconds_p75=w["p75"],
            step_seconds_min=w["min"],
            step_seconds_max=w["max"],
            ratio_to_uniform=w["median"] / base_wall,
            cpu_seconds_median=c["median"],
            cpu_seconds_p25=c["p25"],
            cpu_seconds_p75=c["p75"],
            cpu_ratio_to_uniform=c["median"] / base_cpu,
            memory_ratio_to_uniform=(rows[method]["peak_memory_bytes"] / base_memory) if base_memory > 0 else None,
            load_average=load,
        )
        log(
            f"  {shape.name} jit={jit_compile} {method}: {1e3 * w['median']:.2f} ms "
            f"[{1e3 * w['p25']:.2f}, {1e3 * w['p75']:.2f}] x{rows[method]['ratio_to_uniform']:.3f}; "
            f"CPU {1e3 * c['median']:.2f} ms x{rows[method]['cpu_ratio_to_uniform']:.3f}; "
            f"memory {rows[method]['peak_memory_bytes'] / 2**20:.1f} MiB"
        )
    del step_fns
    keras.backend.clear_session()
    gc.collect()
    return [_finish_row(r) for r in rows.values()]


STEP_FIELDS = (
    "step_seconds_median", "step_seconds_p25", "step_seconds_p75", "step_seconds_min", "step_seconds_max",
    "ratio_to_uniform", "cpu_seconds_median", "cpu_seconds_p25", "cpu_seconds_p75", "cpu_ratio_to_uniform",
    "peak_memory_bytes", "memory_ratio_to_uniform", "state_bytes", "first_step_seconds", "load_average",
)


def _finish_row(row):
    for field in STEP_FIELDS:
        row.setdefault(field, None)
    return row


# ----------------------------------------------------------------------------
# The min-norm solver alone.


def solver_problems(num_tasks, case, count, seed=0):
    """`count` gradient matrices G [T, D] (float64) of the named case."""
    rng = np.random.default_rng([seed, num_tasks, SOLVER_CASES.index(case)])
    problems = []
    for _ in range(count):
        if case == "spread":
            g = rng.standard_normal((num_tasks, 10 * num_tasks))
            g *= (10.0 ** rng.uniform(-1.0, 1.0, size=(num_tasks, 1))) / np.sqrt(10 * num_tasks)
        elif case == "correlated":
            dim = 2 * num_tasks
            g = rng.standard_normal((1, dim)) + 0.7 * rng.standard_normal((num_tasks, dim))
        elif case == "conflicting":
            g = rng.standard_normal((num_tasks, max(1, num_tasks // 2)))
        else:
            raise ValueError(f"unknown solver case {case!r}; expected one of {list(SOLVER_CASES)}")
        problems.append(g)
    return problems


def exact_min_norm(g):
    """Exact float64 min-norm weights for the gradients in the rows of `g` [T, D].

    min over the simplex of ||G^T alpha||^2 is the non-negative least-squares
    problem min_{u >= 0} ||G^T u||^2 + (1^T u - 1)^2 on the lifted points
    (g_t, 1): writing u = s alpha with s = 1^T u, its value s^2 f(alpha) +
    (s - 1)^2 is minimised over s at f / (1 + f), increasing in f, so
    alpha* = u* / 1^T u*. scipy's Lawson-Hanson active-set NNLS solves it
    exactly up to round-off; the support is then re-solved by least squares.
    """
    g = np.asarray(g, np.float64)
    num_tasks = g.shape[0]
    scale = float(np.max(np.linalg.norm(g, axis=1)))
    if scale == 0.0:
        return np.full(num_tasks, 1.0 / num_tasks)
    lifted = np.vstack([(g / scale).T, np.ones((1, num_tasks))])
    target = np.zeros(lifted.shape[0])
    target[-1] = 1.0
    u, _ = scipy.optimize.nnls(lifted, target, maxiter=50 * num_tasks)
    alpha = u / u.sum()
    support = u > 0
    solution, *_ = np.linalg.lstsq(lifted[:, support], target, rcond=None)
    if np.all(solution > 0):
        polished = np.zeros(num_tasks)
        polished[support] = solution / solution.sum()
        if min_norm_objective(g, polished) <= min_norm_objective(g, alpha):
            alpha = polished
    return alpha


def min_norm_objective(g, alpha):
    """||G^T alpha||^2 in float64."""
    return float(np.sum((np.asarray(alpha, np.float64) @ np.asarray(g, np.float64)) ** 2))


def _solve_batch_fn(method, jit_compile):
    """A compiled function solving a [K, T, T] stack of problems one after the other.

    The K solves are unrolled (no loop around them, whose per-iteration cost
    in a graph without XLA would be counted as solver time), and each one
    waits for the previous one's result, so they cannot run concurrently.
    """

    @tf.function(jit_compile=bool(jit_compile))
    def solve(grams):
        alphas, iterations = [], []
        after = tf.zeros([], grams.dtype)
        for k in range(grams.shape[0]):
            alpha, steps = solvers.min_norm_weights_with_info(grams[k] + after, method=method)
            after = 0.0 * alpha[0]
            alphas.append(alpha)
            iterations.append(steps)
        return tf.stack(alphas), tf.stack(iterations)

    return solve


def benchmark_solver(
    task_counts=SOLVER_TASKS,
    cases=SOLVER_CASES,
    dtypes=("float32", "float64"),
    methods=("wolfe",),
    jit_settings=(False, True),
    problems=20,
    repeats=5,
    seed=0,
    log=print,
):
    """Times the min-norm solver inside a compiled function; gaps to the exact QP. One row per setting."""
    rows = []
    solve_fns = {(m, j): _solve_batch_fn(m, j) for m in methods for j in jit_settings}
    for num_tasks in task_counts:
        for case in cases:
            gradients = solver_problems(num_tasks, case, problems, seed)
            exact = [exact_min_norm(g) for g in gradients]
            optimum = np.array([min_norm_objective(g, a) for g, a in zip(gradients, exact)])
            scales = np.array([np.max(np.sum(g * g, axis=1)) for g in gradients])
            grams64 = np.stack([g @ g.T for g in gradients])
            for dtype in dtypes:
                grams = tf.constant(grams64.astype(dtype))
                for method in methods:
                    for jit in jit_settings:
                        solve = solve_fns[(method, jit)]
                        alphas, iterations = solve(grams)  # trace and compile
                        times = []
                        for _ in range(repeats):
                            start = time.perf_counter()
                            alphas, iterations = solve(grams)
                            alphas = alphas.numpy()
                            times.append((time.perf_counter() - start) / problems)
                        alphas = alphas.astype(np.float64)
                        values = np.array([min_norm_objective(g, a) for g, a in zip(gradients, alphas)])
                        gaps = values - optimum
                        iterations = iterations.numpy()
                        row = {
                            "tasks": int(num_tasks),
                            "case": case,
                            "dtype": dtype,
                            "solver": method,
                            "jit_compile": bool(jit),
                            "problems": int(problems),
                            "repeats": int(repeats),
                            "solve_seconds_median": float(np.median(times)),
                            "solve_seconds_min": float(np.min(times)),
                            "solve_seconds_max": float(np.max(times)),
                            "iterations_median": float(np.median(iterations)),
                            "iterations_max": int(np.max(iterations)),
                            "optimum_zero_share": float(np.mean(optimum <= 1e-12 * scales)),
                            # Gap relative to the largest squared gradient norm (meaningful when
                            # the optimum is ~0) and relative to the optimum (when it is not).
                            "objective_gap_scaled_max": float(np.max(gaps / scales)),
                            "objective_gap_relative_max": float(
                                np.max(np.where(optimum > 1e-12 * scales, gaps / np.maximum(optimum, 1e-300), 0.0))
                            ),
                            "alpha_min": float(alphas.min()),
                            "alpha_sum_error_max": float(np.max(np.abs(alphas.sum(axis=1) - 1.0))),
                        }
                        rows.append(row)
                        log(
                            f"  solver {method} T={num_tasks} {case} {dtype} jit={jit}: "
                            f"{1e6 * row['solve_seconds_median']:.1f} us/solve, iterations "
                            f"{row['iterations_median']:.0f} (max {row['iterations_max']}), gap "
                            f"{row['objective_gap_scaled_max']:.1e} of max |g|^2, "
                            f"{row['objective_gap_relative_max']:.1e} of the optimum"
                        )
    return rows


# ----------------------------------------------------------------------------
# Tables.


def _ms(seconds):
    return "" if seconds is None else f"{1e3 * seconds:.2f}"


def _ratio(value):
    return "" if value is None else f"{value:.3f}"


def _mib(value):
    return "" if value is None else f"{value / 2**20:.1f}"


def step_table(rows):
    """Markdown table of step rows."""
    lines = [
        "| shape | T | batch | method | jit | step ms median [p25, p75] | x uniform | CPU ms median | CPU x uniform "
        "| step memory MiB | memory x uniform | first step s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(
                f"| {r['shape']} | {r['tasks']} | {r['batch_size']} | {r['method']} | {r['jit_compile']} "
                f"| failed: {r['error'][:80]} | | | | | | |"
            )
            continue
        lines.append(
            f"| {r['shape']} | {r['tasks']} | {r['batch_size']} | {r['method']} | {r['jit_compile']} "
            f"| {_ms(r['step_seconds_median'])} [{_ms(r['step_seconds_p25'])}, {_ms(r['step_seconds_p75'])}] "
            f"| {_ratio(r['ratio_to_uniform'])} | {_ms(r['cpu_seconds_median'])} | {_ratio(r['cpu_ratio_to_uniform'])} "
            f"| {_mib(r['peak_memory_bytes'])} | {_ratio(r['memory_ratio_to_uniform'])} "
            f"| {r['first_step_seconds']:.1f} |"
        )
    return "\n".join(lines)


def solver_table(rows):
    """Markdown table of solver rows."""
    lines = [
        "| T | case | dtype | solver | jit | us per solve (median) | iterations median (max) "
        "| max gap / max abs(g)^2 | max gap / optimum |",
        "|---:|---|---|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tasks']} | {r['case']} | {r['dtype']} | {r['solver']} | {r['jit_compile']} "
            f"| {1e6 * r['solve_seconds_median']:.1f} | {r['iterations_median']:.0f} ({r['iterations_max']}) "
            f"| {r['objective_gap_scaled_max']:.1e} | {r['objective_gap_relative_max']:.1e} |"
        )
    return "\n".join(lines)
