"""One computation, run under TensorFlow and under JAX, for `tests/engines/test_same_values.py`.

`compute()` builds every public net and builder of `mtl_tf.nets` at small
sizes, sets every weight from a seeded NumPy generator (`layer.set_weights`,
never the backend's RNG), runs the forward passes, every loss of
`mtl_tf.losses`, every metric of `mtl_tf.metrics` and every function of
`mtl_tf.backend.ops` on fixed NumPy inputs, and returns a dict name -> NumPy
array. It imports nothing backend-specific: the backend is whatever Keras runs
on. Run as a script (`python -m tests.engines.same_values_cases OUT.npz`) it
installs the TensorFlow blocker first when `MTL_TF_BLOCK_TENSORFLOW=1`, then
saves the dict to OUT.npz.
"""

from __future__ import annotations

import sys
import time

TIMES = {}

import numpy as np

SEED = 24


def _set_weights(layer, rng):
    """Every weight of `layer` from `rng`: kernels ~ U(+-sqrt(3 / fan_in)), variances in [0.5, 1.5]."""
    values = []
    for weight in layer.weights:
        shape = tuple(weight.shape)
        name = weight.path if hasattr(weight, "path") else weight.name
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.uniform(-1.0, 1.0, shape) * np.sqrt(3.0 / fan_in)
        else:
            value = rng.uniform(-0.1, 0.1, shape)
        values.append(np.asarray(value, dtype=weight.dtype))
    layer.set_weights(values)


def _numpy(tree, prefix, out):
    """Flattens nested outputs (dicts, tuples, lists of tensors) into `out[prefix/...]`."""
    import keras

    if isinstance(tree, dict):
        for key in sorted(tree):
            _numpy(tree[key], f"{prefix}/{key}", out)
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            _numpy(item, f"{prefix}/{i}", out)
    elif tree is None:  # a gradient a method leaves out: recorded, so both backends must agree on it
        out[prefix] = np.asarray("None")
    else:
        out[prefix] = np.asarray(keras.ops.convert_to_numpy(tree))


def _net_cases(rng):
    """(name, layer, input) of every public net, at small sizes."""
    import keras

    from mtl_tf import nets

    image28 = rng.normal(size=(2, 28, 28, 1)).astype("float32")
    image36 = rng.normal(size=(2, 36, 36, 1)).astype("float32")
    image32 = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    image16 = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    vector = rng.normal(size=(3, 6)).astype("float32")
    # Three blocks (inputs a multiple of 8) keep JAX's op-by-op compilation short; the block loops are the same.
    seg = dict(filters=(4, 6, 8), convs_per_block=(1, 1, 2))
    mtan_filters = dict(filters=(4, 6, 8), convs_per_block=(2, 1, 2))
    encoder = nets.segnet_encoder(**seg, seed=1)
    backbone = nets.mtan_backbone(**mtan_filters, seed=1)
    for layer in (encoder, backbone):  # their outputs feed the decoders below: weights from NumPy first
        layer(image16)
        _set_weights(layer, rng)
    cases = [
        ("multi_lenet_encoder", nets.multi_lenet_encoder(seed=1), image28),
        ("multi_lenet_encoder_official", nets.MultiLeNetEncoder(seed=1, dropout="official", initializer="torch"),
         image28),
        ("multi_lenet_head", nets.multi_lenet_head(10, seed=1), rng.normal(size=(2, 50)).astype("float32")),
        ("multi_lenet_head_official", nets.MultiLeNetHead(10, seed=1, dropout="official", initializer="torch"),
         rng.normal(size=(2, 50)).astype("float32")),
        ("pareto_lenet_encoder", nets.pareto_lenet_encoder(), image36),
        ("pareto_lenet_head", nets.pareto_lenet_head(10), rng.normal(size=(2, 50)).astype("float32")),
        ("resnet18_encoder", nets.resnet18_encoder(width=4, pool_size=2, seed=1), image32),
        ("basic_block", nets.BasicBlock(6, strides=2, seed=1), rng.normal(size=(2, 8, 8, 4)).astype("float32")),
        ("attribute_head", nets.attribute_head(2, seed=1), rng.normal(size=(2, 12)).astype("float32")),
        ("torch_dense", nets.TorchDense(5, seed=1), vector),
        ("dilated_resnet50_encoder", nets.dilated_resnet50_encoder(blocks=(1, 1, 1, 1), width=4), image16),
        ("dilated_resnet50_os16", nets.DilatedResNet50(output_stride=16, blocks=(1, 1, 1, 1), width=4), image16),
        ("pyramid_pooling_decoder", nets.pyramid_pooling_decoder(3, channels=4, seed=1),
         rng.normal(size=(2, 12, 10, 8)).astype("float32")),
        ("adaptive_average_pooling", nets.AdaptiveAveragePooling2D((3, 2)),
         rng.normal(size=(2, 7, 5, 3)).astype("float32")),
        ("conv_bn_relu", nets.ConvBatchNormReLU(4, seed=1), rng.normal(size=(2, 8, 8, 3)).astype("float32")),
        ("max_pooling_with_switches", nets.MaxPoolingWithSwitches(),
         # Ties (rounded values) check that the first maximum in row-major order wins on every backend.
         np.round(rng.normal(size=(2, 8, 6, 3))).astype("float32")),
        ("segnet_encoder", encoder, image16),
        ("mtan_backbone", backbone, image16),
        ("mmoe", nets.MMoE(["a", "b"], num_experts=3, seed=1), vector),
        ("ple", nets.PLE(["a", "b"], num_levels=2, seed=1), vector),
        ("cgc", nets.cgc(["a", "b"], seed=1), vector),
        ("cross_stitch", nets.CrossStitch(["a", "b", "c"]), vector),
        ("cross_stitch_unit", nets.CrossStitchUnit(3), [vector, 2 * vector, -vector]),
        ("mlp_expert", nets.MLPExpert((5, 4)), vector),
        ("softmax_gate", nets.SoftmaxGate(4, seed=1), vector),
        ("unscaled_dropout", nets.UnscaledDropout(0.5, seed=1), vector),
    ]
    encoded = encoder(image16)
    cases.append(("segnet_decoder", nets.segnet_decoder(3, **seg, seed=2), encoded))
    cases.append(("segnet_decoder_normals", nets.segnet_decoder(3, "l2_normalize", **seg, seed=3), encoded))
    maps = backbone(image16)
    cases.append(("mtan_head", nets.mtan_head(3, **mtan_filters, seed=2), maps))
    cases.append(("mtan_head_normals", nets.mtan_head(3, "l2_normalize", **mtan_filters, seed=3), maps))
    pooled, switches = nets.MaxPoolingWithSwitches()(np.round(rng.normal(size=(2, 8, 6, 3))).astype("float32"))
    cases.append(("max_unpooling_with_switches", nets.MaxUnpoolingWithSwitches(), (pooled, switches)))

    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(5, activation="relu", name="shared")(inputs)
    model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(hidden), "b": keras.layers.Dense(3, name="b")(hidden)})
    cases.append(("split_model", model, vector))
    return cases


def _call(name, layer, x):
    if name == "max_unpooling_with_switches":
        return layer(x[0], x[1])
    if name in ("cross_stitch_unit", "max_pooling_with_switches", "adaptive_average_pooling", "mlp_expert",
                "softmax_gate", "attribute_head", "torch_dense", "split_model") or not _takes_training(layer):
        return layer(x)
    return layer(x, training=False)


def _takes_training(layer):
    import inspect

    return "training" in inspect.signature(layer.call).parameters


def nets_values(out):
    from mtl_tf import nets

    rng = np.random.default_rng(SEED)
    for name, layer, x in _net_cases(rng):
        start = time.perf_counter()
        if not layer.built:
            _call(name, layer, x)  # builds
        _set_weights(layer, rng)
        _numpy(_call(name, layer, x), f"nets/{name}", out)
        if name == "split_model":
            encoder, heads = nets.split_model(layer, at="shared")
            z = encoder(x)
            _numpy({task: head(z) for task, head in heads.items()}, "nets/split_model_parts", out)
        if name == "segnet_encoder":
            # Batch statistics (training=True; no dropout in SegNet), after the inference pass.
            _numpy(layer(x, training=True), "nets/segnet_encoder_training", out)
        TIMES[name] = time.perf_counter() - start
    x = rng.normal(size=(3, 4)).astype("float32")
    gate = nets.SoftmaxGate(2, seed=1)
    gate(x)
    _set_weights(gate, rng)
    _numpy(nets.mix([x, 3 * x], gate(x)), "nets/mix", out)
    _numpy([nets.adaptive_pooling_matrix(7, 3), nets.kernel_fan_in((3, 3, 4, 5))], "nets/helpers", out)


def losses_values(out):
    from mtl_tf import losses

    rng = np.random.default_rng(SEED + 1)
    logits = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(2, 4, 5)).astype("int32")
    labels[0, 0, :2] = losses.IGNORE_LABEL
    depth_pred = rng.normal(size=(2, 4, 5, 1)).astype("float32")
    depth_true = np.abs(rng.normal(size=(2, 4, 5, 1))).astype("float32")
    depth_true[1, 2, :3] = 0.0
    depth_true[0, 1, 1] = np.nan
    normal_pred = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    normal_true = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    normal_true[0, 3, :2] = 0.0
    weight = np.array([1.0, 0.5], "float32")
    cases = {
        "masked_ce": (losses.MaskedSparseCategoricalCrossentropy(), labels, logits),
        "masked_ce_channel": (losses.MaskedSparseCategoricalCrossentropy(ignore_class=-1),
                              np.where(labels == losses.IGNORE_LABEL, -1, labels)[..., None], logits),
        "masked_l1": (losses.MaskedL1(), depth_true, depth_pred),
        "masked_l1_nan_only": (losses.MaskedL1(invalid_value=None), depth_true, depth_pred),
        "masked_l1_rank3_target": (losses.MaskedL1(), depth_true[..., 0], depth_pred),
        "normal_cosine": (losses.NormalCosineLoss(), normal_true, normal_pred),
        "normal_cosine_nan_only": (losses.NormalCosineLoss(invalid_value=None), normal_true, normal_pred),
    }
    for name, (loss, y_true, y_pred) in cases.items():
        _numpy(loss(y_true, y_pred), f"losses/{name}", out)
        _numpy(loss(y_true, y_pred, sample_weight=weight[:, None, None]), f"losses/{name}_weighted", out)
        if hasattr(loss, "labelled_count"):
            _numpy(loss.labelled_count(y_true), f"losses/{name}_count", out)
            _numpy(loss.labelled_count(y_true, weight), f"losses/{name}_count_weighted", out)
    _numpy(losses.valid_pixel_mask(normal_true, 0.0), "losses/valid_pixel_mask", out)
    _numpy(losses.align_target(depth_true[..., 0], depth_pred, "x"), "losses/align_target", out)


def metrics_values(out):
    from mtl_tf import metrics

    rng = np.random.default_rng(SEED + 2)
    logits = rng.normal(size=(2, 6, 5, 4)).astype("float32")
    labels = rng.integers(0, 4, size=(2, 6, 5)).astype("int32")
    labels[1, 0, :3] = 250
    offsets_pred = rng.normal(size=(2, 6, 5, 2)).astype("float32")
    offsets_true = rng.normal(size=(2, 6, 5, 2)).astype("float32")
    offsets_true[0, 0, :2] = 250.0
    depth_pred = np.abs(rng.normal(size=(2, 6, 5, 1))).astype("float32")
    depth_true = np.abs(rng.normal(size=(2, 6, 5, 1))).astype("float32")
    depth_true[1, 1, :2] = 0.0
    normal_pred = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    normal_true = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    normal_true[0, 2, :3] = 0.0
    weight = np.array([1.0, 0.25], "float32")
    cases = {
        "miou": (lambda: metrics.MeanIoU(4), labels, logits),
        "miou_sparse": (lambda: metrics.MeanIoU(4, sparse_y_pred=True), labels, np.argmax(logits, -1)),
        "pixel_accuracy": (lambda: metrics.PixelAccuracy(4), labels[..., None], logits),
        "offset_l1": (lambda: metrics.OffsetError("l1", invalid_value=250.0), offsets_true, offsets_pred),
        "offset_mse": (lambda: metrics.OffsetError("mse"), offsets_true, offsets_pred),
        "depth_abs": (lambda: metrics.DepthAbsoluteError(), depth_true, depth_pred),
        "depth_rel": (lambda: metrics.DepthRelativeError(), depth_true, depth_pred),
        "normal_mean": (lambda: metrics.NormalAngleMean(), normal_true, normal_pred),
        "normal_within": (lambda: metrics.NormalAngleWithin(30.0), normal_true, normal_pred),
        "normal_median": (lambda: metrics.NormalAngleMedian(), normal_true, normal_pred),
        "normal_median_coarse": (lambda: metrics.NormalAngleMedian(bin_width=1.0), normal_true, normal_pred),
    }
    for name, (make, y_true, y_pred) in cases.items():
        metric = make()
        metric.update_state(y_true, y_pred)
        _numpy(metric.result(), f"metrics/{name}", out)
        metric.update_state(y_true, y_pred, sample_weight=weight)
        _numpy(metric.result(), f"metrics/{name}_accumulated", out)
        if hasattr(metric, "total_cm"):
            _numpy(metric.total_cm, f"metrics/{name}_confusion_matrix", out)
        metric.reset_state()
        _numpy(metric.result(), f"metrics/{name}_reset", out)
    _numpy(metrics.normal_angles_degrees(normal_true, normal_pred), "metrics/normal_angles_degrees", out)
    out["metrics/delta_m"] = np.asarray(
        metrics.delta_m({"a": 0.5, "b": 2.0}, {"a": 0.4, "b": 2.5}, {"a": True, "b": False})
    )


def engine_ops_values(out):
    from mtl_tf.backend import ops

    rng = np.random.default_rng(SEED + 3)
    x = rng.normal(size=(2, 3, 5, 2)).astype("float32")
    _numpy(ops.upsample2x_align_corners(x), "ops/upsample2x_align_corners", out)
    _numpy(ops.upsample2x_align_corners(x[:, :1, :1]), "ops/upsample2x_align_corners_1x1", out)
    _numpy(ops.resize_bilinear(x, (7, 11)), "ops/resize_bilinear_up", out)
    _numpy(ops.resize_bilinear(x[:, :1, :1], (4, 6)), "ops/resize_bilinear_from_1x1", out)
    _numpy(ops.resize_bilinear(rng.normal(size=(2, 6, 8, 2)).astype("float32"), (3, 4)), "ops/resize_bilinear_down",
           out)
    _numpy(ops.l2_normalize(x, axis=-1), "ops/l2_normalize", out)
    _numpy(ops.l2_normalize(np.zeros((2, 3), "float32")), "ops/l2_normalize_zero", out)
    _numpy(ops.add_n([x, 2 * x, -0.5 * x]), "ops/add_n", out)


# Balancer cases: (label, method, options, number of tasks). Methods that draw
# random numbers get the label prefix "random_": each backend has its own
# generator (`mtl_tf.backend.random`), so only their shapes are compared.
# pcgrad and gradvac shuffle the task order at random; with two tasks every
# order gives the same result, so they are compared in full there.
BALANCER_OPTIONS = {"static": {"weights": [1.0, 2.0, 0.5]}}
REPRESENTATION_METHODS = ("aligned_mtl", "cagrad", "dualproj", "fairgrad", "imtl", "nash_mtl", "pcgrad", "upgrad",
                          "gradnorm")
TWO_TASKS = ("pcgrad", "gradvac")
RANDOM = ("graddrop", "rlw")
BALANCER_STEPS = 3


def balancer_cases():
    from mtl_tf import balancers

    cases = []
    for name in balancers.available():
        tasks = 2 if name in TWO_TASKS else 3
        options = dict(BALANCER_OPTIONS.get(name, {}))
        if name == "uncertainty":
            options["task_types"] = {t: "regression" for t in ("a", "b", "c")[:tasks]}
        if name == "static":
            options["weights"] = options["weights"][:tasks]
        prefix = "random_" if name in RANDOM else ""
        cases.append((f"{prefix}{name}", name, options, tasks, {}))
        if name in REPRESENTATION_METHODS:
            cases.append((f"{prefix}{name}_representation", name, {**options, "gradient_at": "representation"}, tasks, {}))
    cases += [
        ("mgda_paper_sequential", "mgda", {"head_update": "paper_sequential"}, 3, {}),
        ("mgda_ub_official_loss", "mgda_ub", {"head_update": "official", "normalization": "loss+"}, 3, {}),
        ("mgda_jacobian_masked", "mgda", {"jacobian": True}, 3, {"mask": [True, False, True]}),
        ("mgda_ub_loss_scaled", "mgda_ub", {}, 2, {"loss_scale": 8.0}),
        ("single_step_original_heads", "single_step", {"head_gradients_at": "original"}, 3, {}),
    ]
    return cases


def balancers_values(out):
    """Every method's `compute_update` on the tiny linear problem (`tests.balancers.array_problem`), three SGD steps.

    Run under JAX with `jax_enable_x64` (`tests/engines/test_same_values.py`): the
    solvers then work in float64 as on TensorFlow, so the two backends are
    compared at one precision. Without it they work in float32 (the solvers'
    float32 accuracy is `tests/test_solvers*.py`'s, under JAX too).
    """
    import keras

    from mtl_tf import balancers
    from tests.balancers import tiny
    from tests.balancers.array_problem import ArrayProblem, make_variables, sgd_step

    for label, name, options, num_tasks, problem_options in balancer_cases():
        setup = tiny.make_setup(num_tasks=num_tasks, seed=SEED)
        method = balancers.get(name, **options)
        method.build_for_tasks(setup.tasks, losses={t: keras.losses.MeanSquaredError() for t in setup.tasks})
        variables = make_variables(setup)
        for step in range(BALANCER_STEPS):
            problem = ArrayProblem(setup, method, variables=variables, **problem_options)
            update = method.compute_update(problem)
            key = f"balancers/{label}/{step}"
            _numpy(update.task_weights, f"{key}/weights", out)
            _numpy([g for g in update.shared], f"{key}/shared", out)
            if update.heads is not None:
                _numpy({t: list(g) for t, g in update.heads.items()}, f"{key}/heads", out)
            _numpy(dict(update.logs), f"{key}/logs", out)
            sgd_step(problem, update, method)
        _numpy(variables, f"balancers/{label}/parameters", out)


PARTS = ("engine_ops", "losses", "metrics", "nets", "balancers")


def compute(parts=PARTS) -> dict[str, np.ndarray]:
    """name -> value of every case of `parts`, under the current Keras backend."""
    import keras

    keras.utils.set_random_seed(SEED)
    out: dict[str, np.ndarray] = {}
    for name in parts:
        part = globals()[f"{name}_values"]
        start = time.perf_counter()
        part(out)
        TIMES[part.__name__] = time.perf_counter() - start
    return out


def main(path: str, parts: str = ",".join(PARTS)) -> None:
    from tests.backends import block_tensorflow_if_asked

    block_tensorflow_if_asked()
    import keras

    values = compute(tuple(parts.split(",")))
    values["backend"] = np.asarray(keras.backend.backend())
    np.savez(path, **values)


if __name__ == "__main__":
    main(*sys.argv[1:])
