"""`launch/benchmark.py` in smoke mode, and the pieces of `mtl_tf.timing` it rests on.

The figures themselves are not asserted (they depend on the machine and its
load); the test checks the output's schema, that every ratio is a finite
positive number, and that the exact QP reference the solver is compared with is
itself exact (against a brute force over supports).
"""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl_tf.timing import reference, shapes, solver

ROOT = Path(__file__).resolve().parents[2]
STEP_KEYS = {
    "shape": str,
    "tasks": int,
    "method": str,
    "jit_compile": bool,
    "step_seconds_median": float,
    "ratio_to_uniform": float,
    "peak_memory_bytes": int,
}
SOLVER_KEYS = {
    "tasks": int,
    "case": str,
    "solver": str,
    "jit_compile": bool,
    "solve_seconds_median": float,
    "iterations_max": int,
    "objective_gap_scaled_max": float,
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    command = [
        sys.executable, str(ROOT / "launch" / "benchmark.py"), "--smoke",
        "--shapes=multilenet", "--methods=mgda_ub", "--solver_tasks=2,3",
        f"--json={out / 'steps.json'}", f"--solver_json={out / 'solver.json'}", f"--markdown={out / 'table.md'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_smoke_json_schema_and_ratios(smoke_run):
    out, _ = smoke_run
    rows = json.loads((out / "steps.json").read_text())
    assert isinstance(rows, list)
    # uniform is always measured: the ratios' reference.
    assert [r["method"] for r in rows] == ["uniform", "mgda_ub"]
    for row in rows:
        for key, kind in STEP_KEYS.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["error"] is None
        assert row["shape"] == "multilenet (smoke)" and row["tasks"] == 2 and row["jit_compile"] is False
        for key in ("ratio_to_uniform", "cpu_ratio_to_uniform", "step_seconds_median", "cpu_seconds_median"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
        assert row["step_seconds_p25"] <= row["step_seconds_median"] <= row["step_seconds_p75"]
        assert row["peak_memory_bytes"] >= 0 and row["state_bytes"] > 0
    assert rows[0]["ratio_to_uniform"] == 1.0


def test_smoke_solver_rows(smoke_run):
    out, _ = smoke_run
    rows = json.loads((out / "solver.json").read_text())
    assert {(r["tasks"], r["case"]) for r in rows} == {
        (t, c) for t in (2, 3) for c in solver.SOLVER_CASES
    }
    for row in rows:
        for key, kind in SOLVER_KEYS.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert math.isfinite(row["solve_seconds_median"]) and row["solve_seconds_median"] > 0
        assert row["alpha_min"] >= 0 and row["alpha_sum_error_max"] < 1e-9


def test_smoke_markdown(smoke_run):
    out, stdout = smoke_run
    table = (out / "table.md").read_text()
    assert "| multilenet (smoke) | 2 | 16 | mgda_ub | False |" in table
    assert "### Min-norm solver alone" in table
    assert table.strip() in stdout


def _brute_force_min_norm(g):
    """Minimum over every support S of the affine min-norm point of {g_t, t in S} inside the simplex."""
    num_tasks = g.shape[0]
    best_value, best = np.inf, None
    for size in range(1, num_tasks + 1):
        for support in itertools.combinations(range(num_tasks), size):
            s = list(support)
            gram = g[s] @ g[s].T
            kkt = np.block([[2 * gram, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            rhs = np.zeros(size + 1)
            rhs[-1] = 1.0
            weights = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            # Feasible unless a weight (<= 1) is negative beyond its own rounding: 1e-12 = 4500 eps.
            if np.all(weights >= -1e-12):
                alpha = np.zeros(num_tasks)
                alpha[s] = np.maximum(weights, 0) / np.maximum(weights, 0).sum()
                value = reference.min_norm_objective(g, alpha)
                if value < best_value:
                    best_value, best = value, alpha
    return best_value, best


@pytest.mark.parametrize("case", solver.SOLVER_CASES)
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_exact_reference_matches_brute_force(num_tasks, case):
    for g in solver.solver_problems(num_tasks, case, count=4, seed=1):
        alpha = reference.exact_min_norm(g)
        eps = np.finfo(np.float64).eps
        # The reference renormalises alpha: a sum of T numbers <= 1 then a division, 2 T eps.
        assert np.all(alpha >= 0) and abs(alpha.sum() - 1) <= 2 * num_tasks * eps
        best_value, _ = _brute_force_min_norm(g)
        scale = np.max(np.sum(g * g, axis=1))
        # Two evaluations of a stationary objective ||g^T alpha||^2 (T + D flops on entries <= scale),
        # as in tests/test_solvers.py::test_reference_matches_brute_force: 4 (T + D) eps * scale.
        assert reference.min_norm_objective(g, alpha) - best_value <= 4 * (num_tasks + g.shape[1]) * eps * scale


def test_conflicting_case_has_zero_optimum():
    # The case exists to put 0 in the hull; the reference must find it: zero up to the rounding of
    # g^T alpha, squared ((T eps)^2 ||g||^2 < 1e-28 ||g||^2), far below 1e-20 ||g||^2.
    zero = [
        reference.min_norm_objective(g, reference.exact_min_norm(g)) <= 1e-20 * np.max(np.sum(g * g, axis=1))
        for g in solver.solver_problems(10, "conflicting", count=10)
    ]
    assert sum(zero) >= 5


@pytest.mark.parametrize("name", shapes.SHAPES)
def test_smoke_shapes_build_and_give_finite_losses(name):
    shape = shapes.model_shape(name, smoke=True)
    x, y = shape.batch()
    assert tuple(x.shape) == (shape.batch_size, *shape.input_shape)
    encoder, heads, losses, _ = shape.build()
    z = encoder(x, training=False)
    for task in shape.task_names:
        loss = float(losses[task](y[task], heads[task](z, training=False)))
        assert math.isfinite(loss) and loss > 0, (task, loss)


def test_method_labels():
    assert shapes.parse_method("mgda:jacobian=True") == ("mgda", {"jacobian": True})
    assert shapes.parse_method("mgda_ub:normalization=loss+") == ("mgda_ub", {"normalization": "loss+"})
    with pytest.raises(ValueError, match="unknown balancing method 'mgda_fast'"):
        shapes.parse_method("mgda_fast")
    with pytest.raises(ValueError, match="has no option 'jacobain'"):
        shapes.parse_method("mgda:jacobain=True")
    with pytest.raises(ValueError, match="must be key=value"):
        shapes.parse_method("mgda:jacobian")
    with pytest.raises(ValueError, match="unknown model shape 'resnet50'"):
        shapes.model_shape("resnet50")


def test_method_labels_set_the_precision_policy():
    import keras

    shape = shapes.model_shape("multilenet", smoke=True)
    scaled = shapes.build_timed_model(shape, "uniform:policy=mixed_float16", jit_compile=False)
    plain = shapes.build_timed_model(shape, "uniform:policy=mixed_float16:loss_scaling=False", jit_compile=False)
    assert isinstance(scaled.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled.encoder.dtype_policy.name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError, match="has no option 'polcy'"):
        shapes.parse_method("uniform:polcy=mixed_float16")
