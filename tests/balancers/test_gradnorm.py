"""`gradnorm` (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018) against a NumPy step.

Reference (paper section 3.2, Algorithm 1): the network descends sum_t w_t L_t
with the current weights; then, with W the last shared layer (here the encoder
kernel, or the representation z for `gradient_at="representation"`),

  G_t = ||grad_W (w_t L_t)|| = w_t ||grad_W L_t||,  L~_t = L_t / L_t(0),
  r_t = L~_t / mean_j L~_j,  L_grad = sum_t |G_t - mean(G) r_t^alpha|,

with the targets mean(G) r_t^alpha held constant, so dL_grad/dw_t =
sign(G_t - target_t) ||grad_W L_t||; w <- w - lambda dL_grad/dw (floored at
1e-3, the module's guard), then renormalised to sum_t w_t = T. L_t(0) are the
losses of the first step. Logged: the weights used in the step and L_grad.
"""

import numpy as np
import pytest

from tests.balancers import properties, tiny


def reference_steps(setup, steps, asymmetry=1.5, weight_learning_rate=0.025, gradient_at="last_shared_layer"):
    """Returns (params, weights after, initial losses, [(weights used, L_grad) per step])."""
    T = setup.num_tasks
    params, weights, initial, history = setup.params, np.ones(T), None, []
    for _ in range(steps):
        grads = tiny.task_gradients(params, setup)
        task_losses = tiny.losses(params, setup)
        initial = task_losses if initial is None else initial
        key = "W" if gradient_at == "last_shared_layer" else "z"
        norms = np.array([np.linalg.norm(grads[t][key]) for t in setup.tasks])
        G = weights * norms
        inverse_rate = task_losses / initial
        r = inverse_rate / inverse_rate.mean()
        target = G.mean() * r**asymmetry
        grad_loss = np.sum(np.abs(G - target))
        grad_w = np.sign(G - target) * norms
        new_weights = np.maximum(weights - weight_learning_rate * grad_w, 1e-3)
        new_weights = new_weights * T / new_weights.sum()
        history.append((weights, grad_loss))
        params = tiny.weighted_step(params, setup, weights)
        weights = new_weights
    return params, weights, initial, history


def _state(model):
    b = model.balancer
    return (np.asarray(b.loss_weights.numpy(), np.float64), np.asarray(b.initial_losses.numpy(), np.float64),
            float(np.min(b.has_initial_losses.numpy())))  # per task since 0.2


CASES = [
    ({"asymmetry": 1.5, "weight_learning_rate": 0.5, "gradient_at": "last_shared_layer"}, 2),
    ({"asymmetry": 1.5, "weight_learning_rate": 0.5, "gradient_at": "last_shared_layer"}, 3),
    ({"asymmetry": 0.5, "weight_learning_rate": 0.3, "gradient_at": "representation"}, 2),
    # A rate so large that a weight would turn negative: the 1e-3 floor applies.
    ({"asymmetry": 1.5, "weight_learning_rate": 50.0, "gradient_at": "last_shared_layer"}, 2),
]


@pytest.mark.parametrize("options,num_tasks", CASES, ids=["default", "three_tasks", "representation", "floor"])
def test_three_steps_match_hand_computed_updates(options, num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=51, target_scales=[3.0, 0.5, 1.0][:num_tasks])
    model, logs = tiny.run(setup, "gradnorm", options, epochs=3)
    params, weights, initial, history = reference_steps(setup, 3, **options)
    tiny.assert_params_close(model, params)
    got_weights, got_initial, has_initial = _state(model)
    np.testing.assert_allclose(got_weights, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_initial, initial, rtol=1e-6)
    assert has_initial == 1.0
    for step, (used, grad_loss) in enumerate(history):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), used, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logs[step]["gradnorm_loss"], grad_loss, rtol=1e-4, atol=1e-6)
    # Non-trivial cases: the weights move, and after the first step r_t != 1.
    assert np.max(np.abs(history[2][0] - 1.0)) > 0.05
    if options["weight_learning_rate"] == 50.0:
        assert np.min(np.concatenate([w for w, _ in history] + [weights])) < 0.01, "the floor should be reached"


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=51, target_scales=[3.0, 0.5, 1.0])
    options = CASES[1][0]
    logs = properties.check_permutation_equivariant(setup, "gradnorm", options, permutation=[2, 0, 1], epochs=3)
    weights = properties.check_weights(logs, setup.tasks, simplex_total=setup.num_tasks)
    assert np.all(weights > 0)


def test_initial_loss_of_a_task_comes_from_its_first_labelled_batch():
    import keras
    import tensorflow as tf

    import mtl_tf

    keras.utils.set_random_seed(0)
    heads = {t: keras.layers.Dense(1) for t in ("a", "b")}
    model = mtl_tf.MultiTaskModel(keras.layers.Dense(3), heads, {t: "mse" for t in heads}, balancer="gradnorm")
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: the losses of both batches are known up front
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    y = {t: rng.normal(size=(2, 4, 1)).astype("float32") for t in heads}
    weights = {"a": np.ones((2, 4), "float32"), "b": np.array([[0.0] * 4, [1.0] * 4], "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y, weights))
    model.fit(data, epochs=1, verbose=0)
    predictions = {t: model.predict(x[1], verbose=0)[t] for t in heads}
    first_a = float(np.mean((model.predict(x[0], verbose=0)["a"] - y["a"][0]) ** 2))
    second_b = float(np.mean((predictions["b"] - y["b"][1]) ** 2))
    np.testing.assert_allclose(np.asarray(model.balancer.has_initial_losses), [1.0, 1.0])
    # a: its first batch; b: unlabelled in the first batch, so its second.
    np.testing.assert_allclose(np.asarray(model.balancer.initial_losses), [first_a, second_b], rtol=1e-5)


def test_last_shared_layer_on_per_task_representations_is_a_kernel_every_task_shares():
    """MMoE ends in one gate per task: the last kernel of its variables is a gate only one task's loss
    depends on. GradNorm's W is then the last kernel all tasks share (an expert's), and the step trains."""
    import keras

    import mtl_tf
    from mtl_tf.nets import MMoE

    keras.utils.set_random_seed(0)
    tasks = ("a", "b")
    model = mtl_tf.MultiTaskModel(
        encoder=MMoE(tasks, num_experts=2, expert_units=(8,), seed=0),
        heads={t: keras.layers.Dense(1) for t in tasks},
        losses={t: "mse" for t in tasks},
        balancer="gradnorm",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = {"a": x[:, :1], "b": -x[:, 1:2]}
    chosen = {}
    original = model.balancer._last_shared_layer

    def spy(*args):  # called once, when the step is traced
        kernel, gradients = original(*args)
        chosen["kernel"] = kernel
        return kernel, gradients

    model.balancer._last_shared_layer = spy
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["a_weight"][-1] != 1.0  # the weights moved
    expert_kernels = [v for v in model.encoder.trainable_variables if len(v.shape) >= 2 and "gate" not in v.path]
    assert any(chosen["kernel"] is v for v in expert_kernels), (chosen["kernel"].path, [v.path for v in expert_kernels])
