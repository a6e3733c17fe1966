"""The balancer contract's rules, checked for every registered method.

Parametrised over `mtl_tf.balancers.available()`, so a method added later is
covered without writing anything here (a method that needs options gives them
in `OPTIONS`). The rules are those of `mtl_tf.balancers.base`:

(a) precision: one step under `mixed_float16` (a loss-scaling optimizer)
    moves every variable as the float32 step does, within float16 rounding;
(b) state: batch norm (momentum 0) in the encoder and in every head holds the
    batch statistics of the real forward pass at the weights before the step,
    and every dropout seed generator advanced by exactly one draw;
(c) labels: a task without labelled examples gets weight 0, its head does not
    move, and the other tasks' update is that of a model built without it;
(d) the weights are finite, on the simplex where the method promises it
    (`Balancer.simplex_weights`), and permuting the heads permutes the weights
    and changes nothing else;
(e) a task whose loss stays at exactly 0 (a fitted auxiliary task) for 1,000
    steps leaves every variable finite and every step applied; a method
    that cannot take a loss of 0 refuses the first batch, naming the task.
(a) and (c) also hold under a two-replica MirroredStrategy.

References are independent of the library: NumPy for the batch statistics, a
float32 run for (a), a model without the task for (c). A method that cannot
keep a rule declares it in its class' `property_exceptions`; the suite then
checks what the method does keep and reports the exception as an expected
failure with the method's reason, never as a silent skip.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtl_tf
from mtl_tf import balancers
from mtl_tf.balancers import loss_range
from tests.balancers import properties, tiny

METHODS = balancers.available()
TASKS = ("a", "b", "c")
# Options a method cannot do without, per task name so that any subset of tasks works.
OPTIONS = {"static": {"weights": {"a": 0.6, "b": 1.3, "c": 0.9}}}
OPTIONS["rlw"] = {"seed": 1}  # random weights: the models a test compares draw the same ones
OPTIONS["graddrop"] = {"seed": 1}  # random masks: the models a test compares draw the same ones
OPTIONS["gradvac"] = {"seed": 1}  # random task orders: the models a test compares draw the same ones
OPTIONS["stch"] = {"warmup_epochs": 0}  # the smooth Tchebycheff steps themselves, not the warm-up
BATCH = 8


def options_for(method, tasks):
    options = {}
    for name, value in OPTIONS.get(method, {}).items():
        options[name] = {t: value[t] for t in tasks} if isinstance(value, dict) else value
    return options


def exception(method, rule):
    return balancers.registry._REGISTRY[method].property_exceptions.get(rule)


def report_exception(method, rule):
    """Ends a test whose partial checks passed as an expected failure naming the method's reason."""
    reason = exception(method, rule)
    if reason:
        pytest.xfail(f"{method} declares it does not keep rule {rule!r}: {reason}")


# -- small conv models ------------------------------------------------------------------


def conv_model(method, tasks=TASKS, batch_norm=False, dropout=False, jit_compile=False, optimizer=None):
    """A small conv encoder and one head per task (two classification heads, one regression head)."""
    seed = iter(range(100, 200))
    init = lambda: keras.initializers.GlorotUniform(seed=next(seed))  # noqa: E731
    encoder_layers = [keras.layers.Conv2D(4, 3, kernel_initializer=init(), name="conv")]
    if batch_norm:
        encoder_layers.append(keras.layers.BatchNormalization(momentum=0.0, name="encoder_bn"))
    encoder_layers += [
        keras.layers.Activation("relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(6, kernel_initializer=init(), name="fc"),
    ]
    encoder = keras.Sequential(encoder_layers, name="encoder")
    heads, losses = {}, {}
    for t in tasks:
        layers = []
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(momentum=0.0, name=f"bn_{t}"))
        if dropout:
            layers.append(keras.layers.Dropout(0.5, seed=7, name=f"dropout_{t}"))
        units = 1 if t == "c" else 3
        layers.append(keras.layers.Dense(units, kernel_initializer=init(), name=f"out_{t}"))
        heads[t] = keras.Sequential(layers, name=f"head_{t}")
        losses[t] = "mse" if t == "c" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = mtl_tf.MultiTaskModel(
        encoder, heads, losses, balancer=method, balancer_options=options_for(method, tasks)
    )
    model.build((None, 6, 6, 1))
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    return model


def batch(seed=0, num=BATCH):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 6, 6, 1)).astype("float32")
    y = {
        "a": rng.integers(0, 3, size=num).astype("int32"),
        "b": rng.integers(0, 3, size=num).astype("int32"),
        "c": rng.normal(size=(num, 1)).astype("float32"),
    }
    return x, y


def layer_weights(model):
    """{path without the model prefix: value} for every variable of encoder and heads."""
    out = {}
    for part in [model.encoder, *model.heads.values()]:
        for v in part.weights:
            out[v.path.split("/", 1)[-1]] = np.array(keras.ops.convert_to_numpy(v), np.float64)
    return out


def copy_weights(source, target, tasks):
    for src, dst in zip(source.encoder.weights, target.encoder.weights, strict=True):
        dst.assign(src)
    for t in tasks:
        for src, dst in zip(source.heads[t].weights, target.heads[t].weights, strict=True):
            dst.assign(src)


def one_step(model, x, y, sample_weight=None, steps=1):
    recorder = tiny.StepLogs()
    data = (x, y) if sample_weight is None else (x, y, sample_weight)
    model.fit(tf.data.Dataset.from_tensors(data).repeat(steps), epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])
    return recorder.steps


# -- (a) precision -------------------------------------------------------------------------------


def mixed_precision_case(method, strategy=None):
    x, y = batch(1)
    reference = conv_model(method)
    start = {k: v.copy() for k, v in layer_weights(reference).items()}
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        if strategy is None:
            mixed = conv_model(method)
        else:
            with strategy.scope():
                mixed = conv_model(method)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    copy_weights(reference, mixed, TASKS)
    want_logs = one_step(reference, x, y)
    got_logs = one_step(mixed, x, y)
    assert got_logs[0]["skipped_update"] == 0.0, f"the mixed-precision step overflowed: {got_logs[0]}"
    got, want = layer_weights(mixed), layer_weights(reference)
    for name, value in want.items():
        moved = value - start[name]
        got_moved = got[name] - start[name]
        scale = max(np.max(np.abs(moved)), 1e-6)
        # float16 rounding of activations and gradients: a few 1e-3 relative.
        np.testing.assert_allclose(got_moved, moved, atol=2e-2 * scale, rtol=2e-2,
                                   err_msg=f"{method}: {name} moved differently under mixed_float16")
    for t in TASKS:
        np.testing.assert_allclose(got_logs[0][f"{t}_weight"], want_logs[0][f"{t}_weight"], atol=2e-2, rtol=2e-2)
        np.testing.assert_allclose(got_logs[0][f"{t}_loss"], want_logs[0][f"{t}_loss"], rtol=1e-2)


@pytest.mark.parametrize("method", METHODS)
def test_mixed_float16_step_equals_float32_step(method):
    mixed_precision_case(method)
    report_exception(method, "mixed_precision")


@pytest.mark.parametrize("method", METHODS)
def test_mixed_float16_step_equals_float32_step_on_two_replicas(method, mirrored_strategy):
    mixed_precision_case(method, mirrored_strategy)
    report_exception(method, "mixed_precision")


# -- (b) stateful layers --------------------------------------------------------------------------


def _moments(values):
    values = np.asarray(values, np.float64).reshape(-1, values.shape[-1])
    return values.mean(axis=0), values.var(axis=0)


@pytest.mark.parametrize("method", METHODS)
def test_stateful_layers_move_once_from_the_real_pass(method):
    x, y = batch(2)
    model = conv_model(method, batch_norm=True, dropout=True)
    w = layer_weights(model)
    seeds = {t: np.array(model.heads[t].get_layer(f"dropout_{t}").seed_generator.state) for t in TASKS}

    # NumPy forward pass at the weights before the step (training mode).
    kernel, bias = w["encoder/conv/kernel"], w["encoder/conv/bias"]
    patches = np.stack([x[:, i:i + 3, j:j + 3, :] for i in range(4) for j in range(4)], axis=1)  # [B, 16, 3, 3, 1]
    conv = np.einsum("bpijc,ijco->bpo", patches, kernel) + bias  # [B, 16, 4], positions row-major
    mean, var = _moments(conv)
    eps = model.encoder.get_layer("encoder_bn").epsilon
    normed = (conv - mean) / np.sqrt(var + eps) * w["encoder/encoder_bn/gamma"] + w["encoder/encoder_bn/beta"]
    z = np.maximum(normed, 0.0).reshape(BATCH, -1) @ w["encoder/fc/kernel"] + w["encoder/fc/bias"]
    z_mean, z_var = _moments(z)

    logs = one_step(model, x, y)
    assert logs[0]["skipped_update"] == 0.0
    bn = model.encoder.get_layer("encoder_bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-5,
                               err_msg=f"{method}: encoder batch norm did not see the real pass")
    np.testing.assert_allclose(np.asarray(bn.moving_variance), var, rtol=1e-4, atol=1e-5)
    for t in TASKS:
        head_bn = model.heads[t].get_layer(f"bn_{t}")
        np.testing.assert_allclose(np.asarray(head_bn.moving_mean), z_mean, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{method}: head {t}'s batch norm moved away from the real pass")
        np.testing.assert_allclose(np.asarray(head_bn.moving_variance), z_var, rtol=1e-4, atol=1e-5)
        generator = model.heads[t].get_layer(f"dropout_{t}").seed_generator
        after = np.array(generator.state)
        expected = _one_draw(seeds[t])
        np.testing.assert_array_equal(after, expected, err_msg=f"{method}: head {t}'s dropout seed moved "
                                      f"{after - seeds[t]} instead of one draw")
    report_exception(method, "stateful_layers")


def _one_draw(state):
    """The seed state after one dropout call from `state`, measured on a separate layer."""
    layer = keras.layers.Dropout(0.5, seed=7)
    layer.seed_generator.state.assign(state)
    layer(np.ones((2, 3), "float32"), training=True)
    return np.array(layer.seed_generator.state)


# -- (c) unlabelled tasks ---------------------------------------------------------------------------


def unlabelled_case(method, strategy=None):
    x, y = batch(3)
    weights = {"a": np.ones(BATCH, "float32"), "b": np.ones(BATCH, "float32"), "c": np.zeros(BATCH, "float32")}

    def build(tasks):
        if strategy is None:
            return conv_model(method, tasks=tasks)
        with strategy.scope():
            return conv_model(method, tasks=tasks)

    full = build(TASKS)
    reduced = build(("a", "b"))
    copy_weights(full, reduced, ("a", "b"))
    start = layer_weights(full)
    logs = one_step(full, x, y, weights, steps=2)
    reduced_logs = one_step(reduced, x, {t: y[t] for t in ("a", "b")}, {t: weights[t] for t in ("a", "b")}, steps=2)
    for step in logs:
        assert step["c_weight"] == 0.0, f"{method}: the unlabelled task got weight {step['c_weight']}"
        assert step["labelled_tasks"] == 2.0
        assert step["skipped_update"] == 0.0
        assert all(np.isfinite(v) for v in step.values())
    after = layer_weights(full)
    for name in after:
        if name.startswith("head_c/"):
            np.testing.assert_array_equal(after[name], start[name], err_msg=f"{method}: the unlabelled head moved")
    assert any(not np.allclose(after[n], start[n]) for n in after if n.startswith("encoder/conv")), "the encoder did not move"
    if exception(method, "unlabelled_task"):
        return
    want = layer_weights(reduced)
    for name, value in want.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{method}: {name} differs from the model without the unlabelled task")
    for step, reduced_step in zip(logs, reduced_logs):
        for t in ("a", "b"):
            np.testing.assert_allclose(step[f"{t}_weight"], reduced_step[f"{t}_weight"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_unlabelled_task_takes_no_part(method):
    unlabelled_case(method)
    report_exception(method, "unlabelled_task")


@pytest.mark.parametrize("method", METHODS)
def test_unlabelled_task_takes_no_part_on_two_replicas(method, mirrored_strategy):
    unlabelled_case(method, mirrored_strategy)
    report_exception(method, "unlabelled_task")


@pytest.mark.parametrize("method", METHODS)
def test_batch_without_any_label_is_skipped_not_an_error(method):
    x, y = batch(4)
    model = conv_model(method)
    start = layer_weights(model)
    zeros = {t: np.zeros(BATCH, "float32") for t in TASKS}
    logs = one_step(model, x, y, zeros)
    assert logs[0]["skipped_update"] == 1.0 and logs[0]["labelled_tasks"] == 0.0
    after = layer_weights(model)
    for name in after:
        if "moving" not in name:
            np.testing.assert_array_equal(after[name], start[name], err_msg=name)


# -- (d) weights and permutations ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_weights_are_finite_and_permutation_equivariant(method):
    setup = tiny.make_setup(num_tasks=3, seed=61, target_scales=[2.0, 0.5, 1.0])
    options = options_for(method, ("a", "b", "c"))
    cls = balancers.registry._REGISTRY[method]
    if exception(method, "permutation_equivariant"):
        _, logs = tiny.run(setup, method, options, epochs=2)
    else:
        logs = properties.check_permutation_equivariant(setup, method, options, permutation=[2, 0, 1])
    properties.check_weights(logs, setup.tasks, simplex_total=1.0 if cls.simplex_weights else None)
    report_exception(method, "permutation_equivariant")


# -- (e) loss ranges -------------------------------------------------------------------------------------
# Issue 22's small input: task `n` has a CosineSimilarity loss of -1/sqrt(2). A method declaring "any"
# takes it and descends both tasks; one declaring "non_negative" refuses it before any update.

# Options the small input needs (CosineSimilarity is neither a classification nor a regression loss by name).
NEGATIVE_OPTIONS = {"uncertainty": {"task_types": "regression"}, "static": {"weights": {"a": 1.0, "n": 1.0}}}
# Options that change a method's need, beside every method's defaults.
RANGE_VARIANTS = [(m, {}) for m in METHODS] + [
    ("mgda", {"normalization": "loss"}),
    ("mgda_ub", {"normalization": "loss+"}),
    ("moco", {"gradient_normalization": "loss"}),
    ("imtl", {"variant": "gradient"}),
    ("imtl", {"variant": "loss"}),
]


def _range_id(variant):
    method, options = variant
    return method + "".join(f"-{k}={v}" for k, v in options.items())


def _instance(method, options):
    return balancers.get(method, **{**NEGATIVE_OPTIONS.get(method, {}), **options})


@pytest.mark.parametrize("variant", RANGE_VARIANTS, ids=_range_id)
def test_loss_range_is_declared_and_documented(variant):
    method, options = variant
    cls = balancers.registry._REGISTRY[method]
    # Declared by the method itself, not inherited from Balancer's permissive default.
    declared = [k for k in cls.__mro__ if k is not balancers.Balancer and "loss_range" in vars(k)]
    assert declared, f"{method} does not declare its loss_range"
    need = loss_range.needed(_instance(method, options))
    assert need in balancers.LOSS_RANGES
    paragraph = loss_range.reason(_instance(method, options), sentences=100)
    assert paragraph.startswith("Loss range:"), f"{method}'s docstring has no 'Loss range:' paragraph"
    assert loss_range.LABELS[need] in paragraph.lower(), f"{method}'s docstring does not say {loss_range.LABELS[need]!r}"


@pytest.mark.parametrize("variant", RANGE_VARIANTS, ids=_range_id)
def test_negative_loss_is_taken_or_refused_as_declared(variant):
    method, options = variant
    options = {**NEGATIVE_OPTIONS.get(method, {}), **options}
    need = loss_range.needed(balancers.get(method, **options))
    if need == "any":
        properties.check_takes_negative_loss(method, options)
    else:
        properties.check_refuses_negative_loss(method, options)


# -- (e) a loss at exactly 0 ----------------------------------------------------------------------

ZERO_LOSS_STEPS = 1000
# Adam moves a learnt log-scale by about its learning rate per step whatever
# the gradient, so without the bound of `mtl_tf.balancers.log_scales` the
# paper's s_t of uncertainty and imtl reaches exp's overflow (|s_t| = 88.7)
# in 88.7 / 0.2 = 444 steps: both failed this row before the bound. (SGD(1.0)
# overflows them too, but diverges on task `a` itself under the methods
# whose step has a fixed norm, nash_mtl and fairgrad: alpha_t = 1/||g_t||.)
ZERO_LOSS_OPTIMIZER = lambda: keras.optimizers.Adam(0.2)  # noqa: E731


@pytest.mark.parametrize("method", METHODS)
def test_a_loss_at_exactly_zero_for_1000_steps_stays_finite(method):
    model, (x, y) = tiny.zero_loss_model(method, options_for(method, ("a", "b")), optimizer=ZERO_LOSS_OPTIMIZER(),
                                         steps_per_execution=ZERO_LOSS_STEPS)
    data = tf.data.Dataset.from_tensors((x, y)).repeat(ZERO_LOSS_STEPS)
    if model.balancer.loss_range_needed() == "positive":
        # A loss of 0 is outside what the method takes: refused at once, by name.
        model.compile(optimizer=ZERO_LOSS_OPTIMIZER(), jit_compile=False)
        with pytest.raises(balancers.loss_range.LossRangeError, match="'b'"):
            model.fit(data.take(1), epochs=1, verbose=0)
        return
    model.fit(data, epochs=1, verbose=0)
    # A skipped step puts the step count back too, so this counts the applied steps.
    applied = int(model.optimizer.iterations)
    assert applied == ZERO_LOSS_STEPS, f"{method}: only {applied} of {ZERO_LOSS_STEPS} steps applied"
    for variable in mtl_tf.step_guard.guarded_variables(model):
        value = np.asarray(variable)
        assert np.all(np.isfinite(value.astype(np.float64))), f"{method}: {variable.path} = {value}"
