"""Step time and memory of every balancing method, and the min-norm solver alone, in one process.

  python launch/benchmark.py --json=benchmark.json --markdown=benchmark.md
  python launch/benchmark.py --shapes=multilenet --methods=uniform,mgda_ub,mgda --repeats=40
  python launch/benchmark.py --shapes=resnet18 --methods=uniform,mgda_ub,mgda,mgda:jacobian=True
  python launch/benchmark.py --smoke --json=/tmp/smoke.json     # seconds; a pipeline check

For each model shape (multilenet: Sener's MultiLeNet, 2 tasks, batch 256; resnet18: the CelebA
ResNet-18 at 64x64 with 40 tasks; cityscapes: the three-task dilated ResNet-50 + pyramid-pooling
model at a reduced resolution), each `jit_compile` setting and each method, it warms up, times
`--steps` training steps `--repeats` times (rounds over the methods, in alternating order), and
reports the median and spread of the step time, its ratio to `uniform` measured in the same
rounds, the process CPU time and the step's peak memory. Then it times the min-norm solver
alone inside a compiled function (T in --solver_tasks) and compares its objective with an exact
QP solution. How everything is measured: `mtl_tf.timing`.

Flags:
  --shapes            comma-separated, from multilenet, resnet18, cityscapes (default: all;
                      --shapes= with nothing times the solver alone);
  --methods           comma-separated method labels (default: every method of
                      mtl_tf.balancers.available()); options as name:key=value, e.g.
                      mgda:jacobian=True; uniform is always measured (the ratios' reference);
  --jit_compile       comma-separated settings among false,true (default: both);
  --steps, --repeats  steps per sample and samples per method (default: per shape);
  --warmup            steps after the first (tracing) call before timing;
  --batch_size        per-shape overrides, e.g. resnet18=32,multilenet=128;
  --smoke             toy shapes, one step per sample, few solver problems, and unless given
                      --methods=uniform,mgda_ub,mgda --jit_compile=false: a pipeline check
                      (about a minute on a busy 2-core machine, most of it tracing);
  --solver            also benchmark the solver (default true); --solver_tasks, --solver_problems,
                      --solver_repeats, --solver_methods (wolfe, frank_wolfe), --solver_dtypes
                      (float32, float64); smoke: T in 2, 10, wolfe, float64 unless given;
  --json              write the step rows (a JSON list) here; --solver_json the solver rows;
  --markdown          write both tables (and the command and machine load) here.
The tables are always printed. The exit status is 1 if any method failed (its row says why).

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

from absl import app, flags  # noqa: E402

from mtl_tf import balancers  # noqa: E402
from mtl_tf.timing import shapes, solver, steps, tables  # noqa: E402

_SHAPES = flags.DEFINE_list("shapes", ["multilenet", "resnet18", "cityscapes"], "Model shapes to time.")
_METHODS = flags.DEFINE_list("methods", None, "Method labels (default: every registered method).")
_JIT = flags.DEFINE_list("jit_compile", ["false", "true"], "jit_compile settings to time.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per timed sample (default: per shape).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed samples per method (default: per shape).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Steps after the first (tracing) call before timing.")
_BATCH = flags.DEFINE_list("batch_size", [], "Per-shape batch sizes, e.g. resnet18=32.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Toy shapes and few steps: a seconds-long pipeline check.")
_SOLVER = flags.DEFINE_bool("solver", True, "Also benchmark the min-norm solver alone.")
_SOLVER_TASKS = flags.DEFINE_list("solver_tasks", None, "Task counts of the solver benchmark (default 2,3,10,40,100).")
_SOLVER_PROBLEMS = flags.DEFINE_integer("solver_problems", None, "Random problems per solver setting.")
_SOLVER_REPEATS = flags.DEFINE_integer("solver_repeats", None, "Timed repetitions per solver setting.")
_SOLVER_METHODS = flags.DEFINE_list("solver_methods", ["wolfe", "frank_wolfe"], "Solvers to time.")
_SOLVER_DTYPES = flags.DEFINE_list("solver_dtypes", ["float32", "float64"], "Gram matrix dtypes of the solver benchmark.")
_JSON = flags.DEFINE_string("json", None, "Write the step rows here (JSON list).")
_SOLVER_JSON = flags.DEFINE_string("solver_json", None, "Write the solver rows here (JSON list).")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Write the markdown tables here.")

SMOKE_METHODS = ("uniform", "mgda_ub", "mgda")
_BOOLS = {"false": False, "0": False, "no": False, "off": False, "true": True, "1": True, "yes": True, "on": True}


def _jit_settings(values):
    settings = []
    for value in values:
        if value.lower() not in _BOOLS:
            raise app.UsageError(f"--jit_compile takes false and/or true; got {value!r}")
        settings.append(_BOOLS[value.lower()])
    return list(dict.fromkeys(settings))


def _batch_overrides(values, shapes):
    overrides = {}
    for item in values:
        name, sep, size = item.partition("=")
        if not sep or name not in shapes or not size.isdigit() or int(size) < 1:
            raise app.UsageError(
                f"--batch_size entries are shape=positive integer with a shape from {shapes}; got {item!r}"
            )
        overrides[name] = int(size)
    return overrides


def _write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    # Every model traces its own step function; TensorFlow's retracing warning says nothing here.
    tf.get_logger().setLevel("ERROR")

    unknown = [s for s in _SHAPES.value if s not in shapes.SHAPES]
    if unknown or not (_SHAPES.value or _SOLVER.value):
        raise app.UsageError(
            f"--shapes takes names from {list(shapes.SHAPES)} (empty: the solver alone); got {_SHAPES.value}"
        )
    methods = _METHODS.value or balancers.available()
    for label in methods:
        try:
            shapes.parse_method(label)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
    smoke = _SMOKE.value
    shape_names = _SHAPES.value
    jit_values = _JIT.value
    if smoke:
        # Tracing a model costs seconds whatever its size, so the smoke run keeps
        # the method list and jit settings short unless they are given.
        if not flags.FLAGS["methods"].present:
            methods = list(SMOKE_METHODS)
        if not flags.FLAGS["jit_compile"].present:
            jit_values = ["false"]
    solver_methods = _SOLVER_METHODS.value
    solver_dtypes = _SOLVER_DTYPES.value
    if smoke and not flags.FLAGS["solver_methods"].present:
        solver_methods = ["wolfe"]
    if smoke and not flags.FLAGS["solver_dtypes"].present:
        solver_dtypes = ["float64"]
    for dtype in solver_dtypes:
        if dtype not in ("float32", "float64"):
            raise app.UsageError(f"--solver_dtypes takes float32 and/or float64; got {dtype!r}")
    for method in solver_methods:
        if method not in ("wolfe", "frank_wolfe"):
            raise app.UsageError(f"--solver_methods takes wolfe and/or frank_wolfe; got {method!r}")
    jit_settings = _jit_settings(jit_values)
    batch_sizes = _batch_overrides(_BATCH.value, list(shapes.SHAPES))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# {command}\n# load average before: {load_before}, {os.cpu_count()} CPUs, {platform.platform()}")

    step_rows = []
    for name in shape_names:
        shape = shapes.model_shape(name, smoke=smoke, batch_size=batch_sizes.get(name))
        for jit in jit_settings:
            print(f"{shape.name}: {shape.description}, {shape.num_tasks} tasks, batch {shape.batch_size}, jit_compile={jit}")
            step_rows += steps.benchmark_steps(
                shape,
                methods,
                jit,
                steps=_STEPS.value or (1 if smoke else None),
                repeats=_REPEATS.value,
                warmup=0 if smoke else _WARMUP.value,
            )

    solver_rows = []
    if _SOLVER.value:
        tasks = [int(t) for t in _SOLVER_TASKS.value] if _SOLVER_TASKS.value else (
            [2, 10] if smoke else list(solver.SOLVER_TASKS)
        )
        print(f"min-norm solver alone: T in {tasks}")
        solver_rows = solver.benchmark_solver(
            task_counts=tasks,
            dtypes=solver_dtypes,
            methods=solver_methods,
            jit_settings=jit_settings,
            problems=_SOLVER_PROBLEMS.value or (2 if smoke else 20),
            repeats=_SOLVER_REPEATS.value or (1 if smoke else 5),
        )

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    header = (
        f"Command: `{command}`  \n"
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, TensorFlow {_tf_version()}; load average "
        f"(1, 5, 15 min) {_load(load_before)} before, {_load(load_after)} after; {time.time() - started:.0f} s.\n"
    )
    markdown = header
    if step_rows:
        markdown += "\n### Training step\n\n" + tables.step_table(step_rows) + "\n"
    if solver_rows:
        markdown += "\n### Min-norm solver alone\n\n" + tables.solver_table(solver_rows) + "\n"
    print()
    print(markdown)
    if _MARKDOWN.value:
        _write(_MARKDOWN.value, markdown)
    if _JSON.value:
        _write(_JSON.value, json.dumps(step_rows, indent=1) + "\n")
    if _SOLVER_JSON.value:
        _write(_SOLVER_JSON.value, json.dumps(solver_rows, indent=1) + "\n")
    failed = [f"{r['shape']}/{r['method']}/jit={r['jit_compile']}" for r in step_rows if r.get("error")]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def _load(values):
    return "n/a" if values is None else ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    app.run(main)
