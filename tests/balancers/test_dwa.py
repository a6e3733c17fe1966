"""`dwa` (Liu, Johns & Davison, CVPR 2019, eq. 7) against the paper's rule written out in NumPy.

Reference: w_k(t) = K exp(r_k(t-1)/T) / sum_i exp(r_i(t-1)/T) with
r_k(t-1) = L_k(t-1) / L_k(t-2), L_k(t) the mean of task k's batch losses over
period t, w = 1 in the first two periods, and one SGD step on sum_k w_k L_k per
batch (tiny.weighted_step). Periods are epochs of several batches (the same
tiny batch repeated, at moving parameters), told to the balancer by the
`EpochSignal` callback, or single steps with `period="step"`.
"""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers.epochs import EpochSignal
from tests.balancers import properties, tiny


def dwa_weights(history, temperature, num_tasks):
    if len(history) < 2:
        return np.ones(num_tasks)
    ratios = history[-1] / history[-2]
    e = np.exp(ratios / temperature)
    return num_tasks * e / e.sum()


def reference(setup, epochs, steps_per_epoch, temperature=2.0):
    """(params, [weights per step]) with periods of `steps_per_epoch` steps."""
    params, history, weights = setup.params, [], []
    for _ in range(epochs):
        epoch_losses = []
        for _ in range(steps_per_epoch):
            w = dwa_weights(history, temperature, setup.num_tasks)
            weights.append(w)
            epoch_losses.append(tiny.losses(params, setup))
            params = tiny.weighted_step(params, setup, w)
        history.append(np.mean(epoch_losses, axis=0))
    return params, weights


def fit_epochs(setup, options, epochs, steps_per_epoch, signals=1):
    """`fit` over epochs of `steps_per_epoch` copies of the tiny batch, with `signals` EpochSignal callbacks."""
    model, _ = tiny.run(setup, "dwa", options, epochs=0)
    recorder = tiny.StepLogs()
    x = setup.x.astype(np.float32)
    y = {t: setup.y[t].astype(np.float32) for t in model.task_names}
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps_per_epoch)
    model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[recorder] + [EpochSignal() for _ in range(signals)])
    return model, recorder.steps


@pytest.mark.parametrize("num_tasks,temperature", [(2, 2.0), (3, 0.5)])
def test_epoch_averages_set_the_weights_from_the_third_epoch(num_tasks, temperature):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=70 + num_tasks, target_scales=[2.0, 0.5, 1.0][:num_tasks])
    model, logs = fit_epochs(setup, {"temperature": temperature}, epochs=4, steps_per_epoch=2)
    params, weights = reference(setup, 4, 2, temperature)
    assert len(logs) == 8
    for step, (got, want) in enumerate(zip(logs, weights)):
        np.testing.assert_allclose(tiny.logged_weights(got, setup.tasks), want, rtol=1e-5, err_msg=f"step {step}")
    tiny.assert_params_close(model, params)
    assert not np.allclose(weights[-1], 1.0, atol=1e-3)  # the ratios did move the weights


def test_step_period_uses_the_last_two_steps():
    setup = tiny.make_setup(num_tasks=3, seed=75, target_scales=[3.0, 1.0, 0.2])
    model, logs = tiny.run(setup, "dwa", {"period": "step"}, epochs=4)
    params, weights = reference(setup, 4, 1)
    for step in range(4):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], rtol=1e-5)
    tiny.assert_params_close(model, params)


def test_fit_signals_epochs_by_itself_and_a_doubled_signal_changes_nothing():
    setup = tiny.make_setup(num_tasks=2, seed=76, target_scales=[2.0, 0.5])
    _, once = fit_epochs(setup, {}, epochs=3, steps_per_epoch=2)
    _, twice = fit_epochs(setup, {}, epochs=3, steps_per_epoch=2, signals=2)
    _, implicit = fit_epochs(setup, {}, epochs=3, steps_per_epoch=2, signals=0)
    for a, b, c in zip(once, twice, implicit):
        np.testing.assert_allclose(tiny.logged_weights(b, setup.tasks), tiny.logged_weights(a, setup.tasks), rtol=1e-6)
        np.testing.assert_allclose(tiny.logged_weights(c, setup.tasks), tiny.logged_weights(a, setup.tasks), rtol=1e-6)
    # Guard: by the third epoch DWA has left w = 1, so a missing signal would show.
    assert np.max(np.abs(tiny.logged_weights(implicit[-1], setup.tasks) - 1.0)) > 1e-3


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=77, target_scales=[2.0, 1.0, 0.3])
    logs = properties.check_permutation_equivariant(setup, "dwa", {"period": "step"}, permutation=[2, 0, 1],
                                                    epochs=4)
    properties.check_weights(logs, setup.tasks, simplex_total=3.0)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"temperature": 0.0}, r"dwa temperature must be a positive finite number \(the paper uses 2\); got 0.0"),
        ({"period": "batch"}, r"dwa period='batch' is not valid; expected one of \['epoch', 'step'\]"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("dwa", **options)
