"""`single_step` and `split_only` (Lee & Son, Algorithm 1, eqs. 2-4) against a NumPy step.

The paper's rule, with alpha the inner step size and beta the optimizer's
learning rate, on one batch, first order:
  eq. 2:  theta_s^i = theta_s - alpha grad_{theta_s} L_i(theta_s, theta_t^i)
  eq. 3:  theta_s' = theta_s - beta sum_i grad L_i evaluated at (theta_s^i, theta_t^i)
  eq. 4:  theta_t^i <- theta_t^i - alpha grad_{theta_t^i} L_i(theta_s', theta_t^i)
With momentum or Adam, eq. 3 is the optimizer's step on the eq. 3 gradient and
eq. 4 a step of a second optimizer of the same kind at rate alpha, with its own
moments (a second parameter group), on the head gradients taken at the shared
weights the optimizer actually produced. The NumPy optimizers below are
written from Keras' documented update rules, independently of the library.
split_only is eq. 3 with the gradient of sum_i L_i at theta_s itself (no
eq. 2), then eq. 4 at the optimizer's rate.
"""

import numpy as np
import pytest

from tests.balancers import properties, tiny

LR = tiny.LEARNING_RATE


class NumpySGD:
    """Keras SGD: v = m v - lr g; w = w + v (no Nesterov); m = 0 is w -= lr g."""

    def __init__(self, lr, momentum=0.0):
        self.lr, self.momentum, self.velocity = lr, momentum, {}

    def step(self, key, w, g):
        v = self.momentum * self.velocity.get(key, 0.0) - self.lr * g
        self.velocity[key] = v
        return w + v


class NumpyAdam:
    """Keras Adam (beta_1 0.9, beta_2 0.999, epsilon 1e-7), bias-corrected step size."""

    def __init__(self, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon
        self.m, self.v, self.t = {}, {}, {}

    def step(self, key, w, g):
        t = self.t.get(key, 0) + 1
        self.t[key] = t
        m = self.m.get(key, 0.0) + (g - self.m.get(key, 0.0)) * (1 - self.b1)
        v = self.v.get(key, 0.0) + (g * g - self.v.get(key, 0.0)) * (1 - self.b2)
        self.m[key], self.v[key] = m, v
        rate = self.lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        return w - rate * m / (np.sqrt(v) + self.eps)


OPTIMIZERS = {
    "sgd": ({"class_name": "SGD", "config": {"learning_rate": LR}}, lambda lr: NumpySGD(lr)),
    "momentum": (
        {"class_name": "SGD", "config": {"learning_rate": LR, "momentum": 0.9}}, lambda lr: NumpySGD(lr, 0.9)
    ),
    "adam": ({"class_name": "Adam", "config": {"learning_rate": 0.01}}, lambda lr: NumpyAdam(lr)),
}
BETA = {"sgd": LR, "momentum": LR, "adam": 0.01}


def paper_steps(setup, method, steps, optimizer="sgd", alpha=None):
    """`steps` steps of the paper's rule (defaults of the library); returns (params, inner losses per step)."""
    beta = BETA[optimizer]
    alpha = beta if alpha is None else alpha
    make = OPTIMIZERS[optimizer][1]
    shared_opt = make(beta)
    head_opt = make(alpha if method == "single_step" else beta)
    params = setup.params
    history = []
    for _ in range(steps):
        grads = tiny.task_gradients(params, setup)
        outer_W, outer_b, inner_losses = 0.0, 0.0, []
        for i, t in enumerate(setup.tasks):
            if method == "single_step":
                moved = tiny.shared_step(params, grads[t]["W"], grads[t]["b"], lr=alpha)  # eq. 2
                inner_losses.append(tiny.losses(moved, setup)[i])
            else:
                moved = params
            at_moved = tiny.task_gradients(moved, setup)[t]
            outer_W = outer_W + at_moved["W"]
            outer_b = outer_b + at_moved["b"]
        new = tiny.shared_step(params, 0.0, 0.0, lr=0.0)
        new["W"] = shared_opt.step("W", params["W"], outer_W)  # eq. 3
        new["b"] = shared_opt.step("b", params["b"], outer_b)
        head_grads = tiny.task_gradients(new, setup)  # eq. 4 at the new shared weights, old heads
        for t in setup.tasks:
            new["V"][t] = head_opt.step(("V", t), params["V"][t], head_grads[t]["V"])
            new["c"][t] = head_opt.step(("c", t), params["c"][t], head_grads[t]["c"])
        params = new
        history.append(inner_losses)
    return params, history


def legacy_step(setup, method, inner_learning_rate=None, head_gradients_at="sgd_lookahead", params=None):
    """The options that keep the behaviour before 0.2 (heads at the optimizer's rate), plain SGD."""
    params = params or setup.params
    a = LR if inner_learning_rate is None else inner_learning_rate
    grads = tiny.task_gradients(params, setup)
    outer_W, outer_b = 0.0, 0.0
    for t in setup.tasks:
        moved = tiny.shared_step(params, grads[t]["W"], grads[t]["b"], lr=a) if method == "single_step" else params
        at_moved = tiny.task_gradients(moved, setup)[t]
        outer_W, outer_b = outer_W + at_moved["W"], outer_b + at_moved["b"]
    new = tiny.shared_step(params, outer_W, outer_b, lr=LR)
    head_point = new if head_gradients_at == "sgd_lookahead" else params
    head_grads = tiny.task_gradients(head_point, setup)
    for t in setup.tasks:
        tiny.head_step(new, t, head_grads[t]["V"], head_grads[t]["c"], lr=LR)
    return new


PAPER_CASES = [
    ("single_step", "sgd", 0.3, 2),  # alpha != beta: heads move with alpha
    ("single_step", "sgd", None, 3),
    ("single_step", "momentum", 0.3, 2),
    ("single_step", "adam", 0.02, 2),
    ("split_only", "sgd", None, 2),
    ("split_only", "momentum", None, 3),
    ("split_only", "adam", None, 2),
]


@pytest.mark.parametrize("method,optimizer,alpha,num_tasks", PAPER_CASES)
def test_two_steps_follow_the_paper(method, optimizer, alpha, num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=31, target_scales=[2.0, 0.5, 1.0][:num_tasks])
    options = {} if alpha is None else {"inner_learning_rate": alpha}
    model, logs = tiny.run(setup, method, options, epochs=2, optimizer=OPTIMIZERS[optimizer][0])
    expected, history = paper_steps(setup, method, 2, optimizer, alpha)
    tiny.assert_params_close(model, expected, atol=2e-5, rtol=2e-5)
    np.testing.assert_array_equal(tiny.logged_weights(logs[0], setup.tasks), np.ones(num_tasks))
    for t, value in zip(setup.tasks, tiny.losses(setup.params, setup)):
        np.testing.assert_allclose(logs[0][f"{t}_loss"], value, rtol=1e-5)
    if method == "single_step":
        # The paper's Fig. 3 curve: each task's loss after its own inner step.
        for step in range(2):
            for t, value in zip(setup.tasks, history[step]):
                np.testing.assert_allclose(logs[step][f"{t}_inner_loss"], value, rtol=1e-5)
        assert np.all(np.array(history[0]) < tiny.losses(setup.params, setup))
    else:
        assert not any(k.endswith("_inner_loss") for k in logs[0])


def test_plain_sgd_is_eqs_2_to_4_exactly():
    """alpha != beta, plain SGD, one step: every variable to float32 precision."""
    setup = tiny.make_setup(num_tasks=2, seed=35)
    model, _ = tiny.run(setup, "single_step", {"inner_learning_rate": 0.25})
    expected, _ = paper_steps(setup, "single_step", 1, "sgd", 0.25)
    tiny.assert_params_close(model, expected, atol=1e-6, rtol=1e-6)


def test_alpha_is_set_once_not_scheduled():
    """Without inner_learning_rate, alpha is the optimizer's rate at the first step and stays."""
    setup = tiny.make_setup(num_tasks=2, seed=36)
    model, _ = tiny.run(setup, "single_step", {})
    np.testing.assert_allclose(np.asarray(model.balancer.base_rates), [LR, LR], rtol=1e-7)
    model.optimizer.learning_rate.assign(LR / 2)  # a schedule halving the rate
    before = tiny.model_params(model)
    tiny.fit(model, setup, epochs=1)
    # Inner step and heads with alpha = LR (not LR / 2), the shared step with beta = LR / 2.
    expected = _reference_alpha_beta(tiny.Setup(x=setup.x, y=setup.y, params=before), alpha=LR, beta=LR / 2)
    tiny.assert_params_close(model, expected, atol=1e-5, rtol=1e-5)
    model.optimizer.learning_rate.assign(LR)


def _reference_alpha_beta(setup, alpha, beta):
    params = setup.params
    grads = tiny.task_gradients(params, setup)
    outer_W, outer_b = 0.0, 0.0
    for t in setup.tasks:
        moved = tiny.shared_step(params, grads[t]["W"], grads[t]["b"], lr=alpha)
        at_moved = tiny.task_gradients(moved, setup)[t]
        outer_W, outer_b = outer_W + at_moved["W"], outer_b + at_moved["b"]
    new = tiny.shared_step(params, outer_W, outer_b, lr=beta)
    head_grads = tiny.task_gradients(new, setup)
    for t in setup.tasks:
        tiny.head_step(new, t, head_grads[t]["V"], head_grads[t]["c"], lr=alpha)
    return new


def test_inner_rate_can_follow_the_schedule():
    setup = tiny.make_setup(num_tasks=2, seed=36)
    model, _ = tiny.run(setup, "single_step", {"inner_rate_schedule": "optimizer"})
    model.optimizer.learning_rate.assign(LR / 2)
    before = tiny.model_params(model)
    tiny.fit(model, setup, epochs=1)
    expected = _reference_alpha_beta(tiny.Setup(x=setup.x, y=setup.y, params=before), alpha=LR / 2, beta=LR / 2)
    tiny.assert_params_close(model, expected, atol=1e-5, rtol=1e-5)
    model.optimizer.learning_rate.assign(LR)


LEGACY_CASES = [
    ("single_step", {"inner_learning_rate": None, "head_gradients_at": "sgd_lookahead", "head_learning_rate": "optimizer"}, 2),
    ("single_step", {"inner_learning_rate": 0.5, "head_gradients_at": "sgd_lookahead", "head_learning_rate": "optimizer"}, 2),
    ("single_step", {"inner_learning_rate": 0.5, "head_gradients_at": "original", "head_learning_rate": "optimizer"}, 2),
    ("split_only", {"head_gradients_at": "sgd_lookahead"}, 2),
    ("split_only", {"head_gradients_at": "original"}, 3),
]


@pytest.mark.parametrize("method,options,num_tasks", LEGACY_CASES)
def test_named_options_keep_the_earlier_behaviour(method, options, num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=31, target_scales=[2.0, 0.5, 1.0][:num_tasks])
    model, _ = tiny.run(setup, method, options)
    kwargs = {k: v for k, v in options.items() if k in ("inner_learning_rate", "head_gradients_at")}
    tiny.assert_params_close(model, legacy_step(setup, method, **kwargs))


def test_the_variants_differ():
    # Guards the cases above: the inner step, its size, alpha for the heads and
    # where the heads' gradients are taken must each change the update.
    setup = tiny.make_setup(num_tasks=2, seed=31, target_scales=[2.0, 0.5])
    updates = [legacy_step(setup, m, **{k: v for k, v in o.items() if k != "head_learning_rate"})
               for m, o, n in LEGACY_CASES if n == 2]
    updates.append(paper_steps(setup, "single_step", 1, "sgd", 0.5)[0])
    for i, first in enumerate(updates):
        for second in updates[i + 1:]:
            difference = max(np.max(np.abs(first["W"] - second["W"])),
                             max(np.max(np.abs(first["V"][t] - second["V"][t])) for t in setup.tasks))
            assert difference > 1e-4


def test_split_only_at_original_point_is_plain_sum_of_losses():
    """Without the alternation split_only is sum-of-losses training."""
    setup = tiny.make_setup(num_tasks=2, seed=33)
    model, _ = tiny.run(setup, "split_only", {"head_gradients_at": "original"})
    tiny.assert_params_close(model, tiny.weighted_step(setup.params, setup, [1.0, 1.0]))


def test_defaults_are_the_papers():
    from mtl_tf import balancers

    single = balancers.get("single_step")
    assert (single.inner_learning_rate, single.inner_rate_schedule, single.head_gradients_at,
            single.head_learning_rate) == (None, "constant", "updated", "inner")
    assert balancers.get("split_only").head_gradients_at == "updated"


@pytest.mark.parametrize("method", ["single_step", "split_only"])
def test_properties(method):
    setup = tiny.make_setup(num_tasks=3, seed=31, target_scales=[2.0, 0.5, 1.0])
    logs = properties.check_permutation_equivariant(setup, method, {}, permutation=[1, 2, 0])
    properties.check_weights(logs, setup.tasks)


def test_inner_loss_is_an_epoch_mean_like_the_loss():
    """With lr 0 (so alpha 0 and theta_s^i = theta_s) the inner loss equals the loss, epoch mean for epoch mean."""
    import keras
    import tensorflow as tf

    import mtl_tf

    keras.utils.set_random_seed(0)
    heads = {t: keras.layers.Dense(1) for t in ("a", "b")}
    model = mtl_tf.MultiTaskModel(keras.layers.Dense(3), heads, {t: "mse" for t in heads}, balancer="single_step")
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 2)).astype("float32")
    y = {t: rng.normal(size=(3, 4, 1)).astype("float32") * (1 + 3 * np.arange(3))[:, None, None] for t in heads}
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=0).history
    for t in heads:
        np.testing.assert_allclose(history[f"{t}_inner_loss"], history[f"{t}_loss"], rtol=1e-6)
