"""`mgda` and `mgda_ub` (Sener & Koltun, NeurIPS 2018) against a NumPy step.

Reference, from the paper (sections 3.1-3.3, Algorithm 2) and REFERENCE.md 1:
  g_t = grad_{theta_sh} L_t (mgda) or grad_Z L_t (mgda_ub, Z = the B x h
  representation, flattened); normalised g_t / s_t with s_t = 1, ||g_t||, L_t or
  L_t ||g_t|| (`none`, `l2`, `loss`, `loss+`); alpha = the exact min-norm point
  of the normalised gradients (closed form eq. 4 for T = 2, enumeration of the
  simplex faces for T = 3); theta_sh <- theta_sh - lr sum_t alpha_t grad_sh L_t
  with the raw losses (for mgda_ub that is the encoder backward pass of
  sum_t alpha_t dL_t/dZ); heads: theta^t <- theta^t - lr grad_t L_t (`paper`) or
  - lr alpha_t grad_t L_t (`official`).
`paper_sequential` is Algorithm 2 in its order (`algorithm_2_step`): the heads
step first, then alpha, the normalising losses and the shared gradient are
taken at the moved heads. `solver="official"` replaces the exact alpha by the
official routine's (`tiny.official_min_norm`).
"""

import copy

import numpy as np
import pytest

from tests.balancers import properties, tiny
from tests.balancers import test_properties as suite

METHODS = ("mgda", "mgda_ub")
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _task_matrix(method, grads, tasks):
    """[T, n] gradients the min-norm problem is posed on."""
    if method == "mgda":
        return np.array([tiny.shared_vector(grads[t]) for t in tasks])
    return np.array([grads[t]["z"].ravel() for t in tasks])


def _alpha(method, grads, task_losses, normalization, tasks, solver="exact"):
    """The min-norm weights of the normalised task gradients: exact, or the official routine's."""
    g = _task_matrix(method, grads, tasks)
    norms = np.linalg.norm(g, axis=1)
    scales = {"none": np.ones(len(tasks)), "l2": norms, "loss": task_losses, "loss+": task_losses * norms}
    normalised = g / scales[normalization][:, None]
    gram = normalised @ normalised.T
    if solver == "official":
        return tiny.official_min_norm(gram)[0]
    return tiny.two_task_alpha(gram) if len(tasks) == 2 else tiny.exact_min_norm(gram)


def reference_step(setup, method, normalization="none", head_update="paper", params=None, solver="exact"):
    """One MGDA / MGDA-UB step in float64; returns (new params, alpha)."""
    params = params or setup.params
    tasks = setup.tasks
    grads = tiny.task_gradients(params, setup)
    alpha = _alpha(method, grads, tiny.losses(params, setup), normalization, tasks, solver)
    new = tiny.shared_step(
        params,
        sum(a * grads[t]["W"] for a, t in zip(alpha, tasks)),
        None if params["b"] is None else sum(a * grads[t]["b"] for a, t in zip(alpha, tasks)),
    )
    for a, t in zip(alpha, tasks):
        scale = 1.0 if head_update == "paper" else a
        tiny.head_step(new, t, scale * grads[t]["V"], None if grads[t]["c"] is None else scale * grads[t]["c"])
    return new, alpha


def test_exact_reference_agrees_with_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = rng.normal(size=(2, 3))
        # The closed form cancels M's entries (3 eps max|M| rounding each) down to ||g1 - g2||^2; the
        # reference solves the 3 x 3 KKT system K = [[M, 1], [1^T, 0]] by lstsq (cond(K) eps):
        # 16 eps (max|M| / ||g1 - g2||^2 + cond(K)).
        M = g @ g.T
        K = np.block([[M, np.ones((2, 1))], [np.ones((1, 2)), np.zeros((1, 1))]])
        atol = 16 * np.finfo(float).eps * (np.abs(M).max() / np.sum((g[0] - g[1]) ** 2) + np.linalg.cond(K))
        np.testing.assert_allclose(tiny.exact_min_norm(g @ g.T), tiny.two_task_alpha(g @ g.T), rtol=0, atol=atol)


def options(head_update="paper", normalization="none"):
    """Full option dicts, so tests with the same options share one cached model."""
    return {"head_update": head_update, "normalization": normalization}


# Every normalisation with the paper's head update, and the official head update
# with two of them: head_update only touches the heads, normalization only alpha.
TWO_TASK_CONFIGS = [("paper", n) for n in NORMALIZATIONS] + [("official", "none"), ("official", "loss+")]


@pytest.mark.parametrize("head_update,normalization", TWO_TASK_CONFIGS)
@pytest.mark.parametrize("method", METHODS)
def test_two_tasks_match_hand_computed_update(method, head_update, normalization):
    # Unbalanced targets, so the normalisations give visibly different alphas.
    setup = tiny.make_setup(num_tasks=2, seed=15, target_scales=[3.0, 0.5])
    model, logs = tiny.run(setup, method, options(head_update, normalization))
    expected, alpha = reference_step(setup, method, normalization, head_update)
    assert 0.05 < alpha[0] < 0.95, "the case should have an interior alpha"
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, atol=1e-5)
    tiny.assert_params_close(model, expected)
    for t, value in zip(setup.tasks, tiny.losses(setup.params, setup)):
        np.testing.assert_allclose(logs[0][f"{t}_loss"], value, rtol=1e-5)


def test_normalizations_change_alpha():
    # Guards the case above: were every normalisation to give the same alpha,
    # a normalisation that is ignored would go unnoticed.
    setup = tiny.make_setup(num_tasks=2, seed=15, target_scales=[3.0, 0.5])
    for method in METHODS:
        alphas = [reference_step(setup, method, n)[1][0] for n in NORMALIZATIONS]
        assert min(abs(a - b) for i, a in enumerate(alphas) for b in alphas[i + 1:]) > 1e-2, (method, alphas)


@pytest.mark.parametrize("head_update", ("paper", "official"))
@pytest.mark.parametrize("method", METHODS)
def test_two_tasks_clipped_alpha(method, head_update):
    """Eq. 4 clipped to [0, 1] (not the official code's [0.001, 0.999]): one task gets all the weight."""
    setup = tiny.make_setup(num_tasks=2, seed=11, target_scales=[3.0, 0.5])
    model, logs = tiny.run(setup, method, options(head_update))
    expected, alpha = reference_step(setup, method, head_update=head_update)
    np.testing.assert_array_equal(alpha, [0.0, 1.0])
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, atol=1e-6)
    tiny.assert_params_close(model, expected)


# seed -> support size of the exact 3-task alpha for both methods:
# 10 is interior (3), 0 lies on an edge (2), 8 is a vertex (1).
THREE_TASK_CASES = {10: 3, 0: 2, 8: 1}


@pytest.mark.parametrize("seed", sorted(THREE_TASK_CASES))
@pytest.mark.parametrize("method", METHODS)
def test_three_tasks_match_hand_computed_update(method, seed):
    setup = tiny.make_setup(num_tasks=3, seed=seed)
    model, logs = tiny.run(setup, method, options())
    expected, alpha = reference_step(setup, method)
    assert np.sum(alpha > 1e-6) == THREE_TASK_CASES[seed]
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, atol=1e-5)
    tiny.assert_params_close(model, expected)


@pytest.mark.parametrize("head_update,normalization", [("paper", "l2"), ("official", "loss+")])
@pytest.mark.parametrize("method", METHODS)
def test_three_tasks_normalised_two_steps(method, head_update, normalization):
    setup = tiny.make_setup(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5])
    model, logs = tiny.run(setup, method, options(head_update, normalization), epochs=2)
    params, alpha_1 = reference_step(setup, method, normalization, head_update)
    params, alpha_2 = reference_step(setup, method, normalization, head_update, params=params)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha_1, atol=1e-5)
    np.testing.assert_allclose(tiny.logged_weights(logs[1], setup.tasks), alpha_2, atol=1e-5)
    tiny.assert_params_close(model, params)


@pytest.mark.parametrize("method", METHODS)
def test_pareto_stationary_point(method):
    """Exactly opposite task gradients: alpha = 1/2, the shared layers do not move."""
    setup = tiny.make_setup(num_tasks=2, seed=12, conflicting=True)
    grads = tiny.task_gradients(setup.params, setup)
    g = _task_matrix(method, grads, setup.tasks)
    # Residuals opposite by construction, but the targets are rounded to float32 (eps32 / 2 relative
    # each, make_setup); the gradients are linear in the residuals: 2 eps32 |g|.
    opposite = 2 * np.finfo(np.float32).eps * np.abs(g).max()
    np.testing.assert_allclose(g[0], -g[1], rtol=0, atol=opposite)
    model, logs = tiny.run(setup, method, options())
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [0.5, 0.5], atol=1e-6)
    expected, _ = reference_step(setup, method)
    # W - lr (g0 + g1) / 2: lr times the gap above, plus a few float64 roundings of |W|.
    bound = tiny.LEARNING_RATE * opposite + 16 * np.finfo(float).eps * np.abs(setup.params["W"]).max()
    np.testing.assert_allclose(expected["W"], setup.params["W"], rtol=0, atol=bound)
    tiny.assert_params_close(model, expected)
    assert properties.check_common_descent(g, [0.5, 0.5])


@pytest.mark.parametrize("num_tasks,seeds", [(2, range(20, 26)), (3, range(26, 34))])
@pytest.mark.parametrize("method", METHODS)
def test_common_descent_direction(method, num_tasks, seeds):
    """g_t . d >= 0 for the alpha fit logs (in fact >= ||d||^2, the min-norm optimality)."""
    for seed in seeds:
        setup = tiny.make_setup(num_tasks=num_tasks, seed=seed)
        _, logs = tiny.run(setup, method, options())
        alpha = tiny.logged_weights(logs[0], setup.tasks)
        g = _task_matrix(method, tiny.task_gradients(setup.params, setup), setup.tasks)
        stationary = properties.check_common_descent(g, alpha)
        d = alpha @ g
        if not stationary:
            scale = np.max(np.sum(g**2, axis=1))
            assert np.all(g @ d >= d @ d - 1e-5 * scale), (seed, g @ d, d @ d)


@pytest.mark.parametrize("method", METHODS)
def test_properties(method):
    setup = tiny.make_setup(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5])
    logs = properties.check_permutation_equivariant(setup, method, options("official", "loss+"), permutation=[2, 0, 1])
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)


def test_mgda_jacobian_option_matches():
    setup = tiny.make_setup(num_tasks=3, seed=10)
    model, logs = tiny.run(setup, "mgda", {"jacobian": True})
    expected, alpha = reference_step(setup, "mgda")
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), alpha, atol=1e-5)
    tiny.assert_params_close(model, expected)


def test_mgda_ub_runs_the_encoder_forward_once_per_step():
    """MGDA-UB's promise: one forward pass through the encoder (no second pass to apply alpha).

    `forward_calls` counts executed forward passes with real variables;
    `traced_calls` counts every forward pass placed in the step's graph,
    including ones through `stateless_call` (which `forward_calls` cannot see).
    The 3-task, 3-step run must still give the reference update.
    """
    setup = tiny.make_setup(num_tasks=3, seed=10)
    model = tiny.build_model(setup, "mgda_ub", counting=True)
    model.build(setup.x.shape)
    model.encoder.traced_calls = 0
    tiny.fit(model, setup, epochs=3)
    assert float(model.encoder.forward_calls.numpy()) == 3.0
    assert model.encoder.traced_calls == 1
    params = setup.params
    for _ in range(3):
        params, _ = reference_step(setup, "mgda_ub", params=params)
    tiny.assert_params_close(model, params)


def test_forward_counter_sees_extra_passes():
    # The counter itself must be able to fail: single_step adds stateless
    # forward passes (two inner ones and one for the heads).
    setup = tiny.make_setup(num_tasks=2, seed=10)
    model = tiny.build_model(setup, "single_step", counting=True)
    model.build(setup.x.shape)
    model.encoder.traced_calls = 0
    tiny.fit(model, setup, epochs=2)
    assert float(model.encoder.forward_calls.numpy()) == 2.0
    assert model.encoder.traced_calls == 4


@pytest.mark.parametrize("num_tasks,seed,scales", [(2, 11, [3.0, 0.5]), (3, 10, [2.0, 1.0, 0.5])])
@pytest.mark.parametrize("method", METHODS)
def test_official_solver_option(method, num_tasks, seed, scales):
    """solver="official": alpha is the official routine's (NumPy transcription in `tiny`)."""
    setup = tiny.make_setup(num_tasks=num_tasks, seed=seed, target_scales=scales)
    model, logs = tiny.run(setup, method, {"solver": "official"}, epochs=2)
    params = setup.params
    for step in range(2):
        params, alpha = reference_step(setup, method, params=params, solver="official")
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha, atol=1e-5)
    tiny.assert_params_close(model, params)
    if num_tasks == 2:
        # The vertex case of test_two_tasks_clipped_alpha, with the code's clipping.
        np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [0.001, 0.999], atol=1e-6)


# -- head_update="paper_sequential": Algorithm 2 in its order ---------------------------------------


def algorithm_2_step(setup, method, normalization="none", params=None, momentum=None, velocity=None):
    """Sener & Koltun's Algorithm 2 in float64: lines 1-3, then lines 4-5 at the moved heads.

    Lines 1-3: theta^t <- theta^t - lr grad_{theta^t} L_t(theta_sh, theta^t).
    Line 4: alpha from the gradients (w.r.t. theta_sh for mgda, Z for mgda_ub)
    of L_t(theta_sh, new theta^t), normalised with the losses there.
    Line 5: theta_sh <- theta_sh - lr sum_t alpha_t grad_sh L_t(theta_sh, new theta^t).
    With `momentum` (Keras SGD: m <- momentum m - lr g, theta <- theta + m;
    `velocity` holds m per variable) the heads and the shared parameters take
    that step instead, and lines 4-5 are evaluated at the heads' plain-SGD
    look-ahead theta^t - lr g_t. Returns (params, alpha, velocity).
    """
    params = params or setup.params
    tasks, lr = setup.tasks, tiny.LEARNING_RATE
    own = tiny.task_gradients(params, setup)
    look_ahead = copy.deepcopy(params)
    for t in tasks:
        tiny.head_step(look_ahead, t, own[t]["V"], own[t]["c"])
    grads = tiny.task_gradients(look_ahead, setup)
    alpha = _alpha(method, grads, tiny.losses(look_ahead, setup), normalization, tasks)
    shared = {"W": sum(a * grads[t]["W"] for a, t in zip(alpha, tasks)),
              "b": sum(a * grads[t]["b"] for a, t in zip(alpha, tasks))}
    if momentum is None:
        return tiny.shared_step(look_ahead, shared["W"], shared["b"]), alpha, None
    velocity = copy.deepcopy(velocity) if velocity else {}
    new = copy.deepcopy(params)

    def step(key, value, gradient):
        velocity[key] = momentum * velocity.get(key, 0.0) - lr * gradient
        return value + velocity[key]

    new["W"], new["b"] = step("W", params["W"], shared["W"]), step("b", params["b"], shared["b"])
    for t in tasks:
        new["V"][t] = step(("V", t), params["V"][t], own[t]["V"])
        new["c"][t] = step(("c", t), params["c"][t], own[t]["c"])
    return new, alpha, velocity


SEQUENTIAL_CASES = {
    # name: (setup arguments, normalization)
    "two_tasks": (dict(num_tasks=2, seed=15, target_scales=[3.0, 0.5]), "none"),
    "two_tasks_loss+": (dict(num_tasks=2, seed=15, target_scales=[3.0, 0.5]), "loss+"),
    "three_tasks": (dict(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5]), "none"),
    "three_tasks_loss": (dict(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5]), "loss"),
}


@pytest.mark.parametrize("epochs", [1, 2])
@pytest.mark.parametrize("case", sorted(SEQUENTIAL_CASES))
@pytest.mark.parametrize("method", METHODS)
def test_paper_sequential_follows_algorithm_2(method, case, epochs):
    arguments, normalization = SEQUENTIAL_CASES[case]
    setup = tiny.make_setup(**arguments)
    model, logs = tiny.run(setup, method, options("paper_sequential", normalization), epochs=epochs)
    params = setup.params
    for step in range(epochs):
        params, alpha, _ = algorithm_2_step(setup, method, normalization, params=params)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha, atol=1e-5,
                                   err_msg=f"step {step + 1}")
    tiny.assert_params_close(model, params)
    # The logged losses are those of the real pass, before the heads move.
    for t, value in zip(setup.tasks, tiny.losses(setup.params, setup)):
        np.testing.assert_allclose(logs[0][f"{t}_loss"], value, rtol=1e-5)


@pytest.mark.parametrize("case", sorted(SEQUENTIAL_CASES))
@pytest.mark.parametrize("method", METHODS)
def test_paper_sequential_differs_from_paper(method, case):
    """Guards the test above: the order of Algorithm 2 changes alpha and the shared step visibly."""
    arguments, normalization = SEQUENTIAL_CASES[case]
    setup = tiny.make_setup(**arguments)
    sequential, alpha_sequential, _ = algorithm_2_step(setup, method, normalization)
    simultaneous, alpha_simultaneous = reference_step(setup, method, normalization)
    assert np.max(np.abs(alpha_sequential - alpha_simultaneous)) > 1e-3
    assert np.max(np.abs(sequential["W"] - simultaneous["W"])) > 1e-4
    # The heads take the same step in both.
    for t in setup.tasks:
        # V - lr dL_t/dV in both references, from gradients through the same products: 8 eps of |V|.
        bound = 8 * np.finfo(float).eps * np.abs(simultaneous["V"][t]).max()
        np.testing.assert_allclose(sequential["V"][t], simultaneous["V"][t], rtol=0, atol=bound)
    model, _ = tiny.run(setup, method, options("paper", normalization))
    assert np.max(np.abs(tiny.model_params(model)["W"] - sequential["W"])) > 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_paper_sequential_with_momentum_uses_the_sgd_look_ahead(method):
    """The documented departure: with momentum the shared gradient is taken at theta^t - lr g_t."""
    setup = tiny.make_setup(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5])
    optimizer = {"class_name": "SGD", "config": {"learning_rate": tiny.LEARNING_RATE, "momentum": 0.9}}
    model, logs = tiny.run(setup, method, options("paper_sequential"), epochs=3, optimizer=optimizer)
    params, velocity = setup.params, None
    for step in range(3):
        params, alpha, velocity = algorithm_2_step(setup, method, params=params, momentum=0.9, velocity=velocity)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha, atol=1e-5,
                                   err_msg=f"step {step + 1}")
    tiny.assert_params_close(model, params)


def test_paper_sequential_jacobian_option_matches():
    setup = tiny.make_setup(num_tasks=3, seed=10)
    model, logs = tiny.run(setup, "mgda", {"jacobian": True, "head_update": "paper_sequential"}, epochs=2)
    params = setup.params
    for step in range(2):
        params, alpha, _ = algorithm_2_step(setup, "mgda", params=params)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), alpha, atol=1e-5)
    tiny.assert_params_close(model, params)


def test_paper_sequential_mgda_ub_still_runs_the_encoder_once():
    """The moved heads are re-run on Z; the encoder is neither run nor traced again."""
    setup = tiny.make_setup(num_tasks=3, seed=10)
    model = tiny.build_model(setup, "mgda_ub", options("paper_sequential"), counting=True)
    model.build(setup.x.shape)
    model.encoder.traced_calls = 0
    tiny.fit(model, setup, epochs=2)
    assert float(model.encoder.forward_calls.numpy()) == 2.0
    assert model.encoder.traced_calls == 1
    params = setup.params
    for _ in range(2):
        params, _, _ = algorithm_2_step(setup, "mgda_ub", params=params)
    tiny.assert_params_close(model, params)


@pytest.mark.parametrize("method", METHODS)
def test_paper_sequential_properties(method):
    setup = tiny.make_setup(num_tasks=3, seed=10, target_scales=[2.0, 1.0, 0.5])
    logs = properties.check_permutation_equivariant(setup, method, options("paper_sequential", "loss+"),
                                                    permutation=[2, 0, 1])
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)


# The contract's rules (tests/balancers/test_properties.py) with the new option values.
NEW_OPTIONS = [("mgda", {"head_update": "paper_sequential"}), ("mgda_ub", {"head_update": "paper_sequential"}),
               ("mgda", {"solver": "official"}), ("mgda_ub", {"solver": "official"})]
RULES = ["mixed_precision", "stateful_layers", "unlabelled_task", "unlabelled_task_2_replicas"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("method,new_options", NEW_OPTIONS, ids=[f"{m}-{list(o.values())[0]}" for m, o in NEW_OPTIONS])
def test_contract_rules_with_the_new_options(method, new_options, rule, monkeypatch, request):
    monkeypatch.setitem(suite.OPTIONS, method, new_options)
    if rule == "mixed_precision":
        suite.mixed_precision_case(method)
    elif rule == "stateful_layers":
        suite.test_stateful_layers_move_once_from_the_real_pass(method)
    elif rule == "unlabelled_task":
        suite.unlabelled_case(method)
    else:
        suite.unlabelled_case(method, request.getfixturevalue("mirrored_strategy"))
