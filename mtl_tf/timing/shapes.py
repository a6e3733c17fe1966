"""What the step benchmark times: model shapes, method labels, and the compiled model of one pair.

Model shapes (`model_shape`)
  * `multilenet`: Sener's MultiLeNet (`mtl_tf.nets.lenet`), 28x28x1, batch 256,
    2 tasks, SGD 0.05 with momentum 0.9, accuracy metrics.
  * `resnet18`: Sener's CelebA ResNet-18 (`mtl_tf.nets.resnet`), 64x64x3,
    40 linear heads, Adam 5e-4, accuracy metrics. The paper's batch is 256; the
    default here is 8, so that exact MGDA's 40 encoder backward passes fit in a
    CPU benchmark (`batch_size` overrides it).
  * `cityscapes`: Sener's Cityscapes model (`mtl_tf.nets.pspnet`: ResNet-50
    dilated to output stride 8, one pyramid-pooling decoder per task) for
    segmentation (19 classes), instance offsets (2) and disparity (1) with the
    masked losses of `mtl_tf.losses`, Adam 5e-4, at a reduced resolution of
    64x128 (the paper trains at 256x512), batch 2.
  The `smoke` variants keep the structure at toy sizes (a ResNet with one block
  per stage and width 4 on 16x16 inputs with 5 tasks; for Cityscapes a three-layer strided
  convolution encoder stands in for the ResNet-50, with small decoders); they
  check the pipeline, their figures mean nothing.

Method labels (`parse_method`): a method name, optionally with options,
`name:key=value:...` (values parsed as Python literals), e.g.
`mgda:jacobian=True`. Every other option keeps its default; `static` without
weights gets weight 1 per task. `policy=` and `loss_scaling=` (`STEP_OPTIONS`)
set up the step rather than the balancer.

`build_timed_model` builds and compiles the `MultiTaskModel` of one shape and
one method label, the model `mtl_tf.timing.steps` times. (The trainer builds
its models from a config, elsewhere; this one only ever builds benchmark
models.)
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf import losses as dense_losses
from mtl_tf.model import MultiTaskModel
from mtl_tf.nets import lenet, pspnet, resnet

SHAPES = ("multilenet", "resnet18", "cityscapes")


# ----------------------------------------------------------------------------
# Model shapes.


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """A model to time: how to build it, one batch for it, and its default schedule.

    Attributes:
      name: the shape's name (with ` (smoke)` for the smoke variant).
      description: what the shape is, for the table.
      task_names: the tasks, in head order.
      batch_size: examples per step.
      input_shape: the shape of one input example.
      build: `fn() -> (encoder, heads, losses, metrics)`, fresh and unbuilt.
      targets: `fn(rng, batch_size) -> {task: numpy array}`.
      optimizer: `fn() -> keras optimizer`.
      steps, repeats: default schedule (steps per sample, samples per method).
    """

    name: str
    description: str
    task_names: tuple
    batch_size: int
    input_shape: tuple
    build: Callable[[], tuple]
    targets: Callable[[np.random.Generator, int], dict]
    optimizer: Callable[[], Any]
    steps: int
    repeats: int

    @property
    def num_tasks(self):
        return len(self.task_names)

    def batch(self, seed=0):
        """One fixed batch `(x, {task: target})` as device tensors."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch_size, *self.input_shape)).astype(np.float32)
        y = self.targets(rng, self.batch_size)
        return tf.constant(x), {t: tf.constant(y[t]) for t in self.task_names}


def _class_targets(task_names, num_classes, spatial=()):
    def targets(rng, batch_size):
        return {t: rng.integers(0, num_classes, size=(batch_size, *spatial)).astype(np.int32) for t in task_names}

    return targets


def _multilenet(smoke):
    tasks = ("left", "right")

    def build():
        encoder = lenet.multi_lenet_encoder()
        heads = {t: lenet.multi_lenet_head(10, name=f"{t}_head") for t in tasks}
        losses = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}
        return encoder, heads, losses, {t: ["accuracy"] for t in tasks}

    return ModelShape(
        name="multilenet",
        description="MultiLeNet (Sener), 28x28x1",
        task_names=tasks,
        batch_size=16 if smoke else 256,
        input_shape=(28, 28, 1),
        build=build,
        targets=_class_targets(tasks, 10),
        optimizer=lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        steps=2 if smoke else 10,
        repeats=3 if smoke else 15,
    )


def _resnet18(smoke):
    num_tasks = 5 if smoke else 40
    tasks = tuple(f"attribute_{i:02d}" for i in range(num_tasks))
    size = 16 if smoke else 64

    def build():
        if smoke:
            encoder = resnet.ResNetEncoder(blocks=(1, 1, 1, 1), width=4, pool_size=2, seed=0, name="resnet_encoder")
        else:
            encoder = resnet.resnet18_encoder(seed=0)
        heads = {t: resnet.attribute_head(2, seed=1000 + i, name=f"{t}_head") for i, t in enumerate(tasks)}
        losses = {t: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for t in tasks}
        return encoder, heads, losses, {t: ["accuracy"] for t in tasks}

    return ModelShape(
        name="resnet18",
        description=(
            f"ResNet-10 stand-in (one block per stage, width 4), {size}x{size}x3" if smoke
            else f"ResNet-18 (Sener's CelebA net), {size}x{size}x3"
        ),
        task_names=tasks,
        batch_size=4 if smoke else 8,
        input_shape=(size, size, 3),
        build=build,
        targets=_class_targets(tasks, 2),
        optimizer=lambda: keras.optimizers.Adam(5e-4),
        steps=1,
        repeats=3 if smoke else 5,
    )


class _SmokeDenseEncoder(keras.layers.Layer):
    """Three stride-2 convolutions: output stride 8, like the dilated ResNet-50 (smoke only)."""

    def __init__(self, channels=8, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.convs = [
            keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
            for i in range(3)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _cityscapes(smoke):
    tasks = ("segmentation", "instance", "disparity")
    outputs = {"segmentation": 19, "instance": 2, "disparity": 1}
    height, width = (32, 64) if smoke else (64, 128)
    feature_size = (height // 8, width // 8)

    def build():
        if smoke:
            encoder = _SmokeDenseEncoder(name="smoke_encoder")
            heads = {t: pspnet.pyramid_pooling_decoder(outputs[t], channels=4, name=f"{t}_decoder") for t in tasks}
        else:
            encoder = pspnet.dilated_resnet50_encoder()
            heads = {t: pspnet.pyramid_pooling_decoder(outputs[t], name=f"{t}_decoder") for t in tasks}
        losses = {
            "segmentation": dense_losses.MaskedSparseCategoricalCrossentropy(),
            "instance": dense_losses.MaskedL1(invalid_value=dense_losses.INVALID_OFFSET),
            "disparity": dense_losses.MaskedL1(),
        }
        return encoder, heads, losses, None

    def targets(rng, batch_size):
        return {
            "segmentation": rng.integers(0, 19, size=(batch_size, *feature_size)).astype(np.int32),
            "instance": rng.normal(0.0, 10.0, size=(batch_size, *feature_size, 2)).astype(np.float32),
            "disparity": rng.uniform(1.0, 100.0, size=(batch_size, *feature_size, 1)).astype(np.float32),
        }

    return ModelShape(
        name="cityscapes",
        description=(
            "Cityscapes 3 tasks, small conv encoder stand-in, " if smoke else "Cityscapes 3 tasks, dilated ResNet-50 + PSP decoders, "
        ) + f"{height}x{width}x3",
        task_names=tasks,
        batch_size=2,
        input_shape=(height, width, 3),
        build=build,
        targets=targets,
        optimizer=lambda: keras.optimizers.Adam(5e-4),
        steps=1,
        repeats=3 if smoke else 5,
    )


_SHAPE_BUILDERS = {"multilenet": _multilenet, "resnet18": _resnet18, "cityscapes": _cityscapes}


def model_shape(name, smoke=False, batch_size=None) -> ModelShape:
    """The named model shape (see the module docstring); `batch_size` overrides its default."""
    if name not in _SHAPE_BUILDERS:
        raise ValueError(f"unknown model shape {name!r}; expected one of {list(SHAPES)}")
    shape = _SHAPE_BUILDERS[name](smoke)
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ValueError(f"batch size of shape {name!r} must be a positive integer; got {batch_size}")
        shape = dataclasses.replace(shape, batch_size=int(batch_size))
    if smoke:
        shape = dataclasses.replace(shape, name=f"{name} (smoke)")
    return shape


# ----------------------------------------------------------------------------
# Method labels.


# Options of a method label that set up the step rather than the balancer:
# `policy` (a Keras dtype policy, e.g. mixed_float16) and `loss_scaling`
# (False: under mixed_float16, train with the plain optimizer, no loss scale,
# to isolate what the scaling itself costs).
STEP_OPTIONS = ("policy", "loss_scaling")


def parse_method(label):
    """`"mgda:jacobian=True"` -> ("mgda", {"jacobian": True}); checks the name and options.

    `policy=...` and `loss_scaling=...` (see `STEP_OPTIONS`) are accepted too;
    `build_timed_model` takes them out.
    """
    name, *parts = str(label).split(":")
    if name not in balancers.available():
        raise ValueError(f"unknown balancing method {name!r} in {label!r}; expected one of {balancers.available()}")
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {part!r} in {label!r} must be key=value, e.g. mgda:jacobian=True")
        if key not in balancers.option_names(name) and key not in STEP_OPTIONS:
            raise ValueError(
                f"method {name!r} has no option {key!r} (in {label!r}); its options are {list(balancers.option_names(name))}"
            )
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return name, options


# ----------------------------------------------------------------------------
# The model of one shape and one method.


def build_timed_model(shape: ModelShape, method_label, jit_compile, seed=0):
    """A compiled MultiTaskModel of `shape` with the labelled method, train function made.

    Seeded with `seed`, so every method starts from the same weights. The
    label's `policy` is the global dtype policy while the model is built and
    compiled, then the previous one is restored.
    """
    name, options = parse_method(method_label)
    policy = options.pop("policy", None)
    loss_scaling = bool(options.pop("loss_scaling", True))
    if name == "static" and "weights" not in options:
        # Lee & Son's "ordinary" baseline: every task weight 1.
        options["weights"] = [1.0] * shape.num_tasks
    keras.utils.set_random_seed(seed)
    previous = keras.mixed_precision.global_policy()
    if policy is not None:
        keras.mixed_precision.set_global_policy(policy)
    try:
        encoder, heads, losses, metrics = shape.build()
        model = MultiTaskModel(encoder, heads, losses, metrics, balancer=name, balancer_options=options)
        model.compile(optimizer=shape.optimizer(), jit_compile=bool(jit_compile))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if not loss_scaling and isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        model.optimizer = model.optimizer.inner_optimizer
    model.make_train_function()
    return model
