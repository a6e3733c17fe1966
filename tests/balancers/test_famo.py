"""`famo` (B. Liu et al., NeurIPS 2023) against Algorithm 1 with the official logit optimizer, in NumPy.

Reference, per step on the tiny problem's float64 losses L (min_i = 0 unless
given, eps = 1e-8): z = softmax(xi); w_i = c z_i / (L_i - min_i + eps) with
c = 1 / sum_i z_i / (L_i - min_i + eps); one SGD step on sum_i w_i L_i; then
the official trainers' extra evaluation of the same batch at the new
parameters gives delta_i = log(L_i - min_i + eps) - log(L'_i - min_i + eps),
and the logits take one torch-Adam step (betas 0.9 / 0.999, eps 1e-8, weight
decay gamma added to the gradient) on J^T delta with J = diag(z) - z z^T
written out as a matrix (or Algorithm 1's plain step for `logit_optimizer="sgd"`).
The tiny data set is one batch, so the next step's batch is the same batch and
the method's next-step logit update must equal this exactly.
"""

import numpy as np
import pytest

import mtl_tf
from mtl_tf import balancers
from tests.balancers import properties, tiny

EPS = 1e-8


def reference(setup, steps, lr_logits=0.025, decay=1e-3, optimizer="adam", min_losses=None):
    """(params, logits after `steps - 1` logit updates, [weights per step])."""
    T = setup.num_tasks
    low = np.zeros(T) if min_losses is None else np.asarray(min_losses, np.float64)
    params, xi, m, v = setup.params, np.zeros(T), np.zeros(T), np.zeros(T)
    history, logits_seen = [], []
    for step in range(1, steps + 1):
        losses = tiny.losses(params, setup)
        z = np.exp(xi - xi.max()) / np.exp(xi - xi.max()).sum()
        gaps = losses - low + EPS
        weights = (z / gaps) / np.sum(z / gaps)
        history.append(weights)
        logits_seen.append(xi.copy())
        params = tiny.weighted_step(params, setup, weights)
        delta = np.log(gaps) - np.log(tiny.losses(params, setup) - low + EPS)
        jacobian = np.diag(z) - np.outer(z, z)
        gradient = jacobian.T @ delta + decay * xi
        if optimizer == "sgd":
            xi = xi - lr_logits * gradient
        else:
            m = 0.9 * m + 0.1 * gradient
            v = 0.999 * v + 0.001 * gradient**2
            xi = xi - lr_logits * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return params, logits_seen[-1], history


@pytest.mark.parametrize(
    "num_tasks,options",
    [
        (2, {}),
        (3, {"logit_learning_rate": 0.5, "logit_decay": 0.01}),
        (2, {"logit_optimizer": "sgd", "logit_learning_rate": 2.0}),
        (3, {"min_losses": {"a": 0.05, "b": 0.0, "c": 0.1}, "logit_learning_rate": 0.3}),
    ],
    ids=["defaults", "three_tasks", "sgd", "min_losses"],
)
def test_four_steps_follow_algorithm_1(num_tasks, options):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=50 + num_tasks, target_scales=[3.0, 0.3, 1.0][:num_tasks])
    model, logs = tiny.run(setup, "famo", options, epochs=4)
    min_losses = options.get("min_losses")
    if isinstance(min_losses, dict):
        min_losses = [min_losses[t] for t in setup.tasks]
    params, logits, weights = reference(
        setup, 4, lr_logits=options.get("logit_learning_rate", 0.025), decay=options.get("logit_decay", 1e-3),
        optimizer=options.get("logit_optimizer", "adam"), min_losses=min_losses,
    )
    for step in range(4):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], rtol=2e-5)
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(np.asarray(model.balancer.logits), logits, rtol=2e-4, atol=1e-6)
    # The logits moved, so later steps did not keep the first step's weighting rule.
    assert np.ptp(logits) > 1e-3


def test_first_step_weights_are_normalised_inverse_losses():
    # z uniform at the start: w_i proportional to 1 / L_i, the gradient of sum_i log L_i rescaled.
    setup = tiny.make_setup(num_tasks=3, seed=57, target_scales=[2.0, 1.0, 0.5])
    _, logs = tiny.run(setup, "famo")
    inverse = 1.0 / (tiny.losses(setup.params, setup) + EPS)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), inverse / inverse.sum(), rtol=1e-5)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=58, target_scales=[2.0, 1.0, 0.3])
    logs = properties.check_permutation_equivariant(setup, "famo", {"logit_learning_rate": 0.3},
                                                    permutation=[2, 0, 1], epochs=3)
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"logit_learning_rate": 0.0}, r"famo logit_learning_rate must be a positive finite number; got 0.0"),
        ({"logit_decay": -1.0}, r"famo logit_decay must be a finite number >= 0; got -1.0"),
        ({"logit_optimizer": "rmsprop"}, r"logit_optimizer='rmsprop' is not valid; expected one of \['adam', 'sgd'\]"),
        ({"min_losses": float("nan")}, r"famo min_losses must be a finite number; got nan"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("famo", **options)


def test_min_losses_of_the_wrong_length():
    setup = tiny.make_setup(num_tasks=2)
    with pytest.raises(ValueError, match=r"famo min_losses has 3 entries but the model has 2 tasks"):
        tiny.build_model(setup, "famo", {"min_losses": [0.0, 0.0, 0.0]}).build(setup.x.shape)


# -- loss range (issue 22): the losses are measured from min_losses --------------------------------------


def test_min_losses_above_a_loss_is_refused_naming_the_task():
    # Task `a` has loss 16 on the small input: a bound of 20 would make every logit step 0 (a run equal to
    # `uniform`); the batch is refused before any update instead.
    model = properties.negative_loss_model("famo", {"min_losses": {"a": 20.0, "n": -1.0}})
    _, _, data = properties.negative_loss_data()
    with pytest.raises(mtl_tf.LossRangeError) as caught:
        model.fit(data, epochs=1, shuffle=False, verbose=0)
    message = str(caught.value)
    assert message.startswith("balancer 'famo' takes non-negative losses (at or above min_losses = 20), but task "
                              "'a' has loss 16 at epoch 1, batch 1 (loss mean_squared_error).")
    assert "Fix: min_losses must be a lower bound of the loss: give task 'a' a bound at or below 16" in message
    assert int(model.optimizer.iterations.numpy()) == 0
    np.testing.assert_array_equal(np.asarray(model.balancer.logits.numpy()), [0.0, 0.0])


def test_a_negative_loss_with_its_lower_bound_is_taken_with_algorithm_1s_weights():
    # CosineSimilarity >= -1: with min_losses n = -1 the gaps are 16 + eps and 1 - 1/sqrt(2) + eps, and
    # Algorithm 1's first weights (z = 1/2 each) are w_i = (1 / gap_i) / sum_j (1 / gap_j).
    step, _ = properties.check_takes_negative_loss("famo", {"min_losses": {"a": 0.0, "n": -1.0}})
    gaps = np.array([16.0, 1.0 - 1.0 / np.sqrt(2.0)]) + EPS
    want = (1.0 / gaps) / np.sum(1.0 / gaps)
    # float32: 1 + (-1/sqrt(2)) loses about 1 ulp of 1 (6e-8) on a gap of 0.29, ~2e-7 relative.
    np.testing.assert_allclose([step["a_weight"], step["n_weight"]], want, rtol=1e-6)
