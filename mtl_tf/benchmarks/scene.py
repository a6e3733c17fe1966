"""Scene-understanding benchmarks: Sener's Cityscapes (3 tasks) and the MTAN SegNet set-ups of Lee & Son.

Registered names:

`cityscapes` -- Sener & Koltun (NeurIPS 2018, section 4.3, Table 4): the
  official Cityscapes layout (`mtl_tf.data.cityscapes`), 256x512 inputs,
  targets at 1/8; a ResNet-50 dilated to output stride 8 shared by three
  pyramid-pooling decoders (`mtl_tf.nets.pspnet`). Tasks and losses:
  `segmentation` (19 classes, cross-entropy over non-void pixels),
  `instance` ((dy, dx) to the instance centroid, L1 over instance pixels),
  `disparity` (L1 over pixels with a measurement). Metrics: `miou`,
  `pixel_accuracy`; `offset_l1`, `offset_mse`; `abs_error` (pixels).
`cityscapes_segnet` -- Lee & Son Table 2 on MTAN's preprocessed Cityscapes
  (`mtl_tf.data.mtan`, 128x256): `segmentation` (7 classes) and `depth`;
  SegNet encoder shared, one SegNet decoder per task (`mtl_tf.nets.segnet`).
  Metrics: `miou`, `pixel_accuracy`; `abs_error`, `rel_error`.
`nyuv2_segnet` -- Lee & Son Table 3 on MTAN's NYUv2 (288x384): 13-class
  `segmentation`, `depth` and `normal` (1 - cosine loss, unit-normalised
  decoder output). Normal metrics: `angle_mean`, `angle_median` (degrees),
  `within_11.25`, `within_22.5`, `within_30` (fractions).

Metric values are fractions (mIoU 0.52 is the papers' 52 %). Invalid targets:
Cityscapes marks them NaN (losses and metrics built with
`invalid_value=None`); MTAN's depth and normals use 0 (the losses'
defaults); void labels are `IGNORE_LABEL` (250) everywhere.

Model selection: the monitor is the mean validation loss of the tasks
(`{task}_loss`, mode "min"); the papers have no validation split (both
report the last epoch on the official val images, which serve as the test
split here), so without `data.val_cities` / `data.val_size` the trainer
keeps the last epoch.

Delta_m. With `evaluation.baseline_results` (one or more single-task
`results.json` files or run directories, e.g. one per task from
`--config.method=single_task`; several runs of one task are averaged) the
benchmark's `evaluate` hook adds `{"multi_task": {"delta_m": ...,
"delta_m_<task>": ...}}` to the test metrics: `mtl_tf.metrics.delta_m`
over :data:`DELTA_M_METRICS` (the metrics of the paper's table), and per task
over that task's metrics. The baseline files are read when the benchmark is
built, so a missing file fails before training.

Config fields read, once, into `CityscapesSettings` / `SegNetSettings` (see
`configs/cityscapes.py`, `configs/cityscapes_segnet.py`, `configs/nyuv2.py`):
`seed`, `batch_size`;
`data.data_dir` (required), `data.eval_batch_size`,
`data.max_train_examples`, `data.max_eval_examples`,
`data.drop_remainder`, `data.image_size`; Cityscapes:
`data.target_size`, `data.normalization`, `data.augment`,
`data.max_rotation_degrees`, `data.flip_probability`,
`data.val_cities`, `data.check_files`; MTAN: `data.label_folder`,
`data.val_size`; `model.encoder_weights`, `model.output_stride`,
`model.batch_norm_momentum`, `model.encoder_blocks`, `model.encoder_width`
(None: ResNet-50; smaller for tests), `model.pool_scales`, `model.decoder_channels`,
`model.dropout_rate` (PSP); `model.filters`, `model.convs_per_block`,
`model.name` (SegNet: `segnet`, the default, or `mtan`, MTAN's attention
network on the same SegNet, `mtl_tf.nets.mtan`); `model.initializer` (encoder and decoders: `torch` or `keras`
for Cityscapes, see `mtl_tf.nets.pspnet`; `mtan`, `torch` or `keras`
for SegNet, see `mtl_tf.nets.segnet`; a config without it gets each net's
behaviour from before the field existed, `keras` and `mtan`);
`evaluation.baseline_results`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mtl_tf import losses as dense_losses
from mtl_tf import metrics as dense_metrics
from mtl_tf.benchmarks.registry import Benchmark, register
from mtl_tf.config_fields import read
from mtl_tf.data import cityscapes as cityscapes_data
from mtl_tf.data import mtan as mtan_data
from mtl_tf.nets import initializers as init_lib
from mtl_tf.nets import mtan, pspnet, segnet

SUMMARY_KEY = "multi_task"

# The metrics of each paper table, which Delta_m averages over.
DELTA_M_METRICS = {
    "cityscapes": {"segmentation": ("miou",), "instance": ("offset_l1",), "disparity": ("abs_error",)},
    "cityscapes_segnet": {"segmentation": ("miou", "pixel_accuracy"), "depth": ("abs_error", "rel_error")},
    "nyuv2_segnet": {
        "segmentation": ("miou", "pixel_accuracy"),
        "depth": ("abs_error", "rel_error"),
        "normal": ("angle_mean", "angle_median", "within_11.25", "within_22.5", "within_30"),
    },
}
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)
# Metric name -> higher is better (the metric classes' `higher_is_better`, by the names used here).
METRIC_DIRECTIONS = {
    "miou": True,
    "pixel_accuracy": True,
    "offset_l1": False,
    "offset_mse": False,
    "abs_error": False,
    "rel_error": False,
    "angle_mean": False,
    "angle_median": False,
    **{f"within_{t:g}": True for t in NORMAL_THRESHOLDS},
}


def _data_dir(config, what):
    data_dir = read(config, "data.data_dir", None)
    if not data_dir:
        raise ValueError(
            f"benchmark {read(config, 'benchmark')!r} needs {what}: set --config.data.data_dir=/path "
            "(or --data_dir=/path with the launch scripts)"
        )
    return data_dir


def _pair(value):
    if isinstance(value, int):
        raise ValueError(f"expected a (height, width) pair, got {value!r}")
    return tuple(int(v) for v in value)


def _ints(value):
    return tuple(int(v) for v in value)


# -- Delta_m ---------------------------------------------------------------------------------


def _results_path(entry) -> Path:
    path = Path(str(entry)).expanduser()
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluation.baseline_results names {entry!r}, but {path} does not exist; expected a "
            "single-task run's results.json (or its run directory)"
        )
    return path


def _baseline_entries(value):
    if value is None or value == "" or value == ():
        return []
    if isinstance(value, (str, Path)):
        return [v.strip() for v in str(value).split(",") if v.strip()]
    return [str(v) for v in value]


def load_baseline(entries) -> dict:
    """{task: {metric: value}} from single-task `results.json` files (runs of one task averaged).

    Raises:
      FileNotFoundError / ValueError naming the file that is missing or has no `tasks`.
    """
    collected: dict[str, dict[str, list[float]]] = {}
    for entry in _baseline_entries(entries):
        path = _results_path(entry)
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        tasks = results.get("tasks") if isinstance(results, dict) else None
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError(f"{path}: no 'tasks' dict {{task: {{metric: value}}}}; is it a results.json of launch/train.py?")
        for task, metrics in tasks.items():
            if task == SUMMARY_KEY or not isinstance(metrics, dict):
                continue
            for metric, value in metrics.items():
                collected.setdefault(task, {}).setdefault(metric, []).append(float(value))
    return {t: {m: float(np.mean(v)) for m, v in ms.items()} for t, ms in collected.items()}


def delta_m_summary(tasks: dict, baseline: dict, selected: dict, directions=None) -> dict:
    """`{"delta_m": overall, "delta_m_<task>": per task}` over the `selected` metrics of `tasks`.

    `directions`: metric name -> higher is better (default :data:`METRIC_DIRECTIONS`).

    Raises:
      ValueError naming a task or metric the baseline lacks.
    """
    directions = METRIC_DIRECTIONS if directions is None else directions
    results, base, higher = {}, {}, {}
    per_task = {}
    for task, names in selected.items():
        if task not in tasks:
            continue
        if task not in baseline:
            raise ValueError(
                f"Delta_m: the baseline has no task {task!r} (it has {sorted(baseline)}); pass a "
                "single-task results.json for every task in evaluation.baseline_results"
            )
        task_results, task_base, task_higher = {}, {}, {}
        for name in names:
            if name not in baseline[task]:
                raise ValueError(
                    f"Delta_m: the baseline of task {task!r} has no metric {name!r} "
                    f"(it has {sorted(baseline[task])})"
                )
            key = f"{task}/{name}"
            task_results[key] = tasks[task][name]
            task_base[key] = baseline[task][name]
            task_higher[key] = directions[name]
        per_task[task] = dense_metrics.delta_m(task_results, task_base, task_higher)
        results.update(task_results)
        base.update(task_base)
        higher.update(task_higher)
    if not results:
        raise ValueError(f"Delta_m: no task of {sorted(tasks)} has metrics to compare")
    summary = {"delta_m": dense_metrics.delta_m(results, base, higher)}
    summary.update({f"delta_m_{t}": v for t, v in per_task.items()})
    return summary


def _group_logs(logs: dict, task_names) -> dict:
    grouped = {t: {} for t in task_names}
    for key, value in logs.items():
        matches = [t for t in task_names if key.startswith(f"{t}_")]
        if matches:
            task = max(matches, key=len)
            grouped[task][key[len(task) + 1:]] = float(np.asarray(value))
    return grouped


def make_evaluate(name: str, baseline_entries):
    """The `Benchmark.evaluate` hook: test metrics plus Delta_m, or None without a baseline."""
    baseline = load_baseline(baseline_entries)
    if not baseline:
        return None
    selected = DELTA_M_METRICS[name]

    def evaluate(model, dataset):
        logs = model.evaluate(dataset, return_dict=True, verbose=0)
        tasks = _group_logs(logs, model.task_names)
        tasks[SUMMARY_KEY] = delta_m_summary(tasks, baseline, selected)
        return tasks

    return evaluate


# -- Cityscapes (Sener) --------------------------------------------------------------------


def _cityscapes_parts(num_classes, ignore):
    """Losses and metrics of Sener's three tasks (NaN marks invalid regression targets)."""
    losses = {
        "segmentation": dense_losses.MaskedSparseCategoricalCrossentropy(ignore_class=ignore, name="segmentation_ce"),
        "instance": dense_losses.MaskedL1(invalid_value=None, name="instance_l1"),
        "disparity": dense_losses.MaskedL1(invalid_value=None, name="disparity_l1"),
    }
    metrics = {
        "segmentation": [
            dense_metrics.MeanIoU(num_classes, ignore_class=ignore, name="miou"),
            dense_metrics.PixelAccuracy(num_classes, ignore_class=ignore, name="pixel_accuracy"),
        ],
        "instance": [
            dense_metrics.OffsetError("l1", invalid_value=None, name="offset_l1"),
            dense_metrics.OffsetError("mse", invalid_value=None, name="offset_mse"),
        ],
        "disparity": [dense_metrics.DepthAbsoluteError(invalid_value=None, name="abs_error")],
    }
    return losses, metrics


@dataclasses.dataclass(frozen=True)
class CityscapesSettings:
    """The config fields of the `cityscapes` benchmark, read and checked once (`from_config`)."""

    seed: int
    batch_size: int
    data_dir: str
    image_size: tuple
    target_size: tuple
    eval_batch_size: int | None
    normalization: str
    augment: bool
    max_rotation_degrees: float
    flip_probability: float
    val_cities: tuple
    max_train_examples: int | None
    max_eval_examples: int | None
    drop_remainder: bool
    check_files: bool
    encoder: dict  # the options of `pspnet.dilated_resnet50_encoder`
    decoder: dict  # the options of `pspnet.pyramid_pooling_decoder`
    baseline_results: object

    @classmethod
    def from_config(cls, config) -> CityscapesSettings:
        image_size = read(config, "data.image_size", tuple(cityscapes_data.DEFAULT_IMAGE_SIZE), _pair)
        output_stride = read(config, "model.output_stride", cityscapes_data.OUTPUT_STRIDE, int)
        expected = cityscapes_data.default_target_size(image_size, output_stride)
        target_size = read(config, "data.target_size", expected, _pair)
        if tuple(target_size) != tuple(expected):
            raise ValueError(
                f"data.target_size={target_size} but the dilated ResNet-50 at output stride {output_stride} predicts "
                f"{expected} for {image_size} inputs; leave data.target_size unset"
            )
        data_dir = _data_dir(config, "the Cityscapes root (leftImg8bit/, gtFine/, disparity/)")
        initializer = init_lib.check_initializer(read(config, "model.initializer", "keras"), owner="model.initializer")
        encoder = {
            "output_stride": output_stride,
            "weights_path": read(config, "model.encoder_weights", None),
            "initializer": initializer,
        }
        # Unset fields keep the net's defaults (ResNet-50 itself, keras.applications' batch norm).
        for field, option, cast in (
            ("encoder_blocks", "blocks", _ints),
            ("encoder_width", "width", int),
            ("batch_norm_momentum", "batch_norm_momentum", float),
        ):
            value = read(config, f"model.{field}", None, cast)
            if value is not None:
                encoder[option] = value
        decoder = {
            "pool_scales": read(config, "model.pool_scales", tuple(pspnet.PSP_POOL_SCALES), _ints),
            "channels": read(config, "model.decoder_channels", 512, int),
            "dropout_rate": read(config, "model.dropout_rate", 0.1, float),
            "initializer": initializer,
        }
        return cls(
            seed=read(config, "seed", cast=int),
            batch_size=read(config, "batch_size", cast=int),
            data_dir=data_dir,
            image_size=image_size,
            target_size=tuple(target_size),
            eval_batch_size=read(config, "data.eval_batch_size", None, int),
            normalization=read(config, "data.normalization", "sener"),
            augment=read(config, "data.augment", True, bool),
            max_rotation_degrees=read(config, "data.max_rotation_degrees", 10.0, float),
            flip_probability=read(config, "data.flip_probability", 0.5, float),
            val_cities=read(config, "data.val_cities", (), tuple),
            max_train_examples=read(config, "data.max_train_examples", None, int),
            max_eval_examples=read(config, "data.max_eval_examples", None, int),
            drop_remainder=read(config, "data.drop_remainder", False, bool),
            check_files=read(config, "data.check_files", True, bool),
            encoder=encoder,
            decoder=decoder,
            baseline_results=read(config, "evaluation.baseline_results", None),
        )


@register("cityscapes")
def build_cityscapes(config) -> Benchmark:
    settings = CityscapesSettings.from_config(config)
    data = cityscapes_data.cityscapes_datasets(
        settings.data_dir,
        batch_size=settings.batch_size,
        eval_batch_size=settings.eval_batch_size,
        image_size=settings.image_size,
        target_size=settings.target_size,
        normalization=settings.normalization,
        augment=settings.augment,
        max_rotation_degrees=settings.max_rotation_degrees,
        flip_probability=settings.flip_probability,
        seed=settings.seed,
        val_cities=settings.val_cities,
        max_train_examples=settings.max_train_examples,
        max_eval_examples=settings.max_eval_examples,
        drop_remainder=settings.drop_remainder,
        check_files=settings.check_files,
    )
    encoder = pspnet.dilated_resnet50_encoder(**settings.encoder)
    outputs = {"segmentation": cityscapes_data.NUM_CLASSES, "instance": 2, "disparity": 1}
    heads = {
        task: pspnet.pyramid_pooling_decoder(n, seed=settings.seed + 1000 + i, name=f"{task}_decoder",
                                             **settings.decoder)
        for i, (task, n) in enumerate(outputs.items())
    }
    losses, metrics = _cityscapes_parts(cityscapes_data.NUM_CLASSES, cityscapes_data.IGNORE_LABEL)
    return _dense_benchmark("cityscapes", settings.baseline_results, data, encoder, heads, losses, metrics)


# -- MTAN set-ups with SegNet (Lee & Son) ------------------------------------------------------


def _segnet_parts(spec, ignore):
    losses = {
        "segmentation": dense_losses.MaskedSparseCategoricalCrossentropy(ignore_class=ignore, name="segmentation_ce"),
        "depth": dense_losses.MaskedL1(invalid_value=dense_losses.INVALID_DEPTH, name="depth_l1"),
    }
    metrics = {
        "segmentation": [
            dense_metrics.MeanIoU(spec.num_classes, ignore_class=ignore, name="miou"),
            dense_metrics.PixelAccuracy(spec.num_classes, ignore_class=ignore, name="pixel_accuracy"),
        ],
        "depth": [
            dense_metrics.DepthAbsoluteError(invalid_value=dense_losses.INVALID_DEPTH, name="abs_error"),
            dense_metrics.DepthRelativeError(invalid_value=dense_losses.INVALID_DEPTH, name="rel_error"),
        ],
    }
    if "normal" in spec.tasks:
        losses["normal"] = dense_losses.NormalCosineLoss(invalid_value=dense_losses.INVALID_NORMAL, name="normal_cosine")
        metrics["normal"] = [
            dense_metrics.NormalAngleMean(invalid_value=dense_losses.INVALID_NORMAL, name="angle_mean"),
            dense_metrics.NormalAngleMedian(invalid_value=dense_losses.INVALID_NORMAL, name="angle_median"),
            *(
                dense_metrics.NormalAngleWithin(t, invalid_value=dense_losses.INVALID_NORMAL, name=f"within_{t:g}")
                for t in NORMAL_THRESHOLDS
            ),
        ]
    return losses, metrics


@dataclasses.dataclass(frozen=True)
class SegNetSettings:
    """The config fields of a SegNet set-up (`cityscapes_segnet`, `nyuv2_segnet`), read and checked once."""

    seed: int
    batch_size: int
    data_dir: str
    image_size: tuple
    eval_batch_size: int | None
    label_folder: str | None
    val_size: int
    max_train_examples: int | None
    max_eval_examples: int | None
    drop_remainder: bool
    structure: dict  # filters, convs_per_block, initializer: the encoder's and every decoder's
    baseline_results: object
    model: str = "segnet"  # model.name: segnet (shared encoder, a decoder per task) or mtan

    @classmethod
    def from_config(cls, config, dataset: str) -> SegNetSettings:
        spec = mtan_data.SPECS[dataset]
        folders = "image,label,depth" + (",normal" if "normal" in spec.tasks else "")
        return cls(
            seed=read(config, "seed", cast=int),
            batch_size=read(config, "batch_size", cast=int),
            data_dir=_data_dir(config, f"MTAN's preprocessed {dataset} ({{train,val}}/{{{folders}}}/i.npy)"),
            image_size=read(config, "data.image_size", tuple(spec.image_size), _pair),
            eval_batch_size=read(config, "data.eval_batch_size", None, int),
            label_folder=read(config, "data.label_folder", None),
            val_size=read(config, "data.val_size", 0, int),
            max_train_examples=read(config, "data.max_train_examples", None, int),
            max_eval_examples=read(config, "data.max_eval_examples", None, int),
            drop_remainder=read(config, "data.drop_remainder", False, bool),
            structure={
                "filters": read(config, "model.filters", tuple(segnet.SEGNET_FILTERS), _ints),
                "convs_per_block": read(config, "model.convs_per_block", tuple(segnet.SEGNET_CONVS_PER_BLOCK), _ints),
                "initializer": init_lib.check_initializer(
                    read(config, "model.initializer", "mtan"), segnet.INITIALIZERS, "model.initializer"
                ),
            },
            baseline_results=read(config, "evaluation.baseline_results", None),
            model=_segnet_model(read(config, "model.name", "segnet")),
        )


SEGNET_MODELS = ("segnet", "mtan")


def _segnet_model(name):
    if name not in SEGNET_MODELS:
        raise ValueError(f"unknown model.name {name!r} for a SegNet set-up; expected one of {list(SEGNET_MODELS)}")
    return name


def _build_segnet(config, name: str, dataset: str) -> Benchmark:
    settings = SegNetSettings.from_config(config, dataset)
    spec = mtan_data.SPECS[dataset]
    seed = settings.seed
    data = mtan_data.mtan_datasets(
        settings.data_dir,
        dataset,
        settings.batch_size,
        eval_batch_size=settings.eval_batch_size,
        label_folder=settings.label_folder,
        image_size=settings.image_size,
        seed=seed,
        val_size=settings.val_size,
        max_train_examples=settings.max_train_examples,
        max_eval_examples=settings.max_eval_examples,
        drop_remainder=settings.drop_remainder,
    )
    outputs = {"segmentation": (spec.num_classes, "linear"), "depth": (1, "linear"), "normal": (3, "l2_normalize")}
    if settings.model == "mtan":
        # MTAN (mtl_tf.nets.mtan): the shared SegNet gives its maps; each task's attention branch is its head.
        make_encoder, make_head, suffix = mtan.mtan_backbone, mtan.mtan_head, "mtan"
    else:
        make_encoder, make_head, suffix = segnet.segnet_encoder, segnet.segnet_decoder, "decoder"
    encoder = make_encoder(seed=seed, **settings.structure)
    heads = {
        task: make_head(
            outputs[task][0], outputs[task][1], seed=seed + 1000 * (i + 1), name=f"{task}_{suffix}", **settings.structure
        )
        for i, task in enumerate(spec.tasks)
    }
    losses, metrics = _segnet_parts(spec, dense_losses.IGNORE_LABEL)
    return _dense_benchmark(name, settings.baseline_results, data, encoder, heads, losses, metrics)


@register("cityscapes_segnet")
def build_cityscapes_segnet(config) -> Benchmark:
    return _build_segnet(config, "cityscapes_segnet", "cityscapes")


@register("nyuv2_segnet")
def build_nyuv2_segnet(config) -> Benchmark:
    return _build_segnet(config, "nyuv2_segnet", "nyuv2")


__all__ = [
    "DELTA_M_METRICS",
    "METRIC_DIRECTIONS",
    "SUMMARY_KEY",
    "build_cityscapes",
    "build_cityscapes_segnet",
    "build_nyuv2_segnet",
    "delta_m_summary",
    "load_baseline",
    "make_evaluate",
]


def _dense_benchmark(name, baseline_results, data, encoder, heads, losses, metrics) -> Benchmark:
    """The `Benchmark` of a dense set-up: the best epoch has the lowest mean validation task loss."""
    return Benchmark(
        name=name,
        train=data.train,
        val=data.val,
        test=data.test,
        encoder=encoder,
        heads=heads,
        losses=losses,
        metrics=metrics,
        monitor=[f"{t}_loss" for t in heads],
        monitor_mode="min",
        sizes=dict(data.sizes),
        input_shape=data.image_shape,
        evaluate=make_evaluate(name, baseline_results),
    )
