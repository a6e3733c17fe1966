"""MMoE: eqs. 5-7 in NumPy, hand-counted parameters, serialisation, fit with mgda / pcgrad, mgda_ub refused."""

import keras
import numpy as np
import pytest

from mtl_tf.nets import experts, mmoe
from tests.nets import arch_checks

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
# Tests of what only the TensorFlow engine does (fit / train_step, tf.function and XLA, GradientTape,
# tf.distribute) run in the TensorFlow process only; the rest runs under every backend (tests/backends.py).
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="needs TensorFlow: fit / tf.function / GradientTape")

TASKS = ("a", "b")
D, UNITS, N = 6, 5, 3


def _data(rng, n=8):
    x = rng.normal(size=(n, D)).astype("float32")
    return x, {t: rng.normal(size=(n, 1)).astype("float32") for t in TASKS}


def _heads():
    return {t: keras.layers.Dense(1, name=f"tower_{t}") for t in TASKS}


def test_outputs_are_eq_5_to_7_in_numpy(rng):
    body = mmoe.MMoE(TASKS, num_experts=N, expert_units=(UNITS,), seed=0)
    x, _ = _data(rng)
    out = {t: keras.ops.convert_to_numpy(v) for t, v in body(x).items()}
    assert set(out) == set(TASKS) and all(v.shape == (8, UNITS) for v in out.values())
    # f_i(x) = relu(x A_i + a_i); g^k(x) = softmax(W_gk x) (no bias); f^k = sum_i g^k_i f_i.
    expert_out = [np.maximum(x @ e.dense[0].kernel.numpy() + e.dense[0].bias.numpy(), 0) for e in body.experts]
    for t in TASKS:
        logits = x @ body.gates[t].logits.kernel.numpy()
        g = np.exp(logits - logits.max(1, keepdims=True))
        g /= g.sum(1, keepdims=True)
        expected = sum(g[:, i : i + 1] * expert_out[i] for i in range(N))
        np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_by_hand(rng, bias):
    body = mmoe.MMoE(TASKS, num_experts=N, expert_units=(UNITS, 4), gate_use_bias=bias)
    body(_data(rng)[0])
    # Each expert: 6*5 + 5 (dense 0) + 5*4 + 4 (dense 1) = 59; three experts = 177.
    # Each gate: 6*3 = 18 kernel (+ 3 bias); two gates.
    expected = 3 * (6 * 5 + 5 + 5 * 4 + 4) + 2 * (6 * 3 + (3 if bias else 0))
    assert arch_checks.count(body) == (expected, 0)


def test_image_experts_and_shapes(rng):
    # LibMTL's use on images: every expert is a whole (conv) encoder, the gates read the flattened image.
    template = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(7)])
    body = mmoe.MMoE(("x", "y", "z"), num_experts=2, expert=template)
    out = body(rng.normal(size=(3, 8, 8, 1)).astype("float32"))
    assert {t: tuple(v.shape) for t, v in out.items()} == {t: (3, 7) for t in ("x", "y", "z")}
    # Two experts of (3*3*1*2 + 2) + (6*6*2*7 + 7) and three gates of 64 * 2.
    assert arch_checks.count(body) == (2 * (20 + 511) + 3 * 128, 0)
    assert body.compute_output_shape((3, 8, 8, 1)) == {t: (3, 7) for t in ("x", "y", "z")}
    arch_checks.check_round_trip(body, rng.normal(size=(2, 8, 8, 1)).astype("float32"))


def test_config_round_trip(rng):
    body = mmoe.MMoE(TASKS, num_experts=N, expert_units=(UNITS,), gate_use_bias=True, seed=3, name="body")
    arch_checks.check_round_trip(body, _data(rng)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_experts"):
        mmoe.MMoE(TASKS, num_experts=0)
    with pytest.raises(ValueError, match="distinct task names"):
        mmoe.MMoE(("a", "a"))
    with pytest.raises(ValueError, match="Keras layer"):
        experts.clone_expert("dense", "e")


@tensorflow_only
def test_fit_with_gradient_methods_and_the_refusal(rng, tmp_path):
    x, y = _data(rng)
    make = lambda: mmoe.mmoe(TASKS, num_experts=N, expert_units=(UNITS,), seed=0)  # noqa: E731
    message = arch_checks.refuses_representation_gram(make(), _heads(), x, y, "mgda_ub")
    assert "'mgda' instead of 'mgda_ub'" in message
    message = arch_checks.refuses_representation_gram(make(), _heads(), x, y, "mgda_ub",
                                                      {"head_update": "paper_sequential"})
    assert "'mgda' instead of 'mgda_ub'" in message
    message = arch_checks.refuses_representation_gram(make(), _heads(), x, y, "pcgrad", {"gradient_at": "representation"})
    assert "gradient_at='representation'" in message and "gradient_at='shared_parameters'" in message
    logs, _ = arch_checks.fit_epoch(make(), _heads(), x, y, "mgda")
    assert abs(logs["a_weight"] + logs["b_weight"] - 1) < 1e-5
    _, model = arch_checks.fit_epoch(make(), _heads(), x, y, "pcgrad")
    # A `.keras` file keeps the body and its routing of z_t to head t.
    path = str(tmp_path / "mmoe.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for t in TASKS:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded.predict(x, verbose=0)[t]),
            keras.ops.convert_to_numpy(model.predict(x, verbose=0)[t]), atol=1e-6,
        )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_experts": 0}, r"^MMoE: num_experts must be an integer >= 1; got 0$"),
        ({"num_experts": -2}, r"^MMoE: num_experts must be an integer >= 1; got -2$"),
        ({"num_experts": 2.5}, r"^MMoE: num_experts must be an integer >= 1; got 2.5$"),
        ({"num_experts": float("nan")}, r"^MMoE: num_experts must be an integer >= 1; got nan$"),
        ({"num_experts": "3"}, r"^MMoE: num_experts must be an integer >= 1; got '3'$"),
        ({"expert_units": (16, -1)}, r"^MMoE: expert_units must be a non-empty list of integers >= 1; got \[16, -1\]$"),
        ({"expert_units": ()}, r"^MMoE: expert_units must be a non-empty list of integers >= 1; got \[\]$"),
        ({"gate_use_bias": "false"}, r"^MMoE: gate_use_bias must be True or False; got 'false'$"),
        ({"seed": 1.5}, r"^MMoE: seed must be an integer or None; got 1.5$"),
    ],
)
def test_bad_numeric_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mmoe.MMoE(TASKS, **kwargs)


def test_an_integral_float_count_from_a_json_config_is_taken():
    assert mmoe.MMoE(TASKS, num_experts=3.0).num_experts == 3
