"""`graddrop` (Chen et al., NeurIPS 2020) against Algorithm 1 written out in NumPy.

Reference (per step, float64): at the activations A = Z = x W + b of the tiny
model, nabla_i = sum over the batch of sign(Z) * dL_i/dZ; P = (1 + sum_i nabla_i /
sum_i |nabla_i|) / 2; M_i = [P > U][nabla_i > 0] + [P < U][nabla_i < 0]; the
encoder receives sum_i (l_i + (1 - l_i) M_i) dL_i/dZ (mask broadcast over the
batch), pulled back through the linear encoder by hand; each head descends its
own gradient. With `gradient_at="shared_parameters"` the same rule acts on the
per-task gradients of W and b element by element (no sign(A) factor). U is the
documented stream: raw Philox words keyed by (crc32(f"{seed}:{k}"), step) for
leaf/variable k, (top 24 bits + 1/2) / 2^24.
"""

import itertools
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf import balancers
from tests.balancers import tiny


def uniform(seed, index, step, shape):
    key = zlib.crc32(f"{seed}:{index}".encode()) & 0x7FFFFFFF
    bits = tf.random.stateless_uniform(list(shape), seed=[key, step], minval=None, maxval=None, dtype=tf.uint32,
                                       alg="philox").numpy()
    return ((bits >> 8).astype(np.float64) + 0.5) / 2**24


def sign_dropout(stats, gradients, u, leaks):
    """Algorithm 1 lines 10-15: stats [T, *s] (batch-summed), gradients [T, ...] broadcastable with the mask.

    Returns (the combined gradient, per-task multipliers [T, *s]).
    """
    total, magnitude = stats.sum(axis=0), np.abs(stats).sum(axis=0)
    purity = np.where(magnitude > 0, 0.5 * (1.0 + total / np.where(magnitude > 0, magnitude, 1.0)), 0.5)
    masks = (purity > u) * (stats > 0) + (purity < u) * (stats < 0)
    multipliers = np.array([l + (1.0 - l) * m for l, m in zip(leaks, masks)])
    return multipliers, purity


def kept_fraction(stats, multipliers):
    present = stats != 0
    return np.array([m[p].sum() / max(p.sum(), 1) for m, p in zip(multipliers, present)])


def reference_step(setup, params, seed, step, gradient_at="representation", leaks=None):
    """(new params, logged weights, purity) of one GradDrop step from `params`."""
    tasks = setup.tasks
    leaks = leaks or [0.0] * len(tasks)
    grads = tiny.task_gradients(params, setup)
    if gradient_at == "representation":
        z = tiny.representation(params, setup.x)
        dz = np.array([grads[t]["z"] for t in tasks])  # [T, B, h]
        stats = (np.sign(z)[None] * dz).sum(axis=1)  # [T, h]
        multipliers, purity = sign_dropout(stats, dz, uniform(seed, 0, step, stats.shape[1:]), leaks)
        combined = (multipliers[:, None, :] * dz).sum(axis=0)
        d_W, d_b = setup.x.T @ combined, combined.sum(axis=0)
        weights = kept_fraction(stats, multipliers)
    else:
        g_W = np.array([grads[t]["W"] for t in tasks])
        g_b = np.array([grads[t]["b"] for t in tasks])
        m_W, purity = sign_dropout(g_W, g_W, uniform(seed, 0, step, g_W.shape[1:]), leaks)
        m_b, _ = sign_dropout(g_b, g_b, uniform(seed, 1, step, g_b.shape[1:]), leaks)
        d_W, d_b = (m_W * g_W).sum(axis=0), (m_b * g_b).sum(axis=0)
        present = np.concatenate([(g_W != 0).reshape(len(tasks), -1), (g_b != 0).reshape(len(tasks), -1)], axis=1)
        kept = np.concatenate([m_W.reshape(len(tasks), -1), m_b.reshape(len(tasks), -1)], axis=1)
        weights = (kept * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    new = tiny.shared_step(params, d_W, d_b)
    for t in tasks:
        tiny.head_step(new, t, grads[t]["V"], grads[t]["c"])
    return new, weights, purity


def conflicting_setup(num_tasks, gradient_at="representation"):
    """The first tiny problem (by seed) with an element whose purity is strictly inside (0, 1)."""
    for seed in itertools.count():
        setup = tiny.make_setup(num_tasks=num_tasks, seed=seed)
        _, _, purity = reference_step(setup, setup.params, 0, 0, gradient_at)
        if np.any((purity > 0.2) & (purity < 0.8)):
            return setup


@pytest.mark.parametrize("gradient_at,num_tasks", [("representation", 2), ("representation", 3),
                                                   ("shared_parameters", 2)])
def test_three_steps_follow_algorithm_1(gradient_at, num_tasks):
    setup = conflicting_setup(num_tasks, gradient_at)
    model, logs = tiny.run(setup, "graddrop", {"gradient_at": gradient_at, "seed": 7}, epochs=3)
    params = setup.params
    for step in range(3):
        params, weights, _ = reference_step(setup, params, 7, step, gradient_at)
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights, atol=1e-6)
    tiny.assert_params_close(model, params)
    # Guard: some element was dropped, so the step is not the plain sum.
    assert any(np.min(tiny.logged_weights(step, setup.tasks)) < 1.0 for step in logs)


def test_per_task_leaks():
    setup = conflicting_setup(2)
    model, logs = tiny.run(setup, "graddrop", {"leak": {"a": 0.25, "b": 1.0}, "seed": 3}, epochs=2)
    params = setup.params
    for step in range(2):
        params, weights, _ = reference_step(setup, params, 3, step, leaks=[0.25, 1.0])
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights, atol=1e-6)
    tiny.assert_params_close(model, params)


def test_full_leak_is_the_plain_sum():
    setup = conflicting_setup(2)
    model, logs = tiny.run(setup, "graddrop", {"leak": 1.0, "seed": 3})
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [1.0, 1.0]))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [1.0, 1.0])


def test_agreeing_elements_are_always_kept():
    # Two copies of one task: every element is pure (P in {0, 1}), so nothing is dropped.
    setup = tiny.make_setup(num_tasks=2, seed=4)
    setup.params["V"]["b"] = setup.params["V"]["a"].copy()
    setup.params["c"]["b"] = setup.params["c"]["a"].copy()
    setup.y["b"] = setup.y["a"].copy()
    for seed in (1, 2):
        model, logs = tiny.run(setup, "graddrop", {"seed": seed})
        tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [1.0, 1.0]))
        np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), [1.0, 1.0])


def _fit_steps(setup, jit_compile, seed, steps=3):
    model = tiny.build_model(setup, "graddrop", {"seed": seed})
    model.compile(optimizer=keras.optimizers.SGD(tiny.LEARNING_RATE), jit_compile=jit_compile)
    tiny.fit(model, setup, epochs=steps)
    return tiny.model_params(model)


def test_a_seed_repeats_its_run_with_and_without_xla():
    setup = conflicting_setup(3)
    eager = _fit_steps(setup, False, 11)
    compiled = _fit_steps(setup, True, 11)
    for name in ("W", "b"):
        np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-6, atol=1e-7)
    params = setup.params
    for step in range(3):
        params, _, _ = reference_step(setup, params, 11, step)
    np.testing.assert_allclose(eager["W"], params["W"], atol=1e-5)


def test_seed_is_drawn_from_pythons_random_and_kept_in_the_config():
    keras.utils.set_random_seed(5)
    a = balancers.get("graddrop")
    keras.utils.set_random_seed(5)
    b = balancers.get("graddrop")
    assert a.seed == b.seed
    config = a.get_config()
    assert balancers.get("graddrop", **{k: config[k] for k in ("seed", "gradient_at", "leak")}).seed == a.seed


@pytest.mark.parametrize("options,message", [
    ({"seed": 1.5}, "graddrop seed must be an integer"),
    ({"leak": 1.5}, r"leak values must be numbers in \[0, 1\]; got 1.5"),
    ({"leak": [0.1, -0.2]}, r"got -0.2"),
    ({"gradient_at": "rep"}, r"gradient_at='rep' is not valid"),
])
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("graddrop", **options)


def test_leaks_must_match_the_tasks():
    setup = tiny.make_setup(num_tasks=2)
    with pytest.raises(ValueError, match="graddrop leak has 3 entries but the model has 2 tasks"):
        tiny.build_model(setup, "graddrop", {"leak": [0.0, 0.1, 0.2]}).build(setup.x.shape)


class PerTaskEncoder(keras.layers.Layer):
    """{task: z_t}: one dense column per task (an MMoE-like body)."""

    def __init__(self, tasks, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.columns = {t: keras.layers.Dense(2, name=f"column_{t}") for t in self.tasks}

    def build(self, input_shape):
        for column in self.columns.values():
            column.build(input_shape)

    def call(self, x):
        return {t: self.columns[t](x) for t in self.tasks}


def test_per_task_representations_are_refused_at_the_representation_only():
    setup = tiny.make_setup(num_tasks=2)
    x = setup.x.astype("float32")
    y = {t: setup.y[t].astype("float32") for t in setup.tasks}
    for gradient_at in ("representation", "shared_parameters"):
        model = mtl_tf.MultiTaskModel(
            PerTaskEncoder(setup.tasks), {t: keras.layers.Dense(2) for t in setup.tasks},
            losses={t: "mse" for t in setup.tasks}, balancer="graddrop",
            balancer_options={"gradient_at": gradient_at, "seed": 1},
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if gradient_at == "representation":
            with pytest.raises(ValueError, match="no element is shared.*gradient_at='shared_parameters'"):
                model.fit(x, y, epochs=1, verbose=0)
        else:
            model.fit(x, y, epochs=1, verbose=0)
