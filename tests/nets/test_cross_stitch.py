"""Cross-stitch: eq. 1 in NumPy, hand-counted parameters, the alpha rate scale, serialisation, fit with mgda / pcgrad."""

import keras
import numpy as np
import pytest

from mtl_tf.nets import cross_stitch
from tests.nets import arch_checks

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
if ON_TENSORFLOW:
    import tensorflow as tf
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

TASKS = ("a", "b")
D = 6


def _data(rng, n=8, tasks=TASKS):
    x = rng.normal(size=(n, D)).astype("float32")
    return x, {t: rng.normal(size=(n, 1)).astype("float32") for t in tasks}


def _heads(tasks=TASKS):
    return {t: keras.layers.Dense(1, name=f"head_{t}") for t in tasks}


def _stages():
    return [keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4, activation="tanh")]


def _dense(layer, x, activation):
    return activation(x @ layer.kernel.numpy() + layer.bias.numpy())


@pytest.mark.parametrize("tasks", [TASKS, ("a", "b", "c")])
def test_outputs_are_eq_1_in_numpy(rng, tasks):
    body = cross_stitch.CrossStitch(tasks, stages=_stages(), alpha_init=(0.8, 0.2))
    x, _ = _data(rng, tasks=tasks)
    out = {t: keras.ops.convert_to_numpy(v) for t, v in body(x).items()}
    T = len(tasks)
    # The initial alphas: 0.8 on the diagonal, 0.2 / (T - 1) elsewhere (rows of a convex combination).
    alpha = np.full((T, T), 0.2 / (T - 1)) + np.eye(T) * (0.8 - 0.2 / (T - 1))
    for unit in body.units:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(unit.alpha), alpha, rtol=1e-6)
    h = [x] * T
    for i, activation in enumerate([lambda v: np.maximum(v, 0), np.tanh]):
        h = [_dense(body.columns[t][i], h[k], activation) for k, t in enumerate(tasks)]
        h = [sum(alpha[k, s] * h[s] for s in range(T)) for k in range(T)]
    for k, t in enumerate(tasks):
        assert out[t].shape == (8, 4)
        np.testing.assert_allclose(out[t], h[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tasks,stitch_last", [(TASKS, True), (("a", "b", "c"), False)])
def test_parameter_count_by_hand(rng, tasks, stitch_last):
    body = cross_stitch.CrossStitch(tasks, stages=_stages(), stitch_last=stitch_last)
    body(_data(rng)[0])
    T = len(tasks)
    column = (6 * 5 + 5) + (5 * 4 + 4)
    units = 2 if stitch_last else 1
    assert arch_checks.count(body) == (T * column + units * T * T, 0)


@tensorflow_only
def test_alpha_learning_rate_scale_under_sgd(rng):
    # alpha = sqrt(k) beta: one SGD step of rate lr moves alpha by k * lr * dL/dalpha.
    x = rng.normal(size=(4, 3)).astype("float32")
    moves = []
    for k in (1.0, 100.0):
        unit = cross_stitch.CrossStitchUnit(2, alpha_learning_rate_scale=k)
        unit.build([(None, 3)] * 2)
        before = keras.ops.convert_to_numpy(unit.alpha)
        with tf.GradientTape() as tape:
            out = unit([x, 2 * x])
            loss = tf.reduce_sum(out[0]) + 3 * tf.reduce_sum(out[1])
        grad = tape.gradient(loss, unit.beta)
        keras.optimizers.SGD(0.01).apply([grad], [unit.beta])
        moves.append(keras.ops.convert_to_numpy(unit.alpha) - before)
    # dL/dalpha[t, s] = c_t * sum(x_s) with c = (1, 3) and x_s = (x, 2x).
    dalpha = np.outer([1.0, 3.0], [x.sum(), 2 * x.sum()])
    np.testing.assert_allclose(moves[0], -0.01 * dalpha, rtol=1e-4)
    np.testing.assert_allclose(moves[1], -0.01 * 100 * dalpha, rtol=1e-4)


def test_conv_stages_shapes_and_round_trip(rng):
    stages = [keras.Sequential([keras.layers.Conv2D(3, 3), keras.layers.MaxPooling2D(2)]),
              keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(5)])]
    body = cross_stitch.cross_stitch(TASKS, stages=stages, alpha_learning_rate_scale=10.0)
    images = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    out = body(images)
    assert {t: tuple(v.shape) for t, v in out.items()} == {t: (2, 5) for t in TASKS}
    assert body.compute_output_shape((2, 8, 8, 1)) == {t: (2, 5) for t in TASKS}
    # Columns: conv 3*3*1*3 + 3 = 30, dense 3*3*3 * 5 + 5 = 140; two units of 2 * 2.
    assert arch_checks.count(body) == (2 * (30 + 140) + 2 * 4, 0)
    arch_checks.check_round_trip(body, images)
    arch_checks.check_round_trip(cross_stitch.CrossStitch(("a", "b", "c"), stitch_last=False), _data(rng)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 tasks"):
        cross_stitch.CrossStitch(("a",))
    with pytest.raises(ValueError, match="at least one stage"):
        cross_stitch.CrossStitch(TASKS, stages=[])
    with pytest.raises(ValueError, match="positive"):
        cross_stitch.CrossStitchUnit(2, alpha_learning_rate_scale=0)


@tensorflow_only
def test_fit_with_gradient_methods_and_the_refusal(rng):
    x, y = _data(rng)
    build = lambda: cross_stitch.cross_stitch(TASKS, stages=_stages())  # noqa: E731
    message = arch_checks.refuses_representation_gram(build(), _heads(), x, y, "mgda_ub")
    assert "'mgda' instead of 'mgda_ub'" in message
    logs, model = arch_checks.fit_epoch(build(), _heads(), x, y, "mgda")
    assert abs(logs["a_weight"] + logs["b_weight"] - 1) < 1e-5
    # The units are shared parameters: the step moves them.
    assert not np.allclose(keras.ops.convert_to_numpy(model.encoder.units[0].alpha), [[0.9, 0.1], [0.1, 0.9]])
    arch_checks.fit_epoch(build(), _heads(), x, y, "pcgrad")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        # A NaN alpha makes every activation after the unit NaN: the loss, not the data, is then to blame.
        ({"alpha_init": (float("nan"), 0.1)}, r"^CrossStitch: alpha_init\[0\] must be a finite number; got nan$"),
        ({"alpha_init": (0.9, float("inf"))}, r"^CrossStitch: alpha_init\[1\] must be a finite number; got inf$"),
        ({"alpha_init": (0.9,)}, r"^CrossStitch: alpha_init must be \(same-task, other-task\) weights"),
        ({"alpha_init": "0.9"}, r"^CrossStitch: alpha_init must be"),
        ({"alpha_learning_rate_scale": float("nan")},
         r"^CrossStitch: alpha_learning_rate_scale must be a positive finite number; got nan$"),
        ({"alpha_learning_rate_scale": -1}, r"alpha_learning_rate_scale must be a positive finite number; got -1"),
        ({"stitch_last": "no"}, r"^CrossStitch: stitch_last must be True or False; got 'no'$"),
    ],
)
def test_bad_numeric_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cross_stitch.cross_stitch(TASKS, **kwargs)


def test_a_unit_refuses_a_nan_alpha_and_a_non_integer_task_count():
    with pytest.raises(ValueError, match=r"^CrossStitchUnit: alpha_init\[1\] must be a finite number; got nan$"):
        cross_stitch.CrossStitchUnit(2, alpha_init=(0.9, float("nan")))
    with pytest.raises(ValueError, match=r"^CrossStitchUnit: num_tasks must be an integer >= 2; got 2.5$"):
        cross_stitch.CrossStitchUnit(2.5)
