"""`stch` (X. Lin et al., ICML 2024, with the official MTL code's warm-up) against NumPy.

Reference: the objective written out on the tiny problem's float64 losses and
differenced (tests/balancers/numeric.py), one SGD step per batch:
  STCH:    K mu log sum_t exp(lambda_t f_t / mu), f_t = log(L_t / N_t) (or L_t / N_t)
  warm-up: sum_t log L_t (or sum_t L_t)
with N_t the mean of task t's batch losses over the last warm-up epoch (1
without warm-up). The logged weights are dJ/dL_t, also by differences.
"""

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers.epochs import EpochSignal
from tests.balancers import numeric, properties, tiny


def stch_of_losses(losses, mu, preferences, nadir, log_losses):
    f = np.log(losses / nadir) if log_losses else losses / nadir
    return len(losses) * mu * scipy.special.logsumexp(preferences * f / mu)


def warmup_of_losses(losses, log_losses):
    return np.sum(np.log(losses)) if log_losses else np.sum(losses)


def loss_gradient(of_losses, losses, step=1e-7):
    """dJ/dL by central differences."""
    out = np.zeros_like(losses)
    for t in range(len(losses)):
        e = np.zeros_like(losses)
        e[t] = step
        out[t] = (of_losses(losses + e) - of_losses(losses - e)) / (2 * step)
    return out


def reference(setup, epochs, steps_per_epoch, mu=1.0, preferences=None, warmup_epochs=0, log_losses=True):
    """(params, [weights per step])."""
    preferences = np.ones(setup.num_tasks) if preferences is None else np.asarray(preferences, np.float64)
    params, nadir, weights = setup.params, np.ones(setup.num_tasks), []
    for epoch in range(1, epochs + 1):
        seen = []
        for _ in range(steps_per_epoch):
            if epoch <= warmup_epochs:
                of_losses = lambda l: warmup_of_losses(l, log_losses)  # noqa: E731
            else:
                of_losses = lambda l: stch_of_losses(l, mu, preferences, nadir, log_losses)  # noqa: E731
            losses = tiny.losses(params, setup)
            seen.append(losses)
            weights.append(loss_gradient(of_losses, losses))
            params = numeric.descend(lambda p: of_losses(tiny.losses(p, setup)), params)  # noqa: B023
        if epoch == warmup_epochs:
            nadir = np.mean(seen, axis=0)
    return params, weights


@pytest.mark.parametrize(
    "num_tasks,seed,options",
    [
        (2, 82, {}),
        (3, 83, {"mu": 0.2, "preferences": {"a": 1.0, "b": 2.0, "c": 0.5}}),
        (2, 83, {"mu": 4.0, "log_losses": False}),
    ],
    ids=["log_default_mu", "small_mu_preferences", "plain_losses"],
)
def test_without_warmup_two_steps_descend_the_smooth_tchebycheff_objective(num_tasks, seed, options):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=seed, target_scales=[3.0, 0.3, 1.0][:num_tasks])
    options = {**options, "warmup_epochs": 0}
    model, logs = tiny.run(setup, "stch", options, epochs=2)
    preferences = options.get("preferences")
    if preferences is not None:
        preferences = [preferences[t] for t in setup.tasks]
    params, weights = reference(setup, 2, 1, mu=options.get("mu", 1.0), preferences=preferences,
                                log_losses=options.get("log_losses", True))
    for step in range(2):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], rtol=1e-5)
        assert np.min(weights[step]) > 1e-3 * np.max(weights[step])  # no task is switched off: a real test
    tiny.assert_params_close(model, params)


def fit_epochs(setup, options, epochs, steps_per_epoch, signal=True):
    model, _ = tiny.run(setup, "stch", options, epochs=0)
    recorder = tiny.StepLogs()
    x = setup.x.astype(np.float32)
    y = {t: setup.y[t].astype(np.float32) for t in model.task_names}
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps_per_epoch)
    model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[recorder] + ([EpochSignal()] if signal else []))
    return model, recorder.steps


@pytest.mark.parametrize("log_losses", [True, False])
def test_warmup_epochs_then_stch_on_the_nadir_normalised_losses(log_losses):
    setup = tiny.make_setup(num_tasks=2, seed=85, target_scales=[4.0, 0.5])
    options = {"warmup_epochs": 2, "mu": 0.5, "log_losses": log_losses}
    model, logs = fit_epochs(setup, options, epochs=4, steps_per_epoch=2)
    params, weights = reference(setup, 4, 2, mu=0.5, warmup_epochs=2, log_losses=log_losses)
    assert len(logs) == 8
    for step, (got, want) in enumerate(zip(logs, weights)):
        np.testing.assert_allclose(tiny.logged_weights(got, setup.tasks), want, rtol=1e-5, err_msg=f"step {step}")
    tiny.assert_params_close(model, params)


def test_fit_signals_the_epochs_without_being_asked():
    setup = tiny.make_setup(num_tasks=2, seed=86)
    _, logs = fit_epochs(setup, {"warmup_epochs": 1}, epochs=3, steps_per_epoch=1, signal=False)
    _, weights = reference(setup, 3, 1, warmup_epochs=1)
    for got, want in zip(logs, weights):
        np.testing.assert_allclose(tiny.logged_weights(got, setup.tasks), want, rtol=1e-5)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=87, target_scales=[2.0, 1.0, 0.3])
    options = {"warmup_epochs": 0, "mu": 0.3, "preferences": {"a": 1.0, "b": 0.5, "c": 2.0}}
    logs = properties.check_permutation_equivariant(setup, "stch", options, permutation=[2, 0, 1])
    assert np.all(properties.check_weights(logs, setup.tasks) > 0)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"mu": 0.0}, r"stch mu must be a positive finite number; got 0.0"),
        ({"warmup_epochs": -1}, r"stch warmup_epochs must be an integer >= 0; got -1"),
        ({"warmup_epochs": 1.5}, r"stch warmup_epochs must be an integer >= 0; got 1.5"),
        ({"log_losses": "yes"}, r"stch log_losses must be True or False; got 'yes'"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("stch", **options)


def test_bad_preferences_are_named():
    setup = tiny.make_setup(num_tasks=2)
    with pytest.raises(ValueError, match=r"stch preference of task 'b' is -1.0; expected a positive finite number"):
        tiny.build_model(setup, "stch", {"preferences": [1.0, -1.0]}).build(setup.x.shape)
    with pytest.raises(ValueError, match=r"stch preferences has 1 entries but the model has 2 tasks"):
        tiny.build_model(setup, "stch", {"preferences": [1.0]}).build(setup.x.shape)
