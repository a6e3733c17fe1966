"""The min-norm solver alone: its time per solve, iterations and gap to the exact optimum.

`benchmark_solver` draws random Gram matrices M = G G^T of T gradients for
three cases (`solver_problems`): `spread` (D = 10 T independent gradients of
norms spread over two decades: interior optimum, alpha^T M alpha > 0),
`correlated` (a common component plus noise: the optimum lies on a face of the
simplex) and `conflicting` (D = T // 2 dimensions, fewer than tasks: the hull
contains 0 for most draws, optimum 0). A batch of problems is solved inside
one compiled `tf.function`, one solve after the other (each waits for the
previous result), so the time per solve is device time without the per-call
dispatch. Iterations come from `mtl_tf.solvers.min_norm_weights_with_info`.
The objective ||G^T alpha||^2 is compared in float64 with the exact QP
solution of `mtl_tf.timing.reference`.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from mtl_tf import solvers
from mtl_tf.timing.reference import exact_min_norm, min_norm_objective

SOLVER_TASKS = (2, 3, 10, 40, 100)
SOLVER_CASES = ("spread", "correlated", "conflicting")


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

