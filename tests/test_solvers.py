"""Min-norm solvers (`mtl_tf/solvers/`) against an exact QP reference.

The reference (`mtl_tf/timing/reference.py`) solves the same problem from the
gradients themselves, in float64, with scipy's exact active-set NNLS and
certifies it with the KKT conditions; for small T it is itself checked against
a brute force over all supports. Accuracy is judged on the objective
||G^T alpha||^2 evaluated from the float64 gradients, as the issue states it:
within `rel` of the optimum, or within `abs` times the mean squared gradient
norm (mean diagonal of M) when the optimum is ~0.

`method="official"` is not exact by design; it is compared step for step
with a NumPy transcription of the official routine (`tiny.official_min_norm`).

Backend-neutral (tests/backends.py runs it under JAX too, with
`jax_enable_x64` on for each test: `tests.precision.float64_on_jax`). Inputs are
NumPy arrays or `keras.ops` tensors; the compiled solves use the backend's
compiler (`tf.function` / `tf.function(jit_compile=True)` on TensorFlow,
`jax.jit` on JAX). Inherently TensorFlow (skipped elsewhere):
`test_unknown_number_of_tasks_in_a_graph` (a `tf.function` input signature with
an unknown T).
"""

import keras
import numpy as np
import pytest

from mtl_tf import solvers
from mtl_tf.timing import reference as ref
from tests.backends import full_sweep_on_tensorflow
from tests.balancers import official_reference as tiny
from tests.precision import float64_on_jax, float64_unavailable  # noqa: F401  (fixtures)

BACKEND = keras.backend.backend()
ON_TENSORFLOW = BACKEND == "tensorflow"

# (relative, times mean diag) tolerances on the objective, from the issue.
TOLERANCES = {np.float64: (1e-6, 1e-9), np.float32: (1e-4, 1e-6)}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["float64", "float32"]

EPS64 = np.finfo(np.float64).eps


def round_off_atol(run, M, samples=16):
    """Bound on |alpha - alpha_ref| between two float64 codings of one iterative path on the Gram matrix M.

    `run(M) -> alpha` is the NumPy transcription. Each step reads M only through T-term products with
    weight vectors: a computed product is the exact one of a matrix within T eps |M| of M (the backward
    error of a dot product), and the solver's own rescaling of M is one more rounding of it. The path's
    condition S = max |run(M (1 + eps U)) - run(M)| / eps over `samples` random symmetric U in
    [-1, 1] (a sampled, not a worst-case, S: hence the factor 10) turns that into
    10 * T * S * eps; the + 1 in (S + 1) is the rounding of the last step's own arithmetic on numbers
    <= 1 (the weights), which no perturbation of M shows.
    """
    M = np.asarray(M, np.float64)
    base = np.asarray(run(M), np.float64)
    rng = np.random.default_rng(0)
    condition = 0.0
    for _ in range(samples):
        U = rng.uniform(-1.0, 1.0, M.shape)
        moved = np.asarray(run(M * (1.0 + EPS64 * (U + U.T) / 2)), np.float64)
        condition = max(condition, float(np.max(np.abs(moved - base))) / EPS64)
    return 10.0 * len(M) * (condition + 1.0) * EPS64


def compile_fn(fn, jit_compile=False, static=()):
    """`fn` compiled by the backend: tf.function (XLA with `jit_compile`) on TensorFlow, jax.jit on JAX.

    `static`: argument names jax.jit takes as Python values (the method name).
    """
    if ON_TENSORFLOW:
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn, static_argnames=static)
    return fn


def compilers():
    """The compiled variants a test compares with eager execution."""
    if ON_TENSORFLOW:
        return [("graph", False), ("xla", True)]
    return [("xla", True)]


def tensor(x, dtype=None):
    return keras.ops.convert_to_tensor(x if dtype is None else np.asarray(x, dtype))


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def dtype_name(x):
    return keras.backend.standardize_dtype(x.dtype)


# One graph per (T, dtype, method): eager while-loops are slow at T = 100.
_solve_graph = compile_fn(solvers.min_norm_weights_with_info, static=("method",))


def min_norm_weights_with_info(gram, **options):
    """`solvers.min_norm_weights_with_info(gram, **options)`: eager, except under JAX.

    JAX traces and compiles an eager `lax.while_loop` again at every call (about a CPU second), so
    there the tests that only read the answer solve through `_solve_graph` (one jax.jit per shape,
    dtype and method). Eager calls stay under JAX where eager is the point: `test_compiled_matches_eager`,
    `test_frank_wolfe_follows_algorithm_2_step_by_step`, the float32 fall-back and mask tests.
    """
    if BACKEND == "jax":
        return _solve_graph(gram, **options)
    return solvers.min_norm_weights_with_info(gram, **options)


def min_norm_weights(gram, **options):
    """`solvers.min_norm_weights(gram, **options)`: eager, except under JAX (`min_norm_weights_with_info`)."""
    if BACKEND == "jax":
        return _solve_graph(gram, **options)[0]
    return solvers.min_norm_weights(gram, **options)


def solve(gram, dtype, **options):
    alpha, iterations = _solve_graph(tensor(gram, dtype), **options)
    assert dtype_name(alpha) == np.dtype(dtype).name
    return numpy(alpha).astype(np.float64), int(iterations)


def excess_over_optimum(G, alpha, alpha_ref):
    """(objective - optimum, optimum, mean squared gradient norm)."""
    value, optimum = ref.min_norm_objective(G, alpha), ref.min_norm_objective(G, alpha_ref)
    mean_sq_norm = float(np.mean(np.sum(np.asarray(G, np.float64) ** 2, axis=1)))
    return value - optimum, optimum, mean_sq_norm


def assert_near_optimal(G, alpha, alpha_ref, dtype, context):
    rel, abs_ = TOLERANCES[dtype]
    excess, optimum, mean_sq_norm = excess_over_optimum(G, alpha, alpha_ref)
    allowed = max(rel * optimum, abs_ * mean_sq_norm)
    assert excess <= allowed, (
        f"{context}: objective {optimum + excess:.6e} exceeds the exact optimum {optimum:.6e} by "
        f"{excess:.3e}; allowed max({rel:g} * optimum, {abs_:g} * mean ||g||^2 = {mean_sq_norm:.3e}) "
        f"= {allowed:.3e}. alpha={np.round(alpha, 6)}, exact={np.round(alpha_ref, 6)}"
    )
    return excess / allowed if allowed > 0 else 0.0


def assert_on_simplex(alpha, context, atol=1e-6):
    alpha = np.asarray(alpha, np.float64)
    assert np.all(np.isfinite(alpha)), f"{context}: non-finite alpha {alpha}"
    assert np.all(alpha >= 0), f"{context}: negative alpha {alpha}"
    assert abs(alpha.sum() - 1.0) <= atol, f"{context}: alpha sums to {alpha.sum()!r}, expected 1"


def gradients(rng, T, D, kind):
    """T task gradients of dimension D; `kind` picks the geometry."""
    G = rng.standard_normal((T, D))
    if kind == "aligned":  # a shared component: the optimum is well above 0
        G += 3.0 * rng.standard_normal(D)
    elif kind == "conflicting":  # 0 is a strict convex combination: the optimum is exactly 0
        w = rng.uniform(0.5, 1.5, T - 1)
        G[-1] = -(w @ G[:-1]) / w.sum()
    elif kind == "spread":  # gradient norms spread over 2.6 orders of magnitude
        G *= np.exp(rng.uniform(-3.0, 3.0, (T, 1)))
    elif kind == "clustered":  # groups of near-duplicate gradients
        G = G[rng.integers(0, max(1, T // 3), T)] + 1e-3 * rng.standard_normal((T, D))
    return G


KINDS = ["gaussian", "aligned", "conflicting", "spread", "clustered"]


# ----------------------------------------------------------------------------
# The reference itself.


@pytest.mark.parametrize("T,D", [(2, 1), (3, 1), (3, 5), (4, 2), (5, 3), (6, 2), (6, 9)])
def test_reference_matches_brute_force(rng, T, D):
    for kind in KINDS:
        G = gradients(rng, T, D, kind)
        alpha = ref.exact_min_norm(G)
        best, best_value = ref.enumerate_min_norm(G)
        scale = float(np.max(np.sum(G * G, axis=1)))
        # Each side evaluates ||G^T alpha||^2 (T + D flops per entry: (T + D) eps * scale) at an optimal
        # point; where both have the same support the objective is stationary there, so the points' own
        # rounding enters only to second order: 4 (T + D) eps * scale covers both evaluations twice.
        assert abs(ref.min_norm_objective(G, alpha) - best_value) <= 4 * (T + D) * EPS64 * scale, (kind, alpha, best)
        ref.check_kkt(G, best, tolerance=1e-9)


def test_reference_kkt_check_rejects_a_suboptimal_point(rng):
    G = gradients(rng, 5, 8, "gaussian")
    with pytest.raises(AssertionError, match="KKT"):
        ref.check_kkt(G, np.full(5, 0.2))


# ----------------------------------------------------------------------------
# Default method: exact.


# Each (T, dtype) is one compile of the solver under JAX (seconds each): there T = 2, 5 and 40 run, every kind and
# both dtypes each; T = 3, 10, 100 take the same paths with other sizes.
@pytest.mark.parametrize("T", full_sweep_on_tensorflow(
    [2, 3, 5, 10, 40, 100], kept={0, 2, 4}, reason="T = 2 (closed form), 5 and 40 (the active-set loop) cover every path"))
def test_default_reaches_the_exact_optimum(rng, T):
    dims = sorted({max(1, T // 2), T + 3})  # fewer and more dimensions than tasks
    saw_zero_optimum = False
    cap = 10 * T + 50
    for D in dims:
        for kind in KINDS:
            if kind == "conflicting" and T < 2:
                continue
            G = gradients(rng, T, D, kind)
            M = G @ G.T
            alpha_ref = ref.exact_min_norm(G)
            _, optimum, mean_sq_norm = excess_over_optimum(G, alpha_ref, alpha_ref)
            # A zero optimum computes as (rounding of G^T alpha)^2 ~ (T eps)^2 ||g||^2 < 1e-28 ||g||^2; a
            # positive one of these draws is far above 1e-20 ||g||^2.
            saw_zero_optimum |= optimum <= 1e-20 * mean_sq_norm
            for dtype in DTYPES:
                context = f"T={T} D={D} {kind} {np.dtype(dtype).name}"
                alpha, iterations = solve(M, dtype)
                assert_on_simplex(alpha, context)
                assert_near_optimal(G, alpha, alpha_ref, dtype, context)
                assert 0 <= iterations <= cap, f"{context}: {iterations} iterations, cap {cap}"
                if T == 2:
                    assert iterations == 0, f"{context}: T = 2 must use the closed form"
    assert saw_zero_optimum, "the test set must include problems whose optimum is exactly 0"


def test_default_is_scale_invariant(rng):
    G = gradients(rng, 8, 5, "gaussian")
    alpha_ref = ref.exact_min_norm(G)
    for scale in [1e-12, 1e-6, 1e6, 1e12]:
        for dtype in DTYPES:
            alpha, _ = solve((scale * G) @ (scale * G).T, dtype)
            assert_near_optimal(scale * G, alpha, alpha_ref, dtype, f"scale {scale:g} {np.dtype(dtype).name}")


# ----------------------------------------------------------------------------
# Degenerate input: finite, on the simplex, and (default method) still optimal.


def _degenerate_cases():
    rng = np.random.default_rng(7)
    g = rng.standard_normal(6)
    cases = {
        "single_task": g[None, :],
        "single_zero_task": np.zeros((1, 6)),
        "zero_gradient_among_others": np.vstack([rng.standard_normal((3, 6)), np.zeros(6)]),
        "all_zero": np.zeros((4, 6)),
        "two_zero": np.zeros((2, 6)),
        "identical_two": np.vstack([g, g]),
        "identical_five": np.vstack([g] * 5),
        "colinear_same_direction": np.outer([1.0, 2.0, 0.5, 3.0], g),
        "colinear_mixed_signs": np.outer([1.0, -2.0, 0.5, 3.0], g),
        "opposite_two": np.vstack([g, -g]),
        "opposite_unequal": np.vstack([g, -1e-6 * g]),
        "duplicated_opposites": np.vstack([g, g, -g, -g, rng.standard_normal(6)]),
        "rank_one_plus_noise": np.outer(rng.standard_normal(7), g) + 1e-9 * rng.standard_normal((7, 6)),
        "rank_deficient": rng.standard_normal((10, 2)) @ rng.standard_normal((2, 6)),
        "more_tasks_than_dims": rng.standard_normal((12, 3)),
        "mixed_scales_1e-12_1e12": np.array([1e-12, 1e-6, 1.0, 1e6, 1e12])[:, None] * rng.standard_normal((5, 4)),
    }
    for scale in [1e-12, 1e-6, 1e6, 1e12]:
        cases[f"scale_{scale:g}"] = scale * rng.standard_normal((6, 4))
    return cases


DEGENERATE = _degenerate_cases()


@pytest.mark.parametrize("method", solvers.METHODS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_input_gives_finite_weights_on_the_simplex(name, dtype, method):
    G = DEGENERATE[name]
    M = G @ G.T
    alpha, _ = solve(M, dtype, method=method)
    assert alpha.shape == (len(G),)
    assert_on_simplex(alpha, f"{name} {np.dtype(dtype).name} {method}", atol=1e-5)
    if method == solvers.DEFAULT_METHOD:
        assert_near_optimal(G, alpha.astype(np.float64), ref.exact_min_norm(G), dtype, name)


def test_degenerate_input_known_answers():
    g = np.array([1.0, -2.0, 0.5])

    def alpha_of(G, dtype=np.float64):
        return numpy(min_norm_weights(tensor((G @ G.T).astype(dtype))))

    for dtype in DTYPES:
        # Exact answers (vertices, 1/2, 3/4) of a few active-set steps on O(1) numbers: a few roundings
        # each, 64 eps of the dtype.
        tol = 64 * EPS64 if dtype == np.float64 else 1e-6
        # A zero gradient is the min-norm point: it takes all the weight.
        np.testing.assert_allclose(alpha_of(np.vstack([g, np.zeros(3), 2 * g]), dtype), [0, 1, 0], atol=tol)
        # Two zero gradients / identical gradients with equal norms: any alpha is optimal -> uniform.
        np.testing.assert_allclose(alpha_of(np.zeros((2, 3)), dtype), [0.5, 0.5], atol=tol)
        np.testing.assert_allclose(alpha_of(np.vstack([g, g]), dtype), [0.5, 0.5], atol=tol)
        # Opposite gradients cancel: alpha_1 g + alpha_2 (-c g) = 0.
        np.testing.assert_allclose(alpha_of(np.vstack([g, -g]), dtype), [0.5, 0.5], atol=tol)
        np.testing.assert_allclose(alpha_of(np.vstack([g, -3 * g]), dtype), [0.75, 0.25], atol=tol)
        # Colinear, same direction: the shortest takes all.
        np.testing.assert_allclose(alpha_of(np.outer([3.0, 2.0, 0.5, 1.0], g), dtype), [0, 0, 1, 0], atol=tol)
        # T = 1.
        np.testing.assert_allclose(alpha_of(g[None, :], dtype), [1.0])


def test_non_finite_gram_gives_uniform_weights(rng):
    G = gradients(rng, 5, 3, "gaussian")
    for bad in [np.nan, np.inf]:
        for i, j in [(0, 0), (1, 3)]:
            M = G @ G.T
            M[i, j] = M[j, i] = bad
            for method in solvers.METHODS:
                alpha = numpy(min_norm_weights(tensor(M), method=method))
                np.testing.assert_array_equal(alpha, np.full(5, 0.2), err_msg=f"{bad} at {(i, j)}, {method}")


# ----------------------------------------------------------------------------
# Plain Frank-Wolfe: the paper's Algorithm 2, verbatim.


def paper_algorithm_2(M, max_iterations=250, tolerance=1e-5):
    """Sener & Koltun, Algorithm 2, with Algorithm 1 as the line search.

    Returns (alpha after every iteration, number of iterations).
    """
    T = len(M)
    alpha = np.full(T, 1.0 / T)
    history = [alpha]
    for iteration in range(1, max_iterations + 1):
        t = int(np.argmin(M @ alpha))
        # Algorithm 1 on theta = sum_r alpha_r g_r and theta_bar = g_t:
        # gamma minimises ||gamma theta + (1 - gamma) theta_bar||^2.
        tt, tb, bb = alpha @ M @ alpha, (M @ alpha)[t], M[t, t]
        if tb >= tt:
            gamma = 1.0
        elif tb >= bb:
            gamma = 0.0
        else:
            gamma = (bb - tb) / (tt + bb - 2.0 * tb)
        step = 1.0 - gamma  # Algorithm 2's gamma-hat, the weight of e_t
        alpha = (1.0 - step) * alpha + step * np.eye(T)[t]
        history.append(alpha)
        if step < tolerance:
            break
    return history, iteration


@pytest.mark.parametrize("T,D", [(3, 5), (6, 4), (8, 20)])
def test_frank_wolfe_follows_algorithm_2_step_by_step(rng, T, D):
    G = gradients(rng, T, D, "gaussian")
    M = G @ G.T
    history, iterations = paper_algorithm_2(M)
    for k in sorted({1, 2, 3, 5, 10, 25, iterations}):
        if k > iterations:
            continue
        alpha, used = solve(M, np.float64, method="frank_wolfe", max_iterations=tensor(k))
        atol = round_off_atol(lambda m: paper_algorithm_2(m, max_iterations=k)[0][k], M)
        np.testing.assert_allclose(alpha, history[k], rtol=0, atol=atol, err_msg=f"after {k} iterations")
        assert used == k
    alpha, used = solve(M, np.float64, method="frank_wolfe")
    path_atol = round_off_atol(lambda m: paper_algorithm_2(m)[0][-1], M)
    np.testing.assert_allclose(alpha, history[-1], rtol=0, atol=path_atol)
    assert used == iterations, f"Frank-Wolfe used {used} iterations, Algorithm 2 {iterations}"
    # frank_wolfe() is the same solver: eager here, compiled above. TensorFlow runs both through the same
    # kernels (bit for bit). JAX's eager lax.while_loop and the jax.jit of `solve` are two XLA compilations
    # of the loop, free to fuse differently (a multiply-add contracted to one FMA in one of them): two
    # float64 codings of the same path, so they may differ by the path's round-off bound (round_off_atol,
    # the bound used against Algorithm 2 above; [6-4] differs by 1 ulp of its largest weight, 2.8e-17).
    if ON_TENSORFLOW:
        np.testing.assert_array_equal(numpy(solvers.frank_wolfe(tensor(M))), alpha)
    else:
        np.testing.assert_allclose(numpy(solvers.frank_wolfe(tensor(M))), alpha, rtol=0, atol=path_atol)


def test_frank_wolfe_options_follow_algorithm_2(rng):
    G = gradients(rng, 6, 3, "conflicting")
    M = G @ G.T
    for cap, tol in [(250, 1e-5), (40, 1e-5), (250, 1e-2)]:
        history, iterations = paper_algorithm_2(M, cap, tol)
        alpha, used = solve(M, np.float64, method="frank_wolfe", max_iterations=tensor(cap), tolerance=tol)
        assert used == iterations
        atol = round_off_atol(lambda m: paper_algorithm_2(m, cap, tol)[0][-1], M)
        np.testing.assert_allclose(alpha, history[-1], rtol=0, atol=atol)


@pytest.mark.parametrize("T,D", [(10, 20), (40, 100)])
def test_frank_wolfe_stays_far_from_a_zero_optimum_the_default_reaches(rng, T, D):
    G = gradients(rng, T, D, "conflicting")
    M = G @ G.T
    alpha_ref = ref.exact_min_norm(G)
    fw_alpha, fw_iterations = solve(M, np.float64, method="frank_wolfe")
    fw_excess, optimum, mean_sq_norm = excess_over_optimum(G, fw_alpha, alpha_ref)
    assert optimum <= 1e-20 * mean_sq_norm  # zero up to (T eps)^2 round-off, as in the test above
    assert fw_iterations == 250, "Algorithm 2 should run into its iteration cap here"
    # 1000 times the tolerance the default meets.
    assert fw_excess > 1e-6 * mean_sq_norm, f"Frank-Wolfe excess {fw_excess / mean_sq_norm:.2e} * mean ||g||^2"
    alpha, _ = solve(M, np.float64)
    assert_near_optimal(G, alpha, alpha_ref, np.float64, "default on the same problem")


# ----------------------------------------------------------------------------
# The official code's solver (`method="official"`) against a NumPy
# transcription of the routine (`tiny.official_min_norm`, written from its
# description: best pair, projected gradient, clipped two-point line search).

_solve_xla = compile_fn(solvers.min_norm_weights_with_info, jit_compile=True, static=("method",))
_COMPILED = {"graph": _solve_graph, "xla": _solve_xla}


def solve_official(gram, dtype, compiled=_solve_graph, **options):
    alpha, iterations = compiled(tensor(gram, dtype), method="official", **options)
    assert dtype_name(alpha) == np.dtype(dtype).name
    return numpy(alpha).astype(np.float64), int(iterations)


def _official_masks(rng, T):
    masks = [np.ones(T, bool), rng.random(T) < 0.7]
    if T > 2:
        masks.append(np.arange(T) < 2)  # two allowed points: the best pair is the answer
    return [m for m in masks if m.any()]


@pytest.mark.parametrize("T", [2, 3, 5, 10])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_official_matches_its_numpy_transcription(rng, T, dtype):
    # D > T gaussian gradients: a positive definite M with one best pair and
    # a path that round-off does not move (on ill-conditioned M, 1e-16
    # differences can grow over hundreds of projected-gradient steps).
    saw_iterations = 0
    for _ in range(3):
        G = rng.standard_normal((T, T + 3))
        M = G @ G.T
        for mask in _official_masks(rng, T):
            expected, iterations = tiny.official_min_norm(M, mask)
            saw_iterations = max(saw_iterations, iterations)
            for name, _ in compilers():
                compiled = _COMPILED[name]
                context = f"T={T} mask={mask.astype(int)} {np.dtype(dtype).name} {name}"
                alpha, used = solve_official(M, dtype, compiled, mask=tensor(mask))
                np.testing.assert_array_equal(alpha[~mask], 0.0, err_msg=context)
                assert_on_simplex(alpha, context, atol=1e-5)
                if dtype == np.float64:
                    atol = round_off_atol(lambda m: tiny.official_min_norm(m, mask)[0], M)
                    np.testing.assert_allclose(alpha, expected, rtol=0, atol=atol, err_msg=context)
                    assert used == iterations, f"{context}: {used} iterations, the transcription {iterations}"
                else:
                    # float32 round-off moves where the 1e-5 stop triggers.
                    np.testing.assert_allclose(alpha, expected, rtol=0, atol=5e-4, err_msg=context)
                if mask.sum() < 3:
                    assert used == 0, f"{context}: fewer than 3 points take no iteration"
    if T > 2:
        assert saw_iterations > 3, "the cases should exercise the projected-gradient loop"


def test_official_two_point_rule_clips_to_0001_0999():
    # g1 . g2 = 2 >= g1 . g1 = 1: the exact optimum is the vertex g1.
    G = np.array([[1.0, 0.0], [2.0, 1.0]])
    M = G @ G.T
    for dtype in DTYPES:
        alpha, used = solve_official(M, dtype)
        np.testing.assert_allclose(alpha, [0.999, 0.001], rtol=0, atol=1e-7)
        assert used == 0
        swapped, _ = solve_official(M[::-1, ::-1], dtype)
        np.testing.assert_allclose(swapped, [0.001, 0.999], rtol=0, atol=1e-7)
        exact, _ = solve(M, dtype)
        np.testing.assert_allclose(exact, [1.0, 0.0], rtol=0, atol=1e-7)
        # The same pair inside a larger problem whose other points are masked out.
        M3 = np.zeros((3, 3))
        M3[np.ix_([0, 2], [0, 2])] = M
        masked, _ = solve_official(M3, dtype, mask=tensor([True, False, True]))
        np.testing.assert_allclose(masked, [0.999, 0.0, 0.001], rtol=0, atol=1e-7)
    # Interior optimum: the unclipped two-point formula, the same as eq. 4.
    G = np.array([[1.0, 0.0], [0.0, 2.0]])
    alpha, _ = solve_official(G @ G.T, np.float64)
    # gamma = 4 / 5 from the exact integers of M (one division, one subtraction and the rescaling of M by
    # its largest diagonal entry): a few roundings of numbers <= 1, so 8 eps.
    np.testing.assert_allclose(alpha, [0.8, 0.2], rtol=0, atol=8 * EPS64)


def test_official_stops_on_a_small_l1_change_and_returns_the_point_before_it():
    rng = np.random.default_rng(5)
    G = rng.standard_normal((6, 9))
    M = G @ G.T
    expected, iterations = tiny.official_min_norm(M)
    assert 3 < iterations < 250
    alpha, used = solve_official(M, np.float64)
    assert used == iterations
    # Not 1e-12: this path moves by S ~ 1e4 eps per eps of relative change in M (round_off_atol), so two
    # codings of it differ by ~1e-12 (1.02e-12 on one x86-64 machine).
    np.testing.assert_allclose(alpha, expected, rtol=0, atol=round_off_atol(lambda m: tiny.official_min_norm(m)[0], M))
    # The last step changed alpha by less than 1e-5 and was not taken: the
    # answer is the iterate after iterations - 1 steps, which the step before
    # it moved by at least 1e-5 in L1. The same graph on the same inputs: equal bit for bit.
    before, used_before = solve_official(M, np.float64, max_iterations=tensor(iterations - 1))
    assert used_before == iterations - 1
    np.testing.assert_array_equal(before, alpha)
    earlier, _ = solve_official(M, np.float64, max_iterations=tensor(iterations - 2))
    assert np.sum(np.abs(before - earlier)) >= 1e-5
    # A looser L1 threshold stops earlier, where the transcription does.
    loose_expected, loose_iterations = tiny.official_min_norm(M, tolerance=1e-2)
    loose, loose_used = solve_official(M, np.float64, tolerance=1e-2)
    assert loose_used == loose_iterations < iterations
    atol = round_off_atol(lambda m: tiny.official_min_norm(m, tolerance=1e-2)[0], M)
    np.testing.assert_allclose(loose, loose_expected, rtol=0, atol=atol)


def test_official_iteration_cap_is_real():
    rng = np.random.default_rng(2)
    G = rng.normal(size=(8, 10)) * np.exp(rng.uniform(-1.5, 1.5, (8, 1)))  # norms spread over ~1.3 decades
    M = G @ G.T
    # The official loop (no counter) would run on past 250 steps here.
    _, uncapped = tiny.official_min_norm(M, max_iterations=100_000)
    assert uncapped > 250
    expected, iterations = tiny.official_min_norm(M)
    assert iterations == 250
    alpha, used = solve_official(M, np.float64)
    assert used == 250
    np.testing.assert_allclose(alpha, expected, rtol=0, atol=round_off_atol(lambda m: tiny.official_min_norm(m)[0], M))
    for cap in [1, 2, 7, 40]:
        expected, _ = tiny.official_min_norm(M, max_iterations=cap)
        alpha, used = solve_official(M, np.float64, max_iterations=tensor(cap))
        assert used == cap
        atol = round_off_atol(lambda m: tiny.official_min_norm(m, max_iterations=cap)[0], M)
        np.testing.assert_allclose(alpha, expected, rtol=0, atol=atol, err_msg=f"cap {cap}")


@pytest.mark.parametrize("scale", [1e-9, 1e-4, 1e4, 1e9])
def test_official_step_constants_are_in_the_callers_units(scale):
    # The 1e-7 floor and the default step 1 act on the caller's numbers, so
    # the official path depends on the scale of M; the solver divides M by
    # its largest diagonal entry inside and must still follow that path.
    rng = np.random.default_rng(5)
    G = rng.standard_normal((6, 9))
    M = scale * (G @ G.T)
    expected, iterations = tiny.official_min_norm(M)
    alpha, used = solve_official(M, np.float64)
    assert used == iterations
    np.testing.assert_allclose(alpha, expected, rtol=0, atol=round_off_atol(lambda m: tiny.official_min_norm(m)[0], M))


def test_official_path_depends_on_the_scale():
    # Guards the test above: were the path scale-free, it could not tell.
    rng = np.random.default_rng(5)
    G = rng.standard_normal((6, 9))
    M = G @ G.T
    base, _ = tiny.official_min_norm(M)
    assert np.max(np.abs(tiny.official_min_norm(1e-9 * M)[0] - base)) > 1e-2


# ----------------------------------------------------------------------------
# Two tasks: the closed form (eq. 4).


def paper_eq_4(g1, g2):
    """alpha for g1: [((g2 - g1) . g2) / ||g1 - g2||^2] clipped to [0, 1]."""
    return float(np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0.0, 1.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_two_task_closed_form(rng, dtype):
    tol = 2e-6  # float32; float64 derives its tolerance pair by pair below
    pairs = [gradients(rng, 2, D, kind) for D in [1, 2, 5, 50] for kind in ["gaussian", "aligned", "spread"]]
    g = rng.standard_normal(4)
    pairs += [np.vstack([g, 2 * g]), np.vstack([3 * g, g]), np.vstack([g, -0.2 * g])]  # clipped at 1, 0; interior
    clipped = 0
    for G in pairs:
        M = tensor((G @ G.T).astype(dtype))
        alpha = numpy(solvers.two_task_weights(M))
        expected = paper_eq_4(G[0], G[1])
        if dtype == np.float64:
            # The solver reads M: its entries carry D eps max|M| of rounding, and (M22 - M12) / (M11 + M22 - 2 M12)
            # cancels down to ||g1 - g2||^2, so gamma carries 8 D eps max|M| / ||g1 - g2||^2.
            tol = 8 * G.shape[1] * EPS64 * np.abs(G @ G.T).max() / max(np.sum((G[0] - G[1]) ** 2), 1e-300)
        np.testing.assert_allclose(alpha, [expected, 1 - expected], rtol=0, atol=tol, err_msg=f"G={G}")
        np.testing.assert_array_equal(numpy(solvers.min_norm_weights(M)), alpha)
        alpha_ref = ref.exact_min_norm(G)
        assert_near_optimal(G, alpha.astype(np.float64), alpha_ref, dtype, f"G={G}")
        clipped += expected in (0.0, 1.0)
        if expected in (0.0, 1.0):
            # The paper clips to [0, 1]; the official code's [0.001, 0.999] would fail here.
            assert set(alpha.tolist()) == {0.0, 1.0}, alpha
    assert clipped >= 2


def test_two_task_closed_form_near_identical_gradients_in_float32(rng):
    # ||g1 - g2||^2 is below float32 round-off of the Gram entries; the
    # shorter gradient must still win (not 0.5 / 0.5).
    g = rng.standard_normal(10)
    for factor in [1 + 1e-3, 1 + 1e-4]:
        for order in [(g, factor * g), (factor * g, g)]:
            G = np.vstack(order)
            alpha = numpy(solvers.two_task_weights(tensor((G @ G.T).astype(np.float32))))
            assert_near_optimal(G, alpha.astype(np.float64), ref.exact_min_norm(G), np.float32, f"factor {factor}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_two_task_closed_form_without_curvature(dtype):
    # a - 2b + c <= 0 (identical gradients, or a Gram matrix that round-off
    # made indefinite): the objective is linear in alpha_1, from c to a.
    cases = {((1.0, 1.5), (1.5, 2.0)): [1.0, 0.0], ((2.0, 1.6), (1.6, 1.0)): [0.0, 1.0],
             ((1.0, 1.0), (1.0, 1.0)): [0.5, 0.5], ((3.0, 3.5), (3.5, 3.0)): [0.5, 0.5]}
    for gram, expected in cases.items():
        alpha = numpy(solvers.two_task_weights(tensor(gram, dtype)))
        np.testing.assert_array_equal(alpha, expected, err_msg=f"gram {gram}")


def test_two_task_weights_rejects_other_sizes():
    with pytest.raises(ValueError, match="2 x 2"):
        solvers.two_task_weights(keras.ops.eye(3))


# ----------------------------------------------------------------------------
# Gradient normalisation (REFERENCE.md section 1).


def normalised_gradients(G, losses, kind):
    """g_t / s_t in numpy: s = 1, ||g||, |L|, |L| ||g||; a zero scale leaves g_t alone."""
    norms = np.linalg.norm(G, axis=1)
    losses = np.abs(np.asarray(losses, np.float64))
    s = {"none": np.ones(len(G)), "l2": norms, "loss": losses, "loss+": losses * norms}[kind]
    s = np.where(s > 0, s, 1.0)
    return G / s[:, None]


@pytest.mark.parametrize("kind", solvers.NORMALIZATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_normalisations_match_numpy(rng, kind, dtype):
    # A normalised Gram entry is a D = 7-term dot product and at most 4 more roundings (norms, loss
    # scaling), in either coding: 2 (7 + 4) eps relative to the largest entry (the atol below).
    rtol = 2 * (7 + 4) * EPS64 if dtype == np.float64 else 1e-5
    G = gradients(rng, 5, 7, "spread")
    losses = rng.uniform(0.1, 3.0, 5)
    losses[2] = -losses[2]  # the absolute value is used
    cases = [(G, losses)]
    G_zero = G.copy()
    G_zero[1] = 0.0
    losses_zero = losses.copy()
    losses_zero[3] = 0.0
    cases += [(G_zero, losses), (G, losses_zero), (G_zero, losses_zero)]
    for G_, L_ in cases:
        M = tensor((G_ @ G_.T).astype(dtype))
        out = numpy(solvers.normalize_gram(M, tensor(L_.astype(dtype)), kind))
        assert out.dtype == dtype and np.all(np.isfinite(out))
        Gn = normalised_gradients(G_, L_, kind)
        expected = Gn @ Gn.T
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
        # The weights are the min-norm point of the normalised gradients.
        alpha = numpy(min_norm_weights(tensor(out))).astype(np.float64)
        assert_near_optimal(Gn, alpha, ref.exact_min_norm(Gn), dtype, f"{kind} normalised")


def test_l2_normalisation_makes_unit_norms(rng):
    G = gradients(rng, 4, 6, "spread")
    out = numpy(solvers.normalize_gram(tensor(G @ G.T), None, "l2"))
    np.testing.assert_allclose(np.diag(out), 1.0, rtol=4 * EPS64)  # M_ii / (sqrt(M_ii) sqrt(M_ii)): 3 roundings


def test_normalisation_errors(rng):
    M = keras.ops.eye(3)
    with pytest.raises(ValueError, match="Unknown gradient normalization 'l1'.*none, l2, loss, loss\\+"):
        solvers.normalize_gram(M, [1.0, 1.0, 1.0], "l1")
    with pytest.raises(ValueError, match="needs the task losses"):
        solvers.normalize_gram(M, None, "loss")
    with pytest.raises(ValueError, match="one loss per task \\(3\\), got 2"):
        solvers.normalize_gram(M, [1.0, 2.0], "loss+")


# ----------------------------------------------------------------------------
# Mask (Pareto MTL): only allowed points get weight.


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_mask_solves_the_restricted_problem(rng, dtype):
    T = 9
    for D in [4, 15]:
        G = gradients(rng, T, D, "gaussian")
        M = (G @ G.T).astype(dtype)
        masks = [np.ones(T, bool), np.eye(T, dtype=bool)[3], rng.random(T) < 0.5, rng.random(T) < 0.8]
        masks.append(np.array([i % 3 == 0 for i in range(T)]))
        for mask in masks:
            if not mask.any():
                continue
            context = f"D={D} mask={mask.astype(int)}"
            alpha, _ = solve(M, dtype, mask=tensor(mask))
            np.testing.assert_array_equal(alpha[~mask], 0.0, err_msg=context)
            assert_on_simplex(alpha, context)
            restricted = ref.exact_min_norm_masked(G, mask)
            assert_near_optimal(G[mask], alpha[mask], restricted[mask], dtype, context)
            fw, _ = solve(M, dtype, method="frank_wolfe", mask=tensor(mask))
            np.testing.assert_array_equal(fw[~mask], 0.0, err_msg=context)
            assert_on_simplex(fw, context + " frank_wolfe", atol=1e-5)


def test_mask_edge_cases(rng):
    G = gradients(rng, 4, 3, "gaussian")
    M = G @ G.T
    # Excluded rows may hold garbage: it must not leak into alpha.
    M_bad = M.copy()
    M_bad[1, :] = M_bad[:, 1] = np.nan
    mask = np.array([True, False, True, True])
    alpha = numpy(solvers.min_norm_weights(tensor(M_bad), mask=mask))
    assert_near_optimal(G[mask], alpha[mask], ref.exact_min_norm(G[mask]), np.float64, "NaN in excluded row")
    assert alpha[1] == 0.0
    # T = 2 with one point excluded, and all points excluded.
    np.testing.assert_array_equal(numpy(solvers.min_norm_weights(tensor(M[:2, :2]), mask=[False, True])), [0, 1])
    for method in solvers.METHODS:
        np.testing.assert_array_equal(
            numpy(solvers.min_norm_weights(tensor(M), method=method, mask=np.zeros(4, bool))), np.zeros(4)
        )
    with pytest.raises(ValueError, match="one entry per task \\(4\\), got 3"):
        solvers.min_norm_weights(tensor(M), mask=[True, True, False])


# ----------------------------------------------------------------------------
# Compiled: tf.function and XLA (TensorFlow) / jax.jit (JAX) give the eager result.


def _everything(gram, losses, mask):
    # One Wolfe instance per compile: XLA compiles each for seconds on CPU.
    normalised = solvers.normalize_gram(gram, losses, "loss+")
    return (
        solvers.min_norm_weights_with_info(normalised, mask=mask),
        solvers.min_norm_weights_with_info(gram, method="frank_wolfe"),
        solvers.min_norm_weights(gram[:2, :2]),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_compiled_matches_eager(rng, dtype):
    atol = 1e-9 if dtype == np.float64 else 1e-4
    T = 7
    G = gradients(rng, T, 12, "gaussian")  # positive definite M: unique optimum
    args = (
        tensor((G @ G.T).astype(dtype)),
        tensor(rng.uniform(0.5, 2.0, T).astype(dtype)),
        tensor(np.array([True, False, True, True, False, True, True])),
    )
    eager = keras.tree.map_structure(numpy, _everything(*args))
    for _, jit_compile in compilers():
        out = keras.tree.map_structure(numpy, compile_fn(_everything, jit_compile=jit_compile)(*args))
        for e, o in zip(keras.tree.flatten(eager), keras.tree.flatten(out)):
            assert o.dtype == e.dtype
            np.testing.assert_allclose(o, e, rtol=0, atol=atol)
    # And the weights are right, not merely reproducible.
    mask, losses = numpy(args[2]), numpy(args[1]).astype(np.float64)
    Gn = normalised_gradients(G, losses, "loss+")[mask]
    alpha = eager[0][0].astype(np.float64)
    assert_near_optimal(Gn, alpha[mask], ref.exact_min_norm(Gn), dtype, "compiled case")
    np.testing.assert_array_equal(alpha[~mask], 0.0)


@pytest.mark.skipif(not ON_TENSORFLOW, reason="a tf.function input signature with an unknown T is TensorFlow's")
def test_unknown_number_of_tasks_in_a_graph(rng):
    import tensorflow as tf

    solve_any = tf.function(solvers.min_norm_weights, input_signature=[tf.TensorSpec([None, None], tf.float64)])
    for T in [2, 3, 6]:
        G = gradients(rng, T, 4, "gaussian")
        alpha = solve_any(tf.constant(G @ G.T)).numpy()
        assert_near_optimal(G, alpha, ref.exact_min_norm(G), np.float64, f"dynamic T={T}")


# ----------------------------------------------------------------------------
# Permutation equivariance, iteration counts, bad input.


@pytest.mark.parametrize("method", solvers.METHODS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_permuting_tasks_permutes_alpha(rng, dtype, method):
    atol = 1e-9 if dtype == np.float64 else 1e-4
    if method == "official" and dtype == np.float32:
        # It stops on a small step of a slowly converging projected gradient,
        # so where it stops follows the round-off along the way.
        atol = 1e-3
    T = 8
    for D in [10, 30]:  # D > T: M is positive definite, the optimum unique
        G = gradients(rng, T, D, "gaussian")
        alpha, _ = solve(G @ G.T, dtype, method=method)
        for _ in range(3):
            perm = rng.permutation(T)
            permuted, _ = solve(G[perm] @ G[perm].T, dtype, method=method)
            np.testing.assert_allclose(permuted, alpha[perm], atol=atol, err_msg=f"perm {perm}")


def test_iterations_are_bounded_by_the_cap(rng):
    G = gradients(rng, 30, 60, "gaussian")
    M = tensor(G @ G.T)
    _, needed = min_norm_weights_with_info(M)
    support = int(np.sum(ref.exact_min_norm(G) > 0))
    # Every point of the optimal support has to enter: at least one step each.
    assert support <= int(needed) <= 10 * 30 + 50, (support, int(needed))
    for cap in [1, 5, int(needed) - 1]:
        alpha, used = min_norm_weights_with_info(M, max_iterations=cap)
        assert int(used) == cap
        assert_on_simplex(numpy(alpha), f"cap {cap}")
    alpha, used = min_norm_weights_with_info(M, method="frank_wolfe", max_iterations=7)
    assert int(used) == 7
    # A looser tolerance stops earlier and is still within it.
    loose, used_loose = min_norm_weights_with_info(M, tolerance=1e-2)
    assert int(used_loose) < int(needed)
    gap = ref.kkt_gap(G @ G.T, numpy(loose)) / np.max(np.sum(G * G, axis=1))
    assert gap <= 1e-2


def test_bad_input_errors():
    with pytest.raises(ValueError, match="Unknown min-norm method 'pgd'; valid methods: wolfe, frank_wolfe"):
        solvers.min_norm_weights(keras.ops.eye(3), method="pgd")
    with pytest.raises(ValueError, match="square T x T matrix, got shape \\(2, 3\\)"):
        solvers.min_norm_weights(keras.ops.ones([2, 3]))
    with pytest.raises(ValueError, match="rank 2"):
        solvers.min_norm_weights(keras.ops.ones([3]))
    with pytest.raises(ValueError, match="max_iterations must be a positive integer"):
        solvers.min_norm_weights(keras.ops.eye(3), max_iterations=0)
    with pytest.raises(ValueError, match="tolerance must be a non-negative number"):
        solvers.min_norm_weights(keras.ops.eye(3), tolerance=-1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_official_simplex_projection_is_exact_at_every_scale(dtype):
    """The official solver's projection step, on iterates of any size (they reach the Gram matrix's scale)."""
    from mtl_tf.solvers.official import _simplex_projection
    from tests.balancers.simplex_reference import bisection_projection, projection_tolerance

    rng = np.random.default_rng(5)
    np_dtype = np.dtype(dtype).type
    for scale in [10.0 ** k for k in range(-8, 13)]:
        for num in (2, 3, 5):
            for v in (scale * rng.normal(size=num), scale + rng.uniform(-1.0, 1.0, size=num)):
                v = np.asarray(v, np_dtype)
                for allowed in (np.ones(num, bool), rng.random(num) < 0.7):
                    if not allowed.any():
                        continue
                    count = keras.ops.convert_to_tensor(float(allowed.sum()), dtype)
                    got = numpy(_simplex_projection(tensor(v), tensor(allowed), count)).astype(np.float64)
                    want = np.zeros(num)
                    want[allowed] = bisection_projection(v[allowed])
                    # This code's bound in its dtype, plus the float64 reference's own.
                    tol = projection_tolerance(num, np_dtype) + projection_tolerance(num, np.float64)
                    np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"v={v!r} allowed={allowed}")


# ----------------------------------------------------------------------------
# Precision: where the backend has no float64 (JAX without jax_enable_x64, TPUs), the
# default is float32 and still exact to the float32 tolerance; float64 asked for
# explicitly is refused by name (never a silent float32 solve). `float64_unavailable`
# (tests/precision.py) turns float64 off for real on JAX and by patching elsewhere.


def test_explicit_float64_request_without_float64_is_refused(float64_unavailable):
    from mtl_tf.solvers.fair import fair_weights
    from mtl_tf.solvers.qp import dual_cone_weights, lower_bounded_qp

    M = np.array([[2.0, -0.5, 0.1], [-0.5, 1.0, 0.2], [0.1, 0.2, 3.0]])
    for method in solvers.METHODS:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            solvers.min_norm_weights(M, method=method, dtype="float64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        solvers.two_task_weights(M[:2, :2], dtype="float64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        lower_bounded_qp(M, np.zeros((3, 3)), np.eye(3) / 3, dtype="float64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        dual_cone_weights(M, np.eye(3), dtype="float64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        fair_weights(M, 1.0, dtype="float64")
    # The defaults fall back to float32 instead.
    assert dtype_name(lower_bounded_qp(M, np.zeros((3, 3)), np.eye(3) / 3)[0]) == "float32"
    assert dtype_name(fair_weights(M, 1.0)[0]) == "float32"


# Under JAX every solve here is eager (the fall-back from float64 NumPy input is the point), and JAX traces and
# compiles an eager lax.while_loop again at each call (about a CPU second): there T = 3 runs, T = 10, 40 add sizes.
@pytest.mark.parametrize("T", full_sweep_on_tensorflow(
    [3, 10, 40], kept={0}, reason="T = 3 (both D, every kind) takes the float32 fall-back through the whole solver"))
def test_float32_fallback_reaches_the_exact_optimum(rng, T, float64_unavailable):
    # float64 NumPy input where float64 is not real: solved and returned in float32, held to the float32
    # tolerance of test_default_reaches_the_exact_optimum against the exact float64 optimum.
    for D in sorted({max(1, T // 2), T + 3}):
        for kind in KINDS:
            G = gradients(rng, T, D, kind)
            alpha = solvers.min_norm_weights(G @ G.T)
            assert dtype_name(alpha) == "float32"
            alpha = numpy(alpha).astype(np.float64)
            context = f"float32 fall-back T={T} D={D} {kind}"
            assert_on_simplex(alpha, context)
            assert_near_optimal(G, alpha, ref.exact_min_norm(G), np.float32, context)


def test_dtype_argument_picks_the_working_precision(rng):
    G = gradients(rng, 6, 9, "spread")
    M = G @ G.T
    alpha = solvers.min_norm_weights(M, dtype="float32")  # float64 input solved in float32, returned as float64
    assert dtype_name(alpha) == "float64"
    assert_near_optimal(G, numpy(alpha), ref.exact_min_norm(G), np.float32, "dtype=float32")
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        solvers.min_norm_weights(M, dtype="int32")
