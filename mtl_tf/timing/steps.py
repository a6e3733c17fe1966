"""What one training step of each balancing method costs: time and memory, measured in one process.

`benchmark_steps` times every method on one model shape (`mtl_tf.timing.shapes`):
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
  * Memory (`memory_meter`): the peak of `tf.config.experimental.get_memory_info(device)` over
    `memory_steps` steps (2) after `reset_memory_stats`, minus the bytes allocated before
    them: the step's transient memory (activations kept for the backward pass,
    gradients, Jacobians, temporaries of XLA programs). It works on the CPU in
    TensorFlow 2.21. The persistent state (weights, optimizer slots, method
    state) is `state_bytes`. Where the allocator statistics are unavailable,
    the process's resident-set high-water mark is used instead (`VmHWM` of
    /proc/self/status, reset through /proc/self/clear_refs), minus the resident
    set before the step; `memory_source` names which.
"""

from __future__ import annotations

import gc
import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from mtl_tf.timing.shapes import ModelShape, build_timed_model

BASELINE = "uniform"


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
            model = build_timed_model(shape, method, jit_compile, seed)
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
