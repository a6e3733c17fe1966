"""`pareto_mtl` (Lin, Zhen, Li, Zhang & Kwong, NeurIPS 2019) against a NumPy step.

Reference (paper sections 4.1-4.2 and the official code's conventions the
module documents): unit preferences u_1..u_K, the chosen u_k, constraints
G_j = (u_j - u_k)^T L / ||L|| <= 0, active when G_j > 0. g_t is the gradient of
L_t with respect to all parameters (shared and heads).
  initial phase (while a constraint is active, no feasible point seen yet and
    fewer than `init_max_steps` initial steps): beta = the min-norm point of
    {sum_t (u_j - u_k)_t g_t : j active}, w = sum_j beta_j (u_j - u_k);
  main phase: beta = the min-norm point of {g_t} and the active constraint
    gradients, w_t = beta_t + sum_j beta_j (u_j - u_k)_t, rescaled so that
    sum_t |w_t| = T;
  every parameter takes the SGD step on sum_t w_t L_t.
The min-norm points are exact (enumeration of the faces of the simplex).
"""

import math

import numpy as np
import pytest

import mtl_tf
from tests.balancers import properties, tiny
from tests.balancers import test_properties as suite


def default_preferences(num_tasks):
    if num_tasks == 2:  # five points on the quarter circle, the official default
        return [[math.cos(a), math.sin(a)] for a in np.linspace(0.0, math.pi / 2, 5)], 2
    return [list(row) for row in np.eye(num_tasks)] + [[1.0] * num_tasks], num_tasks


def full_gradients(params, setup):
    """[T, n]: each task's gradient over every parameter (zeros on the other heads)."""
    grads = tiny.task_gradients(params, setup)
    rows = []
    for t in setup.tasks:
        parts = [tiny.shared_vector(grads[t])]
        for other in setup.tasks:
            head = [grads[t]["V"].ravel(), grads[t]["c"].ravel()] if other == t else [
                np.zeros(params["V"][other].size), np.zeros(params["c"][other].size)]
            parts += head
        rows.append(np.concatenate(parts))
    return np.array(rows)


def official_weights(gram):
    """The official min-norm routine's weights (NumPy transcription in `tiny`)."""
    return tiny.official_min_norm(gram)[0]


MIN_NORM = {"wolfe": tiny.exact_min_norm, "official": official_weights}


def reference_steps(setup, steps, preferences=None, index=None, init_max_steps=1000, min_norm=tiny.exact_min_norm):
    """Returns (params, [(weights, in initial phase, active set) per step], init steps, feasible).

    min_norm: gram -> the min-norm weights (exact by default).
    """
    if preferences is None:
        preferences, index = default_preferences(setup.num_tasks)
    U = np.array(preferences, np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    D = U - U[index]
    T = setup.num_tasks
    params, history, init_steps, feasible = setup.params, [], 0, False
    for _ in range(steps):
        G = full_gradients(params, setup)
        task_losses = tiny.losses(params, setup)
        active = D @ (task_losses / np.linalg.norm(task_losses)) > 0
        in_init = bool(active.any()) and not feasible and init_steps < init_max_steps
        DA = D[active]
        if in_init:
            vectors = DA @ G
            beta = min_norm(vectors @ vectors.T)
            weights = DA.T @ beta
        else:
            vectors = np.concatenate([G, DA @ G])
            beta = min_norm(vectors @ vectors.T)
            weights = beta[:T] + DA.T @ beta[T:]
            weights = weights * T / np.abs(weights).sum()
        history.append((weights, in_init, np.flatnonzero(active)))
        init_steps += int(in_init)
        feasible = feasible or not active.any()
        params = tiny.weighted_step(params, setup, weights)
    return params, history, init_steps, feasible


def _check(setup, options, steps, expect_phases=None, expect_active=None):
    model, logs = tiny.run(setup, "pareto_mtl", options, epochs=steps)
    reference_options = {
        "init_max_steps": options.get("init_max_steps", 1000),
        "min_norm": MIN_NORM[options.get("solver", "wolfe")],
    }
    if "preferences" in options:
        reference_options.update(preferences=options["preferences"], index=options["preference_index"])
    params, history, init_steps, feasible = reference_steps(setup, steps, **reference_options)
    phases = [int(h[1]) for h in history]
    if expect_phases is not None:
        assert phases == expect_phases, f"the case should run the phases {expect_phases}, got {phases}"
    if expect_active is not None:
        assert [len(h[2]) for h in history] == expect_active
    for step, (weights, in_init, _) in enumerate(history):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights, atol=2e-5, rtol=1e-4,
                                   err_msg=f"step {step + 1}")
        assert logs[step]["pareto_init_phase"] == float(in_init)
    tiny.assert_params_close(model, params)
    assert float(model.balancer.init_steps.numpy()) == init_steps
    assert float(model.balancer.feasible.numpy()) == float(feasible)
    return logs, history


def test_initial_phase_two_active_constraints_then_feasible():
    # L_a >> L_b: L/||L|| is nearest the first preference, so two constraints
    # are active; the initial phase runs until the losses enter the region.
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[3.0, 0.6])
    _, history = _check(setup, {}, steps=4, expect_phases=[1, 1, 0, 0])
    assert len(history[0][2]) == 2


def test_initial_phase_one_active_constraint():
    setup = tiny.make_setup(num_tasks=2, seed=62, target_scales=[3.0, 1.6])
    _check(setup, {}, steps=4, expect_phases=[1, 1, 1, 0], expect_active=[1, 1, 1, 0])


def test_feasible_point_ends_the_initial_phase_for_good():
    # Constraints become active again after the first feasible step: the
    # main phase handles them, the initial phase does not come back.
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[1.0, 1.0])
    _check(setup, {}, steps=4, expect_phases=[1, 1, 0, 0], expect_active=[2, 1, 0, 2])


def test_main_phase_feasible_start():
    # No constraint active: w = T * (MGDA's alpha on all parameters).
    setup = tiny.make_setup(num_tasks=2, seed=62, target_scales=[0.5, 2.0])
    _, history = _check(setup, {}, steps=2, expect_phases=[0, 0], expect_active=[0, 2])
    assert np.all(history[0][0] > 0.5)


def test_main_phase_with_active_constraints():
    # No initial phase allowed: the main phase must carry the active constraints.
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[3.0, 0.6])
    _check(setup, {"init_max_steps": 0}, steps=2, expect_phases=[0, 0], expect_active=[2, 0])


def test_init_max_steps_caps_the_initial_phase():
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[3.0, 0.6])
    _check(setup, {"init_max_steps": 1}, steps=3, expect_phases=[1, 0, 0], expect_active=[2, 2, 0])


def test_three_tasks_default_preferences():
    setup = tiny.make_setup(num_tasks=3, seed=63, target_scales=[3.0, 1.0, 0.5])
    _check(setup, {}, steps=3, expect_phases=[1, 0, 0], expect_active=[1, 0, 1])


def test_custom_preferences():
    setup = tiny.make_setup(num_tasks=2, seed=62)
    options = {"preferences": [[1.0, 0.2], [1.0, 1.0], [0.1, 1.0]], "preference_index": 0}
    _check(setup, options, steps=3, expect_phases=[0, 0, 0], expect_active=[0, 2, 2])


@pytest.mark.parametrize("num_tasks,scales", [(2, [3.0, 0.6]), (3, [3.0, 1.0, 0.5])])
def test_properties(num_tasks, scales):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=61 + 2 * (num_tasks - 2), target_scales=scales)
    logs = properties.check_permutation_equivariant(setup, "pareto_mtl", {}, epochs=4)
    properties.check_weights(logs, setup.tasks)
    main = [s for s in logs if s["pareto_init_phase"] == 0.0]
    assert main, "the run should reach the main phase"
    properties.check_weights(main, setup.tasks, abs_total=num_tasks)


@pytest.mark.parametrize("preferences,message", [
    ([[1.0, 0.0], [-0.5, 1.0]], r"preference 1 is \[-0.5, 1.0\]; expected finite entries >= 0"),
    ([[1.0, 0.0], [0.0, 0.0]], r"non-zero vectors: preference 1 is \[0.0, 0.0\]"),
])
def test_bad_preferences_are_refused_by_name(preferences, message):
    setup = tiny.make_setup(num_tasks=2)
    with pytest.raises(ValueError, match=message):
        tiny.build_model(setup, "pareto_mtl", {"preferences": preferences}).build(setup.x.shape)


# -- solver="official": the official code's min-norm routine ---------------------------------------


def test_official_solver_matches_numpy_steps_and_clips_a_vertex():
    # Initial phase with two active constraints (the routine's best pair and
    # projected gradient on 2 points), then the main phase, whose last step
    # has its optimum at a vertex: the official rule gives it 0.999, so after
    # the rescaling to sum |w| = 2 the weights are 1.998 / 0.002, not 2 / 0.
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[3.0, 0.6])
    _, history = _check(setup, {"solver": "official"}, steps=4, expect_phases=[1, 1, 0, 0])
    # 2 * (0.999, 0.001) / (0.999 + 0.001): three roundings of numbers <= 2, so 8 eps; the vertex the
    # same way.
    vertex_atol = 8 * np.finfo(float).eps
    np.testing.assert_allclose(history[3][0], [1.998, 0.002], rtol=0, atol=vertex_atol)
    _, exact, _, _ = reference_steps(setup, 4)
    np.testing.assert_allclose(exact[3][0], [2.0, 0.0], rtol=0, atol=vertex_atol)
    assert np.max(np.abs(exact[0][0] - history[0][0])) > 1e-4, "the solvers should differ in the initial phase"


def test_official_solver_back_in_the_main_phase_with_active_constraints():
    setup = tiny.make_setup(num_tasks=2, seed=61, target_scales=[1.0, 1.0])
    _, history = _check(setup, {"solver": "official"}, steps=4, expect_phases=[1, 1, 0, 0],
                        expect_active=[2, 1, 0, 2])
    _, exact, _, _ = reference_steps(setup, 4)
    assert np.max(np.abs(exact[3][0] - history[3][0])) > 1e-4, "the solvers should differ in the last step"


def test_official_solver_three_tasks():
    # Five points in the main phase's problem (3 tasks and up to 2 active
    # constraints), so the projected-gradient loop runs.
    setup = tiny.make_setup(num_tasks=3, seed=63, target_scales=[3.0, 1.0, 0.5])
    _check(setup, {"solver": "official"}, steps=3, expect_phases=[1, 0, 0], expect_active=[1, 0, 1])


def test_official_solver_properties():
    setup = tiny.make_setup(num_tasks=3, seed=63, target_scales=[3.0, 1.0, 0.5])
    logs = properties.check_permutation_equivariant(setup, "pareto_mtl", {"solver": "official"}, epochs=3)
    properties.check_weights(logs, setup.tasks)


def test_unknown_solver_is_refused_by_name():
    with pytest.raises(ValueError, match=r"solver='frank_wolfe' is not valid; expected one of \['official', 'wolfe'\]"):
        mtl_tf.balancers.get("pareto_mtl", solver="frank_wolfe")


@pytest.mark.parametrize("rule", ["mixed_precision", "stateful_layers", "unlabelled_task", "unlabelled_task_2_replicas"])
def test_contract_rules_with_the_official_solver(rule, monkeypatch, request):
    """The property suite's cases (tests/balancers/test_properties.py) with solver="official"."""
    monkeypatch.setitem(suite.OPTIONS, "pareto_mtl", {"solver": "official"})
    if rule == "mixed_precision":
        suite.mixed_precision_case("pareto_mtl")
    elif rule == "stateful_layers":
        suite.test_stateful_layers_move_once_from_the_real_pass("pareto_mtl")
    elif rule == "unlabelled_task":
        suite.unlabelled_case("pareto_mtl")
    else:
        suite.unlabelled_case("pareto_mtl", request.getfixturevalue("mirrored_strategy"))
