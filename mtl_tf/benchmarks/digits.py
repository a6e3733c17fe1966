"""Benchmarks `multi_mnist`, `multi_fashion`, `multi_fashion_mnist`: two 10-way digit/item tasks.

Tasks `left` (top-left item, "task 1" / "task-L" of the papers) and `right`
(bottom-right item, "task 2" / "task-R"), each a 10-way classification with
softmax cross-entropy on logits and accuracy as metric; the best epoch is the
one with the highest mean validation accuracy of the two tasks.

Protocols (`config.data.protocol`, data in `mtl_tf.data.multi_digits`):

  sener   Sener & Koltun (NeurIPS 2018) MultiMNIST: 28x28 composites, MultiLeNet
          (`mtl_tf.nets.lenet.MultiLeNetEncoder` / `MultiLeNetHead`);
  pareto  Lin et al. (NeurIPS 2019) Pareto MTL composites on a 36x36 canvas with
          Lee & Son's 120k / 10k / 10k split, the Pareto-MTL LeNet
          (`ParetoLeNetEncoder` / `ParetoLeNetHead`).

`config.model.name` picks the net (`multi_lenet`, `pareto_lenet`, or `auto`:
the protocol's own), or a multi-task architecture built from the protocol's
LeNet (its encoder as the backbone, its heads as the towers):

  cross_stitch  `mtl_tf.nets.cross_stitch`: one LeNet column per task, cut into
                the stages conv1-pool1, conv2-pool2 and fc, a cross-stitch unit
                after each (model.alpha_learning_rate_scale, default 1);
  mmoe          `mtl_tf.nets.mmoe`: model.num_experts (default 3) LeNet
                encoders as experts, a softmax gate per task on the image;
  cgc, ple      `mtl_tf.nets.ple`: model.num_shared_experts and
                model.num_task_experts (default 1 each) LeNet encoders per
                level 1; ple adds model.num_levels - 1 (default 1) levels of
                50-unit ReLU MLP experts on the 50-wide representations.

These give each task its own representation, so `mgda_ub` and
`gradient_at="representation"` are refused (use `mgda`, the shared-parameter
variants); see `mtl_tf.balancers.base`. The configs `configs/multi_*.py` write out each paper's
hyperparameters (REFERENCE.md section 4):

  pareto  SGD lr 1e-3, momentum 0.9, lr halved after epochs 15, 30, ..., 90
          (Lin et al.'s official schedule), batch 256, 100 epochs;
  sener   SGD lr 0.05 (the authors' answer for MultiMNIST), momentum 0.9 (the
          official training script builds every SGD optimizer with momentum
          0.9), lr times 0.85 every 10 epochs (the same script), batch 256,
          100 epochs, MGDA normalisation `none`.

Input scale and initialisation follow the official (PyTorch) training codes:

  pareto  `data.pixel_scale="raw"`: pixels fed as floats in 0..255, no mean/std
          (the official Pareto-MTL code feeds its composites unscaled);
          `model.initializer="torch"`: kernels and biases uniform in
          +-1/sqrt(fan_in), PyTorch's default, which its LeNet keeps. On
          multi-fashion this recipe is worth about 3 accuracy points over
          /255 with glorot-uniform kernels and zero biases (REFERENCE.md
          section 3, measured in PyTorch);
  sener   `data.pixel_scale="unit"`: the official loader's normalisation,
          (x / 255 - 0.1307) / 0.3081, the only one this protocol accepts
          (`"raw"` is an error); `model.initializer="torch"` (Sener's code is
          PyTorch and keeps the defaults); `model.dropout="keras"`
          (`"official"` gives the official code's unscaled masks, see
          `mtl_tf.nets.lenet`).

The `smoke` variant (a one-epoch Adam pipeline check) keeps `/255` inputs
and Keras' initialisation, as before these fields existed.

A config without these fields (e.g. the saved config of an older run) gets
`pixel_scale="unit"`, `initializer="keras"` and `dropout="keras"`, the
behaviour before these options existed, so old runs re-evaluate on the inputs
they were trained on.

Config fields read by the builder, once, into `DigitsSettings`: seed
(shuffling), batch_size, data.protocol, data.data_dir / mnist_dir / fashion_dir
/ tfds_data_dir / tfds_download / cache_dir, data.seed (composition; fixed at 0
so every training seed sees the same composites), data.val_fraction,
data.pareto_sizes, data.eval_batch_size, data.max_train_examples,
data.max_eval_examples, data.pixel_scale (`unit` | `raw`), data.drop_remainder
(default False: the last, smaller training batch is kept), model.name,
model.initializer (`keras` | `torch`), model.dropout (`keras` | `official`,
MultiLeNet only), model.num_experts, model.num_shared_experts,
model.num_task_experts, model.num_levels, model.alpha_learning_rate_scale
(architectures only).
"""

from __future__ import annotations

import dataclasses
import re

import keras

from mtl_tf.benchmarks.registry import Benchmark, register
from mtl_tf.config_fields import read
from mtl_tf.data import multi_digits
from mtl_tf.nets import cross_stitch, mmoe, ple
from mtl_tf.nets import experts as experts_lib
from mtl_tf.nets import initializers as init_lib
from mtl_tf.nets import lenet

NAMES = multi_digits.DATASETS
TASKS = multi_digits.TASKS
ARCHITECTURES = ("cross_stitch", "mmoe", "cgc", "ple")
MODELS = ("auto", "multi_lenet", "pareto_lenet", *ARCHITECTURES)
PROTOCOL_MODELS = {"sener": "multi_lenet", "pareto": "pareto_lenet"}


def _pareto_sizes(value) -> tuple[int, ...]:
    return tuple(int(s) for s in value)


@dataclasses.dataclass(frozen=True)
class DigitsSettings:
    """The config fields of a digit benchmark, read and checked once (`from_config`)."""

    name: str
    protocol: str
    model: str  # the net: multi_lenet, pareto_lenet or an architecture (`auto` resolved)
    backbone: str  # the LeNet: the model itself, or the protocol's for an architecture
    initializer: str
    dropout: str
    pixel_scale: str
    drop_remainder: bool  # data.drop_remainder: drop the last, smaller training batch
    batch_size: int
    shuffle_seed: int  # config.seed
    data_seed: int  # data.seed, the composition
    eval_batch_size: int | None
    max_train_examples: int | None
    max_eval_examples: int | None
    data_dir: str | None
    mnist_dir: str | None
    fashion_dir: str | None
    cache_dir: str | None
    tfds_data_dir: str | None
    tfds_download: bool
    val_fraction: float
    pareto_sizes: tuple
    arch_options: dict = dataclasses.field(default_factory=dict)  # the architecture's model.* options

    @classmethod
    def from_config(cls, config) -> DigitsSettings:
        name = read(config, "benchmark")
        protocol = read(config, "data.protocol", "sener")
        if protocol not in multi_digits.PROTOCOLS:
            raise ValueError(f"unknown data.protocol {protocol!r}; expected one of {list(multi_digits.PROTOCOLS)}")
        model = read(config, "model.name", "auto")
        if model not in MODELS:
            raise ValueError(f"unknown model.name {model!r} for benchmark {name!r}; expected one of {list(MODELS)}")
        model = PROTOCOL_MODELS[protocol] if model == "auto" else model
        backbone = PROTOCOL_MODELS[protocol] if model in ARCHITECTURES else model
        # Without these fields (a config saved before they existed): /255 inputs and Keras' defaults.
        initializer = init_lib.check_initializer(read(config, "model.initializer", "keras"), owner="model.initializer")
        dropout = init_lib.check_initializer(read(config, "model.dropout", "keras"), lenet.DROPOUTS, "model.dropout")
        pixel_scale = read(config, "data.pixel_scale", "unit")
        if pixel_scale not in multi_digits.PIXEL_SCALES:
            raise ValueError(f"unknown data.pixel_scale {pixel_scale!r}; expected one of {list(multi_digits.PIXEL_SCALES)}")
        if protocol == "sener" and pixel_scale != "unit":
            raise ValueError(
                f"data.pixel_scale={pixel_scale!r} does not apply to data.protocol='sener', which normalises as its "
                "official loader does (mean 0.1307, std 0.3081); set data.pixel_scale=unit with the sener protocol"
            )
        if backbone != "multi_lenet" and dropout != "keras":
            raise ValueError(
                f"model.dropout={dropout!r} applies to the MultiLeNet only; model.name {model!r} has no dropout "
                "(leave model.dropout='keras')"
            )
        arch_options = {}
        if model in ("mmoe",):
            arch_options["num_experts"] = read(config, "model.num_experts", 3, int)
        if model in ("cgc", "ple"):
            arch_options["num_shared_experts"] = read(config, "model.num_shared_experts", 1, int)
            arch_options["num_task_experts"] = read(config, "model.num_task_experts", 1, int)
        if model == "ple":
            arch_options["num_levels"] = read(config, "model.num_levels", 2, int)
        if model == "cross_stitch":
            arch_options["alpha_learning_rate_scale"] = read(config, "model.alpha_learning_rate_scale", 1.0, float)
        return cls(
            name=name,
            protocol=protocol,
            model=model,
            backbone=backbone,
            arch_options=arch_options,
            initializer=initializer,
            dropout=dropout,
            pixel_scale=pixel_scale,
            drop_remainder=read(config, "data.drop_remainder", False, bool),
            batch_size=read(config, "batch_size", cast=int),
            shuffle_seed=read(config, "seed", cast=int),
            data_seed=read(config, "data.seed", 0, int),
            eval_batch_size=read(config, "data.eval_batch_size", None),
            max_train_examples=read(config, "data.max_train_examples", None),
            max_eval_examples=read(config, "data.max_eval_examples", None),
            data_dir=read(config, "data.data_dir", None),
            mnist_dir=read(config, "data.mnist_dir", None),
            fashion_dir=read(config, "data.fashion_dir", None),
            cache_dir=read(config, "data.cache_dir", None),
            tfds_data_dir=read(config, "data.tfds_data_dir", None),
            tfds_download=read(config, "data.tfds_download", False, bool),
            val_fraction=read(config, "data.val_fraction", multi_digits.DEFAULT_VAL_FRACTION, float),
            pareto_sizes=read(config, "data.pareto_sizes", tuple(multi_digits.PARETO_SIZES), _pareto_sizes),
        )


def _nets(settings: DigitsSettings):
    if settings.model in ARCHITECTURES:
        return _architecture(settings)
    return _lenet_nets(settings)


def _lenet_nets(settings: DigitsSettings):
    """(encoder, {task: head}) of the backbone LeNet."""
    if settings.backbone == "multi_lenet":
        options = {"initializer": settings.initializer, "dropout": settings.dropout}
        return lenet.multi_lenet_encoder(**options), {
            t: lenet.multi_lenet_head(multi_digits.NUM_CLASSES, name=f"head_{t}", **options) for t in TASKS
        }
    return lenet.pareto_lenet_encoder(initializer=settings.initializer), {
        t: lenet.pareto_lenet_head(multi_digits.NUM_CLASSES, name=f"head_{t}", initializer=settings.initializer)
        for t in TASKS
    }


def _architecture(settings: DigitsSettings):
    """A multi-task architecture on the protocol's LeNet: (body returning {task: z_t}, towers)."""
    encoder, heads = _lenet_nets(settings)
    options = settings.arch_options
    if settings.model == "mmoe":
        return mmoe.mmoe(TASKS, expert=encoder, **options), heads
    if settings.model in ("cgc", "ple"):
        levels = options.get("num_levels", 1)
        # Level 1 experts are LeNet encoders; deeper levels mix the 50-wide representations with MLP experts.
        templates = [encoder] + [experts_lib.MLPExpert((encoder.units,)) for _ in range(levels - 1)]
        build = ple.cgc if settings.model == "cgc" else ple.ple
        return build(TASKS, expert=templates, **options), heads
    return cross_stitch.cross_stitch(TASKS, stages=_lenet_stages(settings), **options), heads


def _lenet_stages(settings: DigitsSettings):
    """The backbone LeNet cut after pool1, pool2 and fc (where Misra et al. put units on AlexNet).

    The same layers as `lenet.MultiLeNetEncoder` / `ParetoLeNetEncoder` in the
    same order, as three `keras.Sequential` stages; "torch" gives PyTorch's
    default initialisation (the convolutions' fan-ins are fixed, the dense
    layer reads its own).
    """
    torch = settings.initializer == "torch"

    def conv(filters, kernel, channels_in):
        extra = init_lib.torch_initializers(kernel * kernel * channels_in) if torch else {}
        return keras.layers.Conv2D(filters, kernel, **extra)

    dense = init_lib.TorchDense(50) if torch else keras.layers.Dense(50)
    if settings.backbone == "multi_lenet":
        if settings.dropout == "official":
            drop = lenet.UnscaledDropout(0.5, noise_shape=(1, 1, 1, None))
        else:
            drop = keras.layers.SpatialDropout2D(0.5)
        stage1 = [conv(10, 5, 1), keras.layers.MaxPooling2D(2), keras.layers.ReLU()]
        stage2 = [conv(20, 5, 10), drop, keras.layers.MaxPooling2D(2), keras.layers.ReLU()]
    else:
        stage1 = [conv(10, 9, 1), keras.layers.ReLU(), keras.layers.MaxPooling2D(2)]
        stage2 = [conv(20, 5, 10), keras.layers.ReLU(), keras.layers.MaxPooling2D(2)]
    stage3 = [keras.layers.Flatten(), dense, keras.layers.ReLU()]
    return [keras.Sequential(stage, name=f"stage_{i + 1}") for i, stage in enumerate((stage1, stage2, stage3))]


def check_nets(config) -> None:
    """Constructs `build`'s nets without loading data: a `model.*` option the nets refuse is a ValueError.

    The message names the config field (`config field 'model.num_experts': MMoE: num_experts must be ...`).
    """
    settings = DigitsSettings.from_config(config)
    try:
        _nets(settings)
    except ValueError as error:
        fields = [f"model.{key}" for key in settings.arch_options if re.search(rf"\b{key}\b", str(error))]
        if not fields:
            raise
        raise ValueError(f"config field {fields[0]!r}: {error} (--config.{fields[0]}=...)") from None


@register(*NAMES, check=check_nets)
def build(config) -> Benchmark:
    settings = DigitsSettings.from_config(config)
    datasets = multi_digits.multi_digits_datasets(
        settings.name,
        settings.protocol,
        settings.batch_size,
        eval_batch_size=settings.eval_batch_size,
        seed=settings.data_seed,
        shuffle_seed=settings.shuffle_seed,
        max_train_examples=settings.max_train_examples,
        max_eval_examples=settings.max_eval_examples,
        data_dir=settings.data_dir,
        mnist_dir=settings.mnist_dir,
        fashion_dir=settings.fashion_dir,
        cache_dir=settings.cache_dir,
        val_fraction=settings.val_fraction,
        pareto_sizes=settings.pareto_sizes,
        tfds_data_dir=settings.tfds_data_dir,
        tfds_download=settings.tfds_download,
        pixel_scale=settings.pixel_scale,
        drop_remainder=settings.drop_remainder,
    )
    encoder, heads = _nets(settings)
    return Benchmark(
        name=settings.name,
        train=datasets.train,
        val=datasets.val,
        test=datasets.test,
        encoder=encoder,
        heads=heads,
        losses={t: keras.losses.SparseCategoricalCrossentropy(from_logits=True, name=f"{t}_cross_entropy") for t in TASKS},
        metrics={t: ["accuracy"] for t in TASKS},
        monitor=[f"{t}_accuracy" for t in TASKS],
        monitor_mode="max",
        sizes=dict(datasets.sizes),
        input_shape=tuple(datasets.image_shape),
        pixel_transform=pixel_transform(settings.protocol, settings.pixel_scale),
    )


def pixel_transform(protocol, pixel_scale):
    """(scale, offset) from 8-bit pixels to this protocol's model input (see `Benchmark.pixel_transform`)."""
    if protocol == "sener":
        std = multi_digits.SENER_STD
        return (1.0 / (255.0 * std), -multi_digits.SENER_MEAN / std)
    return (1.0, 0.0) if pixel_scale == "raw" else (1.0 / 255.0, 0.0)
