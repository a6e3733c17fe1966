"""`mtl_tf.solvers.qp.lower_bounded_qp` against brute-force enumeration of active sets and the KKT conditions.

For T <= 4 the exact optimum of min 1/2 x^T Q x + p^T x s.t. x >= l (and
sum x = 1) is found by trying every set of bounds held active, solving the
equality-constrained problem on the rest, and keeping the best feasible point;
for larger T the returned point is checked against the KKT conditions.

Backend-neutral (run under JAX too, float64 through `tests.precision.float64_on_jax`);
`test_compiles_with_xla` compiles with `tf.function(jit_compile=True)` on TensorFlow
and `jax.jit` on JAX.
"""

import itertools

import keras
import numpy as np
import pytest

from mtl_tf.solvers.qp import lower_bounded_qp
from tests.precision import float64_on_jax, float64_unavailable  # noqa: F401  (fixtures)


def tensor(x, dtype=None):
    return keras.ops.convert_to_tensor(x if dtype is None else np.asarray(x, dtype))


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def xla(fn):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import jax

    return jax.jit(fn)

EPS64 = np.finfo(np.float64).eps


def solver(**options):
    """`lower_bounded_qp(q, p, lower, **options)`: eager under TensorFlow, one `jax.jit` under JAX.

    JAX traces and compiles an eager `lax.while_loop` again at every call (about a CPU second each);
    jitted, the solver compiles once per shape. These tests check the solutions against the
    enumerated optimum with bounds from the arithmetic, which hold for either coding.
    """
    if keras.backend.backend() != "jax":
        return lambda q, p, lower, **more: lower_bounded_qp(q, p, lower, **options, **more)
    import jax

    return jax.jit(lambda q, p, lower: lower_bounded_qp(q, p, lower, **options))


def brute_force(q, p, lower, simplex):
    # Feasibility of a candidate (an lstsq solution of a system of at most 5 unknowns, O(1) entries):
    # violations above 1e-12 (4500 eps) are real, those below are the candidate's own rounding; the sum
    # is allowed 1e-9 because lstsq on a singular Q (D < n) meets the equality only to its condition
    # times eps; values within 1e-15 (5 eps of an O(1) objective) are ties, the first is kept.
    n = len(p)
    best, best_value = None, np.inf
    for size in range(n + 1):
        for held in itertools.combinations(range(n), size):
            free = [i for i in range(n) if i not in held]
            x = lower.copy()
            if free:
                rows = len(free) + (1 if simplex else 0)
                system = np.zeros((rows, rows))
                system[: len(free), : len(free)] = q[np.ix_(free, free)]
                rhs = -(p[free] + q[np.ix_(free, list(held))] @ lower[list(held)])
                if simplex:
                    system[: len(free), -1] = system[-1, : len(free)] = 1.0
                    rhs = np.append(rhs, 1.0 - lower[list(held)].sum())
                x[free] = np.linalg.lstsq(system, rhs, rcond=None)[0][: len(free)]
            elif simplex and abs(lower.sum() - 1) > 1e-12:
                continue
            if np.any(x < lower - 1e-12) or (simplex and abs(x.sum() - 1) > 1e-9):
                continue
            value = 0.5 * x @ q @ x + p @ x
            if value < best_value - 1e-15:
                best, best_value = x, value
    return best, best_value


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("num", [2, 3, 4])
def test_equals_the_enumerated_optimum(num, simplex):
    rng = np.random.default_rng(num + 10 * simplex)
    solve = solver(simplex=simplex)
    for trial in range(6):
        g = rng.normal(size=(num, int(rng.integers(1, 2 * num))))  # singular Q in some trials
        q = g @ g.T
        if simplex:
            p = rng.normal(size=(2, num))
            lower = np.zeros((2, num))
        else:
            p = np.zeros((num, num))
            lower = np.eye(num) / num  # the dual-cone projections of UPGrad
        x, _ = solve(tensor(q), tensor(p), tensor(lower))
        for b in range(len(p)):
            _, value = brute_force(q, p[b], lower[b], simplex)
            got = numpy(x)[b]
            # A coordinate that hits its bound is set to it exactly; another one that ties with it in the
            # same step can round below by that step's rounding on numbers <= 1: 4 eps.
            assert np.all(got >= lower[b] - 4 * EPS64)
            if simplex:
                assert abs(got.sum() - 1) <= 4 * num * EPS64  # a sum of num numbers <= 1, renormalised
            # Both are optimal points: the objective is stationary there, so only its evaluation
            # (num^2 + num products of entries <= scale) differs, twice: 4 (num^2 + num) eps * scale.
            scale = max(1.0, abs(value), np.abs(q).max())
            assert 0.5 * got @ q @ got + p[b] @ got <= value + 4 * (num**2 + num) * EPS64 * scale


def test_kkt_conditions_hold_for_forty_variables():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 60))
    q = g @ g.T
    lower = np.eye(40) / 40
    x, iterations = lower_bounded_qp(tensor(q), tensor(np.zeros([40, 40])), tensor(lower))
    x = numpy(x)
    gradient = x @ q  # Q x for every row (Q symmetric)
    scale = np.abs(np.diag(q)).max()
    # The solver puts active coordinates exactly on their bound; the free ones of this draw are > 1e-6
    # above it, so 1e-12 separates them. The free gradient is the residual of a backward-stable solve:
    # a 40-term product, 4 T eps * scale whatever the condition; the active multipliers likewise.
    active = x - lower <= 1e-12
    assert np.all(np.abs(gradient[~active]) <= 4 * 40 * EPS64 * scale)
    assert np.all(gradient[active] >= -4 * 40 * EPS64 * scale)
    assert int(iterations) < 10 * 40 + 20


def test_fixed_coordinates_stay_at_their_bound():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(4, 6))
    q = g @ g.T
    p = rng.normal(size=(1, 4))
    fixed = np.array([[False, True, False, False]])
    x, _ = lower_bounded_qp(tensor(q), tensor(p), tensor(np.zeros([1, 4])), simplex=True,
                            fixed=tensor(fixed))
    keep = [0, 2, 3]
    _, value = brute_force(q[np.ix_(keep, keep)], p[0, keep], np.zeros(3), True)
    got = numpy(x)[0]
    assert got[1] == 0.0
    # As in test_equals_the_enumerated_optimum: two evaluations of a stationary objective, n = 4.
    assert 0.5 * got @ q @ got + p[0] @ got <= value + 4 * (4**2 + 4) * EPS64 * max(1.0, abs(value), np.abs(q).max())


def test_compiles_with_xla():
    q = tensor([[1.0, -0.8], [-0.8, 1.0]], np.float32)
    lower = keras.ops.eye(2) / 2
    solve = xla(lambda q, lower: lower_bounded_qp(q, keras.ops.zeros_like(lower), lower)[0])
    eager = lower_bounded_qp(q, keras.ops.zeros_like(lower), lower)[0]
    np.testing.assert_allclose(numpy(solve(q, lower)), numpy(eager), atol=1e-6)


@pytest.mark.parametrize("simplex", [False, True])
def test_float32_path_equals_the_enumerated_optimum(simplex):
    # The float32 path (the default where the backend has no float64): the bounds of
    # test_equals_the_enumerated_optimum with float32's eps in place of float64's (the same roundings, now
    # of float32 numbers; the 1e-6 relative ridge moves a stationary objective only to second order).
    eps32 = float(np.finfo(np.float32).eps)
    solve = solver(simplex=simplex, dtype="float32")
    for num in [2, 3, 4]:
        rng = np.random.default_rng(num + 10 * simplex)
        for trial in range(6):
            g = rng.normal(size=(num, int(rng.integers(1, 2 * num))))
            q = g @ g.T
            p = rng.normal(size=(2, num)) if simplex else np.zeros((num, num))
            lower = np.zeros((2, num)) if simplex else np.eye(num) / num
            x, _ = solve(tensor(q), tensor(p), tensor(lower))
            assert keras.backend.standardize_dtype(x.dtype) == "float32"
            for b in range(len(p)):
                _, value = brute_force(q, p[b], lower[b], simplex)
                got = numpy(x)[b].astype(np.float64)
                assert np.all(got >= lower[b] - 4 * eps32)
                if simplex:
                    assert abs(got.sum() - 1) <= 4 * num * eps32
                scale = max(1.0, abs(value), np.abs(q).max())
                assert 0.5 * got @ q @ got + p[b] @ got <= value + 4 * (num**2 + num) * eps32 * scale
