"""CGC / PLE: eqs. 1-6 in NumPy, hand-counted parameters, serialisation, fit with mgda / pcgrad, mgda_ub refused."""

import keras
import numpy as np
import pytest

from mtl_tf.nets import ple
from tests.nets import arch_checks

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

TASKS = ("a", "b")
D, UNITS = 6, 5


def _data(rng, n=8):
    x = rng.normal(size=(n, D)).astype("float32")
    return x, {t: rng.normal(size=(n, 1)).astype("float32") for t in TASKS}


def _heads():
    return {t: keras.layers.Dense(1, name=f"tower_{t}") for t in TASKS}


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _expert(layer, x):
    dense = layer.dense[0]
    return np.maximum(x @ dense.kernel.numpy() + dense.bias.numpy(), 0)


def _gate(gate, x):
    return _softmax(x @ gate.logits.kernel.numpy())


def _mix(outputs, g):
    return sum(g[:, i : i + 1] * o for i, o in enumerate(outputs))


def test_two_levels_are_eqs_5_6_in_numpy(rng):
    body = ple.PLE(TASKS, num_levels=2, num_shared_experts=1, num_task_experts=2, expert_units=(UNITS,), seed=0)
    x, _ = _data(rng)
    out = {t: keras.ops.convert_to_numpy(v) for t, v in body(x).items()}
    # Level 1: task k's gate over [its experts, shared experts] of x; the shared gate over every expert.
    own = {t: [_expert(e, x) for e in body.task_experts[0][t]] for t in TASKS}
    shared = [_expert(e, x) for e in body.shared_experts[0]]
    level1 = {t: _mix(own[t] + shared, _gate(body.task_gates[0][t], x)) for t in TASKS}
    shared1 = _mix(own["a"] + own["b"] + shared, _gate(body.shared_gates[0], x))
    # Level 2: task experts read their task's level-1 output, shared experts the shared path.
    for t in TASKS:
        own2 = [_expert(e, level1[t]) for e in body.task_experts[1][t]]
        shared2 = [_expert(e, shared1) for e in body.shared_experts[1]]
        expected = _mix(own2 + shared2, _gate(body.task_gates[1][t], level1[t]))
        np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-6)
    assert len(body.shared_gates) == 1  # no shared gate at the last level


def test_cgc_is_eqs_1_to_4(rng):
    body = ple.cgc(TASKS, num_shared_experts=2, num_task_experts=1, expert_units=(UNITS,), seed=1)
    x, _ = _data(rng)
    out = body(x)
    for t in TASKS:
        outputs = [_expert(e, x) for e in body.task_experts[0][t]] + [_expert(e, x) for e in body.shared_experts[0]]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out[t]), _mix(outputs, _gate(body.task_gates[0][t], x)), rtol=1e-5, atol=1e-6
        )
    assert body.num_levels == 1 and body.shared_gates == []
    with pytest.raises(ValueError, match="one-level"):
        ple.cgc(TASKS, num_levels=2)


def test_parameter_counts_by_hand(rng):
    x, _ = _data(rng)
    body = ple.PLE(TASKS, num_levels=2, num_shared_experts=1, num_task_experts=2, expert_units=(UNITS,))
    body(x)
    # Level 1: 2*2 + 1 = 5 experts of 6*5 + 5 = 35; task gates 2 * 6 * (2 + 1); shared gate 6 * (2*2 + 1).
    # Level 2: 5 experts of 5*5 + 5 = 30; task gates 2 * 5 * 3; no shared gate.
    assert arch_checks.count(body) == (5 * 35 + 2 * 18 + 30 + 5 * 30 + 2 * 15, 0)
    cgc = ple.cgc(TASKS, num_shared_experts=1, num_task_experts=2, expert_units=(UNITS,), gate_use_bias=True)
    cgc(x)
    assert arch_checks.count(cgc) == (5 * 35 + 2 * (18 + 3), 0)


def test_per_level_templates_shapes_and_round_trip(rng):
    # LibMTL's kind of use on images: a conv expert at level 1, an MLP at level 2.
    conv = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(4)])
    body = ple.ple(("x", "y", "z"), expert=[conv, None], expert_units=(3,), num_shared_experts=2)
    images = rng.normal(size=(2, 6, 6, 1)).astype("float32")
    out = body(images)
    assert {t: tuple(v.shape) for t, v in out.items()} == {t: (2, 3) for t in ("x", "y", "z")}
    assert body.compute_output_shape((2, 6, 6, 1)) == {t: (2, 3) for t in ("x", "y", "z")}
    arch_checks.check_round_trip(body, images)
    arch_checks.check_round_trip(ple.PLE(TASKS, num_levels=3, gate_use_bias=True, seed=2), _data(rng)[0])
    with pytest.raises(ValueError, match="one per level"):
        ple.PLE(TASKS, num_levels=2, expert=[conv])
    with pytest.raises(ValueError, match="at least one expert"):
        ple.PLE(TASKS, num_shared_experts=0, num_task_experts=0)


@pytest.mark.parametrize("make", [ple.cgc, ple.ple])
@tensorflow_only
def test_fit_with_gradient_methods_and_the_refusal(rng, make):
    x, y = _data(rng)
    build = lambda: make(TASKS, expert_units=(UNITS,), seed=0)  # noqa: E731
    message = arch_checks.refuses_representation_gram(build(), _heads(), x, y, "mgda_ub")
    assert "'mgda' instead of 'mgda_ub'" in message
    logs, _ = arch_checks.fit_epoch(build(), _heads(), x, y, "mgda")
    assert abs(logs["a_weight"] + logs["b_weight"] - 1) < 1e-5
    arch_checks.fit_epoch(build(), _heads(), x, y, "pcgrad")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_levels": 0}, r"^PLE: num_levels must be an integer >= 1; got 0$"),
        ({"num_levels": float("nan")}, r"^PLE: num_levels must be an integer >= 1; got nan$"),
        ({"num_shared_experts": -1}, r"^PLE: num_shared_experts must be an integer >= 0; got -1$"),
        ({"num_task_experts": 1.5}, r"^PLE: num_task_experts must be an integer >= 0; got 1.5$"),
        ({"expert_units": (0,)}, r"^PLE: expert_units must be a non-empty list of integers >= 1; got \[0\]$"),
        ({"gate_use_bias": 1}, r"^PLE: gate_use_bias must be True or False; got 1$"),
    ],
)
def test_bad_numeric_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ple.PLE(TASKS, **kwargs)
