"""`pcgrad` (Yu et al., NeurIPS 2020) against Algorithm 1 written out on explicit vectors.

Reference: for each task i, g_i^PC = g_i, then for every j != i in the step's
order, if <g_i^PC, g_j> < 0: g_i^PC -= <g_i^PC, g_j> / ||g_j||^2 g_j; the shared
update is sum_i g_i^PC; each head descends its own loss gradient. The vectors
are the flattened shared-parameter gradients (W then b) or, with
`gradient_at="representation"`, the B x h gradients dL_t/dZ, whose combination
is then pulled back through the linear encoder by hand.
"""

import itertools

import numpy as np
import pytest

from tests.balancers import tiny


def surgery(vectors, order):
    """Algorithm 1 on explicit float64 vectors [T, n]; returns the [T, n] projected gradients."""
    projected = []
    for i, g in enumerate(vectors):
        g = g.copy()
        for j in order:
            if j == i:
                continue
            dot = g @ vectors[j]
            if dot < 0:
                g = g - dot / (vectors[j] @ vectors[j]) * vectors[j]
        projected.append(g)
    return np.array(projected)


def reference_step(setup, order, gradient_at="shared_parameters"):
    params = setup.params
    tasks = setup.tasks
    grads = tiny.task_gradients(params, setup)
    if gradient_at == "shared_parameters":
        vectors = np.array([tiny.shared_vector(grads[t]) for t in tasks])
        direction = surgery(vectors, order).sum(axis=0)
        size = params["W"].size
        d_W, d_b = direction[:size].reshape(params["W"].shape), direction[size:]
    else:
        vectors = np.array([grads[t]["z"].ravel() for t in tasks])
        d_z = surgery(vectors, order).sum(axis=0).reshape(grads[tasks[0]]["z"].shape)
        d_W, d_b = setup.x.T @ d_z, d_z.sum(axis=0)
    new = tiny.shared_step(params, d_W, d_b)
    for t in tasks:
        tiny.head_step(new, t, grads[t]["V"], grads[t]["c"])
    return new


def conflicting_setup(num_tasks, start=0):
    """The first tiny problem (by seed) in which some pair of shared gradients conflicts."""
    for seed in itertools.count(start):
        setup = tiny.make_setup(num_tasks=num_tasks, seed=seed)
        grads = tiny.task_gradients(setup.params, setup)
        vectors = np.array([tiny.shared_vector(grads[t]) for t in setup.tasks])
        gram = vectors @ vectors.T
        if np.min(gram) < -0.05 * np.max(np.diag(gram)):
            return setup


@pytest.mark.parametrize("gradient_at", ("shared_parameters", "representation"))
def test_two_conflicting_tasks_take_the_papers_projections(gradient_at):
    setup = conflicting_setup(2)
    model, logs = tiny.run(setup, "pcgrad", {"gradient_at": gradient_at, "seed": 3})
    tiny.assert_params_close(model, reference_step(setup, (0, 1), gradient_at))
    # Guard: the surgery changed the step (the plain sum would be another point).
    plain = reference_step(setup, ())
    assert not np.allclose(plain["W"], tiny.model_params(model)["W"], atol=1e-4)


def test_two_agreeing_tasks_sum_their_gradients():
    for seed in itertools.count():
        setup = tiny.make_setup(num_tasks=2, seed=seed)
        grads = tiny.task_gradients(setup.params, setup)
        if tiny.shared_vector(grads["a"]) @ tiny.shared_vector(grads["b"]) > 0:
            break
    model, logs = tiny.run(setup, "pcgrad", {"seed": 3})
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [1.0, 1.0]))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [1.0, 1.0], atol=1e-6)


def order_dependent_setup():
    """The first 3-task problem (by seed) whose PCGrad step depends on the task order."""
    for seed in itertools.count():
        setup = tiny.make_setup(num_tasks=3, seed=seed)
        candidates = {order: reference_step(setup, order) for order in itertools.permutations(range(3))}
        if len({np.round(p["W"], 4).tobytes() for p in candidates.values()}) > 1:
            return setup, candidates


def test_three_tasks_follow_one_random_order_per_step():
    setup, candidates = order_dependent_setup()
    seen = set()
    for seed in range(6):
        model, _ = tiny.run(setup, "pcgrad", {"seed": seed})
        got = tiny.model_params(model)
        matches = [o for o, p in candidates.items() if np.allclose(got["W"], p["W"], atol=1e-5)]
        assert matches, f"seed {seed}: the step is none of Algorithm 1's orders"
        tiny.assert_params_close(model, candidates[matches[0]])
        seen.add(np.round(got["W"], 6).tobytes())
    assert len(seen) > 1, "six seeds all drew steps of the same order"


def test_a_seed_repeats_its_run():
    setup, _ = order_dependent_setup()
    first, _ = tiny.run(setup, "pcgrad", {"seed": 11}, epochs=3)
    first = tiny.model_params(first)
    again, _ = tiny.run(setup, "pcgrad", {"seed": 11}, epochs=3)
    # The same compiled steps on the same inputs and seeds: equal bit for bit.
    tiny.assert_params_close(again, first, atol=0, rtol=0)


def test_seed_is_drawn_from_pythons_random_and_kept_in_the_config():
    import keras

    from mtl_tf import balancers

    keras.utils.set_random_seed(5)
    a = balancers.get("pcgrad")
    keras.utils.set_random_seed(5)
    b = balancers.get("pcgrad")
    assert a.seed == b.seed
    assert balancers.get("pcgrad", **{k: v for k, v in a.get_config().items()
                                      if k in ("seed", "gradient_at")}).seed == a.seed
    with pytest.raises(ValueError, match="seed"):
        balancers.get("pcgrad", seed=1.5)


def test_the_order_is_the_same_with_and_without_xla():
    import tensorflow as tf

    from mtl_tf import balancers

    balancer = balancers.get("pcgrad", seed=9)
    balancer.build_for_tasks(tuple("abcdefgh"))
    eager = [balancer.task_order().numpy() for _ in range(5)]
    balancer.step_counter.assign(0)
    compiled = tf.function(balancer.task_order, jit_compile=True)
    xla = [compiled().numpy() for _ in range(5)]
    for a, b in zip(eager, xla):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(o) for o in eager}) > 1, "the order should change from step to step"
