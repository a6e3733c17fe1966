"""The multi-task architectures under the settings users train with: XLA, mixed_float16, two replicas.

For cross-stitch, MMoE, CGC and PLE (small sizes), with a gradient method on the
shared parameters (`pcgrad`: per-task gradients through the architecture):

* `jit_compile=True` takes the steps `jit_compile=False` takes (same start, same
  batches, two steps);
* under `mixed_float16` one step moves every variable as the float32 step does,
  within float16 rounding, and does not overflow;
* under a two-replica `MirroredStrategy` one step on a global batch equals the
  one-device step on the same batch, and both replicas hold the same weights.

References: the same architecture trained on one device in float32 without XLA.

MTAN is not compared here, and why: a SegNet small enough for a unit test (32x32
inputs, batch 4) normalises 4 values per channel in its last block, and its step
amplifies rounding about 2000-fold (float32 against float64: 2e-4 of the move; XLA's
batch statistics differ from TensorFlow's in the 6th digit, float16 in the 3rd, so
their steps differ by 5 % and 100 % of the move). Under `MirroredStrategy` its batch
norm uses each replica's statistics (Keras' default, like PyTorch's DDP without
SyncBatchNorm), so two replicas do not take the one-device step by design.
test_mtan.py trains it with `mgda_ub` and `pcgrad`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf.nets import cross_stitch, mmoe, ple

TASKS = ("a", "b")


def _dense_data(seed, n=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, {t: rng.normal(size=(n, 1)).astype("float32") for t in TASKS}


def _dense_heads():
    return {t: keras.layers.Dense(1, name=f"tower_{t}") for t in TASKS}


def _dense_parts(body):
    def parts():
        return body(), _dense_heads(), {t: "mse" for t in TASKS}
    return parts


ARCHITECTURES = {
    "cross_stitch": (_dense_parts(lambda: cross_stitch.cross_stitch(
        TASKS, stages=[keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4, activation="tanh")])),
        _dense_data, (None, 6)),
    "mmoe": (_dense_parts(lambda: mmoe.mmoe(TASKS, num_experts=3, expert_units=(5,))), _dense_data, (None, 6)),
    "cgc": (_dense_parts(lambda: ple.cgc(TASKS, num_shared_experts=2, expert_units=(5,))), _dense_data, (None, 6)),
    "ple": (_dense_parts(lambda: ple.ple(TASKS, num_levels=2, expert_units=(5,))), _dense_data, (None, 6)),
}
CASES = [(arch, "pcgrad") for arch in ARCHITECTURES]


def _model(arch, method, *, jit_compile=False, optimizer=None):
    parts, _, input_shape = ARCHITECTURES[arch]
    keras.utils.set_random_seed(0)  # the same start in every run: tolerances are not met by luck
    encoder, heads, losses = parts()
    # A seeded method draws the same task orders in every model a test compares.
    model = mtl_tf.MultiTaskModel(encoder, heads, losses, balancer=method,
                                  balancer_options={"seed": 3} if method == "pcgrad" else None)
    model.build(input_shape)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit_compile)
    return model


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(v), np.float64) for v in model.weights
            if "optimizer" not in v.path and "balancer" not in v.path]


def _copy(source, target):
    target.encoder.set_weights(source.encoder.get_weights())
    for t in source.heads:
        target.heads[t].set_weights(source.heads[t].get_weights())


def _fit(model, batches):
    for x, y in batches:
        model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0, shuffle=False)


def _moves(model, start):
    return [w - s for w, s in zip(_weights(model), start, strict=True)]


def _check_moves(got, want, rtol, what):
    """Each variable's move within `rtol` of the reference's (norms), or equal where it did not move."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        err, size = np.linalg.norm(g - w), np.linalg.norm(w)
        assert err <= rtol * size + 1e-7, f"{what}: variable {i} {w.shape} moved {err:.3g} away from the reference's move of {size:.3g}"


@pytest.mark.parametrize("arch,method", CASES)
def test_xla_takes_the_same_steps(arch, method):
    data = ARCHITECTURES[arch][1]
    eager, compiled = _model(arch, method), _model(arch, method, jit_compile=True)
    _copy(eager, compiled)
    start = _weights(eager)
    batches = [data(1), data(2)]
    _fit(eager, batches)
    _fit(compiled, batches)
    _check_moves(_moves(compiled, start), _moves(eager, start), 1e-4, f"{arch} with {method} under XLA")


@pytest.mark.parametrize("arch,method", CASES)
def test_mixed_float16_step_equals_float32_step(arch, method):
    data = ARCHITECTURES[arch][1]
    reference = _model(arch, method)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # Keras' first loss scale, 2**15, overflows MMoE's first float16 gradients (a skipped step,
        # as designed); a user's own LossScaleOptimizer with a smaller first scale takes the step.
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05, momentum=0.9), initial_scale=2.0**8)
        mixed = _model(arch, method, optimizer=optimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    _copy(reference, mixed)
    start = _weights(reference)
    _fit(reference, [data(1)])
    _fit(mixed, [data(1)])
    assert int(keras.ops.convert_to_numpy(mixed.optimizer.iterations)) == 1, "the mixed step was skipped"
    # float16 activations and gradients: about 1e-3 relative.
    _check_moves(_moves(mixed, start), _moves(reference, start), 1e-2,
                 f"{arch} with {method} under mixed_float16")


@pytest.mark.parametrize("arch,method", CASES)
def test_two_replicas_take_the_one_device_step(arch, method, mirrored_strategy):
    data = ARCHITECTURES[arch][1]
    single = _model(arch, method)
    with mirrored_strategy.scope():
        mirrored = _model(arch, method)
    _copy(single, mirrored)
    start = _weights(single)
    batch = data(1)
    _fit(single, [batch])
    _fit(mirrored, [batch])  # the global batch, split between the replicas
    _check_moves(_moves(mirrored, start), _moves(single, start), 1e-4,
                 f"{arch} with {method} on two replicas")
    for v in mirrored.trainable_variables:
        values = [np.asarray(x) for x in mirrored_strategy.experimental_local_results(v.value)]
        for other in values[1:]:
            np.testing.assert_array_equal(other, values[0], err_msg=f"{arch}: replicas differ in {v.path}")
