"""Cityscapes with three tasks (Sener & Koltun, NeurIPS 2018, section 4.3) as `tf.data` pipelines.

Sener & Koltun train one network on semantic segmentation, instance
segmentation (as Kendall et al. 2018's proxy: for every pixel of an object
instance, the vector to the instance's centroid) and monocular disparity, on
the fine annotations of Cityscapes (Cordts et al., CVPR 2016).

Every example is `(image float32 [H, W, 3], targets)` with `[H, W] =
image_size` (Sener: 256x512) and `targets` a dict over :data:`TASKS`, all at
`target_size` (Sener: the input size / 8, i.e. 32x64, the output size of the
dilated ResNet-50 at output stride 8):

* `"segmentation"`: int32 `[h, w]`, the 19 train ids of
  :data:`CITYSCAPES_LABELS`; every other label id is `IGNORE_LABEL` (250,
  the void value of Sener's code).
* `"instance"`: float32 `[h, w, 2]`, `(dy, dx)` = the instance centroid
  minus the pixel, in pixels of the source image (1024x2048 for the official
  data); NaN on pixels without an instance.
* `"disparity"`: float32 `[h, w, 1]`, the official conversion
  `d = (p - 1) / 256` of the 16-bit PNG value `p > 0` (pixels of the
  source image); NaN where `p == 0` (no measurement).

Invalid pixels are NaN rather than a sentinel value because both a zero
disparity (`p == 1`) and any offset are legitimate targets; the losses and
metrics of :mod:`mtl_tf.losses` / :mod:`mtl_tf.metrics` treat NaN targets as
invalid when built with `invalid_value=None` (the Cityscapes benchmark does
so). :func:`decode_example` gives the same targets with explicit boolean masks.

Official layout under `root` (`{split}` one of train, val, test)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png    8-bit grey
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png 16-bit grey
    disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png       16-bit grey

Index checks (before any training, in Python): every image needs its three
partner files, every labelIds file its image, and the four PNGs of an
example must share one width and height and have the bit depth above (read
from their PNG headers, so it is cheap). Each failure raises
:class:`CityscapesFormatError` (a `FileNotFoundError` subclass for missing
files) naming the file, what was found and what was expected.

Targets (computed at the source resolution, after augmentation, as Sener's
code does, then sampled at `target_size`):

* train ids: the official labelId -> trainId table (:data:`CITYSCAPES_LABELS`,
  from the Cityscapes scripts' `labels.py`; 255 there is 250 here);
* instances: pixels whose instanceIds value is >= 1000 (`id // 1000` is the
  label id, `id % 1000` the instance number) and whose train id is not
  ignored -- so crowd regions (ids < 1000) and the ignored thing classes
  caravan and trailer have no instance target, as in Sener's code. The
  centroid is the mean row / column of the instance's pixels, accumulated in
  float64 (in float32 the mean column of a full 1024x2048 image comes out
  1023.004 instead of 1023.5).
  Sener's code stores `pixel - centroid`; we store `centroid - pixel`
  (the vector *to* the centroid, Kendall's convention). L1 and MSE errors are
  the same for either sign.

Resizing: the image with bilinear interpolation and antialiasing (what
`scipy.misc.imresize`, i.e. PIL, did in Sener's code); targets with nearest
neighbour (target pixel `i` takes source pixel `floor((i + 0.5) * H / h)`,
also PIL's rule), so offsets and disparities keep their source-pixel units.

Augmentation (training split only, `augment=True`), as Sener's
configuration: a rotation by an angle drawn uniformly from
`[-max_rotation_degrees, max_rotation_degrees]` (10 degrees; positive is
counter-clockwise on screen) about the image centre -- the image bilinear
with black fill, the maps nearest with fill "ignore" / "no instance" / "no
disparity" -- then a horizontal flip with probability `flip_probability`
(0.5). Both act on the label maps before the offsets are computed, so a
flipped example's x offsets are the mirrored, negated ones. The random
numbers come from a `tf.data.Dataset.random(seed)` stream zipped with the
(seeded, reshuffled every epoch) file order and fed to stateless ops, so a
seed fixes every epoch's augmentation, whatever the number of parallel calls.

Image normalisation (`normalization`):

* `"sener"` (default): the official loader's transform: RGB -> BGR, subtract
  :data:`SENER_MEAN` (ImageNet's RGB mean, subtracted from the BGR channels
  as the official code does), then -- because `scipy.misc.imresize`
  byte-scales a float image -- min-max scale each image to [0, 1] over all its
  pixels and channels. We resize first and scale in float (the official code
  scaled before resizing and rounded to uint8): a difference below 1/255 per
  pixel except where antialiasing moves the extremes.
* `"caffe"`: `keras.applications.resnet50.preprocess_input` (BGR, the
  ImageNet mean subtracted, no scaling): use it with ImageNet weights from
  `keras.applications`.
* `"unit"`: RGB scaled to [0, 1].

Splits: `train` (2,975 images), `val` (500) and `test` (1,525, whose
official labels are dummies). Sener trains on `train` and reports `val`;
:func:`cityscapes_datasets` therefore returns the official `val` split as
`test` and, for model selection, an optional validation split made of
whole training cities (`val_cities`), so no sequence is split across the two.

Deviations from Sener's code: (1) its disparity target is not in pixels: it
standardises the raw PNG values with a per-pixel mean map (`depth_mean.npy`,
not distributed) and a standard deviation of 2729.07; we keep the official
conversion to pixels, the unit of Sener's Table 4. (2) Its training set
includes every training city (no validation split); ours too unless
`val_cities` is given. Decoding and augmenting run at the source resolution
in the input pipeline (about 16x the pixels of the network input), as in
Sener's code; nothing is cached, so every epoch draws fresh augmentations.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

# The file index: its public names are this module's too.
from mtl_tf.data._cityscapes_files import (  # noqa: F401
    DISPARITY_SUFFIX, IMAGE_SUFFIX, INSTANCE_SUFFIX, LABEL_SUFFIX, SPLITS, CityscapesFiles, CityscapesFormatError,
    CityscapesMissingFileError, find_cityscapes_files, png_header,
)
from mtl_tf.data._cityscapes_files import ROLES as _ROLES
from mtl_tf.losses import IGNORE_LABEL

__all__ = [
    "CAFFE_BGR_MEAN",
    "CITYSCAPES_LABELS",
    "CLASS_NAMES",
    "CityscapesDatasets",
    "CityscapesFiles",
    "CityscapesFormatError",
    "CityscapesLabel",
    "CityscapesMissingFileError",
    "DEFAULT_IMAGE_SIZE",
    "IGNORE_LABEL",
    "NORMALIZATIONS",
    "NUM_CLASSES",
    "OUTPUT_STRIDE",
    "SENER_MEAN",
    "SPLITS",
    "TASKS",
    "cityscapes_datasets",
    "decode_example",
    "default_target_size",
    "disparity_from_png",
    "find_cityscapes_files",
    "instance_offsets",
    "label_ids_to_train_ids",
    "load_cityscapes",
    "normalize_image",
    "png_header",
    "rotate_maps",
]

TASKS: tuple[str, str, str] = ("segmentation", "instance", "disparity")
NUM_CLASSES = 19
DEFAULT_IMAGE_SIZE = (256, 512)
OUTPUT_STRIDE = 8
NORMALIZATIONS: tuple[str, ...] = ("sener", "caffe", "unit")
# The official loader subtracts this from the BGR-ordered image (it is ImageNet's RGB mean).
SENER_MEAN = (123.675, 116.28, 103.53)
# keras.applications' "caffe" mode (ResNet-50 ImageNet weights), BGR order.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
INSTANCE_ID_BASE = 1000  # instanceIds: label_id * 1000 + instance number for single objects.
DISPARITY_SCALE = 256.0


@dataclasses.dataclass(frozen=True)
class CityscapesLabel:
    """One row of the official label table (cityscapesScripts `helpers/labels.py`)."""

    name: str
    label_id: int
    train_id: int  # 255: not a training class (IGNORE_LABEL here)
    has_instances: bool


# The official table: name, id, trainId, hasInstances ("license plate", id -1,
# never occurs in the labelIds PNGs and is left out).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in (
        ("unlabeled", 0, 255, False),
        ("ego vehicle", 1, 255, False),
        ("rectification border", 2, 255, False),
        ("out of roi", 3, 255, False),
        ("static", 4, 255, False),
        ("dynamic", 5, 255, False),
        ("ground", 6, 255, False),
        ("road", 7, 0, False),
        ("sidewalk", 8, 1, False),
        ("parking", 9, 255, False),
        ("rail track", 10, 255, False),
        ("building", 11, 2, False),
        ("wall", 12, 3, False),
        ("fence", 13, 4, False),
        ("guard rail", 14, 255, False),
        ("bridge", 15, 255, False),
        ("tunnel", 16, 255, False),
        ("pole", 17, 5, False),
        ("polegroup", 18, 255, False),
        ("traffic light", 19, 6, False),
        ("traffic sign", 20, 7, False),
        ("vegetation", 21, 8, False),
        ("terrain", 22, 9, False),
        ("sky", 23, 10, False),
        ("person", 24, 11, True),
        ("rider", 25, 12, True),
        ("car", 26, 13, True),
        ("truck", 27, 14, True),
        ("bus", 28, 15, True),
        ("caravan", 29, 255, True),
        ("trailer", 30, 255, True),
        ("train", 31, 16, True),
        ("motorcycle", 32, 17, True),
        ("bicycle", 33, 18, True),
    )
)
CLASS_NAMES: tuple[str, ...] = tuple(
    label.name for label in sorted(
        (lab for lab in CITYSCAPES_LABELS if lab.train_id != 255), key=lambda lab: lab.train_id
    )
)


def _train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_LABEL, np.int32)
    for label in CITYSCAPES_LABELS:
        if label.train_id != 255:
            table[label.label_id] = label.train_id
    return table


_TRAIN_ID_TABLE = _train_id_table()


# --------------------------------------------------------------------------
# Targets (pure TensorFlow, one example).


def label_ids_to_train_ids(label_ids):
    """int32 train ids of a labelIds map (any shape); non-training ids give `IGNORE_LABEL`."""
    return tf.gather(tf.constant(_TRAIN_ID_TABLE), tf.cast(label_ids, tf.int32))


def instance_offsets(instance_ids, train_ids):
    """Per-pixel vector to the instance centroid.

    Args:
      instance_ids: int `[H, W]` instanceIds map.
      train_ids: int `[H, W]` train ids of the same pixels.

    Returns:
      `(offsets float32 [H, W, 2], mask bool [H, W])`: `(dy, dx)` =
      centroid - pixel on instance pixels (ids >= 1000 with a train id that is
      not ignored), NaN elsewhere; the mask marks the instance pixels.
    """
    instance_ids = tf.cast(instance_ids, tf.int32)
    shape = tf.shape(instance_ids)
    mask = tf.logical_and(instance_ids >= INSTANCE_ID_BASE, tf.not_equal(train_ids, IGNORE_LABEL))
    # All non-instance pixels share segment -1, whose mean is never used.
    flat_ids = tf.reshape(tf.where(mask, instance_ids, -1), [-1])
    _, segment = tf.unique(flat_ids)
    num_segments = tf.reduce_max(segment) + 1
    rows, cols = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    coords = tf.cast(tf.stack([tf.reshape(rows, [-1]), tf.reshape(cols, [-1])], axis=-1), tf.float64)
    centroids = tf.math.unsorted_segment_mean(coords, segment, num_segments)
    offsets = tf.cast(tf.gather(centroids, segment) - coords, tf.float32)
    offsets = tf.reshape(offsets, tf.concat([shape, [2]], axis=0))
    offsets = tf.where(mask[..., None], offsets, tf.fill(tf.shape(offsets), math.nan))
    return offsets, mask


def disparity_from_png(raw):
    """`(disparity float32, valid bool)` from 16-bit PNG values: `(p - 1) / 256` for `p > 0`, NaN where 0."""
    raw = tf.cast(raw, tf.float32)
    valid = raw > 0
    disparity = tf.where(valid, (raw - 1.0) / DISPARITY_SCALE, tf.fill(tf.shape(raw), math.nan))
    return disparity, valid


def rotate_maps(image, maps, angle):
    """Rotates an image (bilinear, black fill) and label maps (nearest) about the image centre.

    Args:
      image: float32 `[H, W, C]`.
      maps: float32 `[H, W, K]` maps whose out-of-image pixels become 0.
      angle: radians, counter-clockwise on screen.

    Returns:
      `(image, maps, inside)`: the rotated tensors and a bool `[H, W]`
      mask of the output pixels that come from inside the source image.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples the input at R(-angle) about the centre (y points down).
    transform = tf.stack([
        cos, -sin, cx - cos * cx + sin * cy,
        sin, cos, cy - sin * cx - cos * cy,
        0.0, 0.0,
    ])[None]

    def warp(x, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=tf.stack([height, width]),
            fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT",
        )[0]

    ones = tf.ones_like(maps[..., :1])
    warped = warp(tf.concat([maps, ones], axis=-1), "NEAREST")
    return warp(image, "BILINEAR"), warped[..., :-1], warped[..., -1] > 0.5


def _read_png(path, dtype, channels):
    return tf.io.decode_png(tf.io.read_file(path), channels=channels, dtype=dtype)


def decode_example(paths, *, augment=False, seed=None, max_rotation_degrees=10.0, flip_probability=0.5):
    """Decodes one example at the source resolution, augments it and computes its targets.

    Args:
      paths: dict with string tensors `image`, `label_ids`, `instance_ids`, `disparity`.
      augment: rotate and flip (see the module doc).
      seed: int `[2]` seed of the stateless random ops (required when `augment`).

    Returns:
      dict: `image` float32 `[H, W, 3]` (RGB, 0..255), `segmentation`
      int32 `[H, W]`, `instance` float32 `[H, W, 2]`, `instance_mask`
      bool `[H, W]`, `disparity` float32 `[H, W, 1]`, `disparity_mask`
      bool `[H, W]`.
    """
    image = tf.cast(_read_png(paths["image"], tf.uint8, 3), tf.float32)
    train_ids = label_ids_to_train_ids(_read_png(paths["label_ids"], tf.uint8, 1)[..., 0])
    instance_ids = tf.cast(_read_png(paths["instance_ids"], tf.uint16, 1)[..., 0], tf.int32)
    raw_disparity = tf.cast(_read_png(paths["disparity"], tf.uint16, 1)[..., 0], tf.int32)
    if augment:
        if seed is None:
            raise ValueError("augment=True needs a seed")
        uniform = tf.random.stateless_uniform([2], seed=seed)
        angle = (2.0 * uniform[0] - 1.0) * (max_rotation_degrees * math.pi / 180.0)
        maps = tf.cast(tf.stack([train_ids, instance_ids, raw_disparity], axis=-1), tf.float32)
        image, maps, inside = rotate_maps(image, maps, angle)
        maps = tf.cast(tf.round(maps), tf.int32)
        train_ids = tf.where(inside, maps[..., 0], IGNORE_LABEL)
        instance_ids, raw_disparity = maps[..., 1], maps[..., 2]
        flip = uniform[1] < flip_probability
        image, train_ids, instance_ids, raw_disparity = (
            tf.cond(flip, lambda x=x: tf.reverse(x, axis=[1]), lambda x=x: x)
            for x in (image, train_ids, instance_ids, raw_disparity)
        )
    offsets, instance_mask = instance_offsets(instance_ids, train_ids)
    disparity, disparity_mask = disparity_from_png(raw_disparity)
    return {
        "image": image,
        "segmentation": train_ids,
        "instance": offsets,
        "instance_mask": instance_mask,
        "disparity": disparity[..., None],
        "disparity_mask": disparity_mask,
    }


def normalize_image(image, normalization: str):
    """float32 RGB 0..255 `[..., 3]` -> the network input (see the module doc)."""
    if normalization == "sener":
        shifted = image[..., ::-1] - tf.constant(SENER_MEAN, tf.float32)
        axes = [-3, -2, -1]
        low = tf.reduce_min(shifted, axis=axes, keepdims=True)
        high = tf.reduce_max(shifted, axis=axes, keepdims=True)
        return tf.math.divide_no_nan(shifted - low, high - low)
    if normalization == "caffe":
        return image[..., ::-1] - tf.constant(CAFFE_BGR_MEAN, tf.float32)
    if normalization == "unit":
        return image / 255.0
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")


def _resize_nearest(x, size):
    """Nearest neighbour at pixel centres (source `floor((i + 0.5) * H / h)`, PIL's rule)."""
    squeeze = x.shape.rank == 2
    if squeeze:
        x = x[..., None]
    out = tf.image.resize(x, size, method="nearest")
    return out[..., 0] if squeeze else out


def default_target_size(image_size, output_stride: int = OUTPUT_STRIDE) -> tuple[int, int]:
    """The output size of a network of that stride: `ceil(size / stride)` (32x64 for 256x512)."""
    return tuple(int(math.ceil(s / output_stride)) for s in image_size)


# --------------------------------------------------------------------------
# Data sets.


def _check_size(name, size):
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (height, width) with positive sizes, got {size}")
    return size


def _example_fn(image_size, target_size, normalization, augment, max_rotation_degrees, flip_probability):
    def fn(paths, seed=None):
        example = decode_example(
            paths, augment=augment, seed=seed,
            max_rotation_degrees=max_rotation_degrees, flip_probability=flip_probability,
        )
        image = tf.image.resize(example["image"], image_size, method="bilinear", antialias=True)
        image = normalize_image(tf.clip_by_value(image, 0.0, 255.0), normalization)
        image.set_shape([*image_size, 3])
        targets = {task: _resize_nearest(example[task], target_size) for task in TASKS}
        targets["segmentation"].set_shape(target_size)
        targets["instance"].set_shape([*target_size, 2])
        targets["disparity"].set_shape([*target_size, 1])
        return image, targets

    return fn


def load_cityscapes(
    root,
    split: str = "train",
    *,
    image_size=DEFAULT_IMAGE_SIZE,
    target_size=None,
    normalization: str = "sener",
    augment: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    max_rotation_degrees: float = 10.0,
    flip_probability: float = 0.5,
    cities=None,
    exclude_cities=(),
    max_examples: int | None = None,
    check_files: bool = True,
):
    """One split as an unbatched `tf.data.Dataset` of `(image, {task: target})`.

    Args:
      root: the Cityscapes root (official layout, see the module doc).
      split: "train", "val" or "test".
      image_size: network input `(height, width)` (Sener: 256x512).
      target_size: target `(height, width)`; None: `ceil(image_size / 8)`.
      normalization: "sener", "caffe" or "unit".
      augment: random rotation and flip (training).
      shuffle: reshuffle the file order every epoch (training).
      seed: fixes the file order and the augmentation of every epoch.
      cities / exclude_cities: city filters.
      max_examples: keep the first examples (in sorted order) only.
      check_files: check PNG headers (size, bit depth) when indexing.

    Returns:
      `(dataset, number_of_examples)`.
    """
    image_size = _check_size("image_size", image_size)
    target_size = default_target_size(image_size) if target_size is None else _check_size("target_size", target_size)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
    if not 0.0 <= float(flip_probability) <= 1.0:
        raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
    if float(max_rotation_degrees) < 0:
        raise ValueError(f"max_rotation_degrees must be non-negative, got {max_rotation_degrees}")
    files = find_cityscapes_files(root, split, cities=cities, exclude_cities=exclude_cities, check=check_files)
    if max_examples is not None:
        files = files[: int(max_examples)]
    n = len(files)
    paths = {role: [getattr(f, role) for f in files] for role in _ROLES}
    ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    fn = _example_fn(image_size, target_size, normalization, augment, float(max_rotation_degrees), float(flip_probability))
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds, n


CityscapesDatasets = collections.namedtuple(
    "CityscapesDatasets", ["train", "val", "test", "sizes", "image_shape", "target_size"]
)
CityscapesDatasets.__doc__ = (
    "Batched train / val (None without val_cities) / test (official val) datasets, their sizes, "
    "the input shape and the target size."
)


def cityscapes_datasets(
    root,
    batch_size: int = 8,
    *,
    eval_batch_size: int | None = None,
    image_size=DEFAULT_IMAGE_SIZE,
    target_size=None,
    normalization: str = "sener",
    augment: bool = True,
    max_rotation_degrees: float = 10.0,
    flip_probability: float = 0.5,
    seed: int = 0,
    val_cities=(),
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    drop_remainder: bool = False,
    check_files: bool = True,
) -> CityscapesDatasets:
    """Batched, prefetched train / val / test pipelines for `model.fit` (Sener's protocol).

    `train` is the official train split without `val_cities`, reshuffled
    and augmented every epoch (fixed by `seed`); `val` is the training
    images of `val_cities` (None when empty); `test` is the official val
    split. Evaluation splits are neither shuffled nor augmented.
    """
    eval_batch_size = eval_batch_size or batch_size
    common = dict(image_size=image_size, target_size=target_size, normalization=normalization, check_files=check_files)
    val_cities = tuple(val_cities or ())
    train, n_train = load_cityscapes(
        root, "train", augment=augment, shuffle=True, seed=seed, exclude_cities=val_cities,
        max_rotation_degrees=max_rotation_degrees, flip_probability=flip_probability,
        max_examples=max_train_examples, **common,
    )
    sizes = {"train": n_train}
    val = None
    if val_cities:
        val, sizes["val"] = load_cityscapes(root, "train", cities=val_cities, max_examples=max_eval_examples, **common)
        val = val.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)
    test, sizes["test"] = load_cityscapes(root, "val", max_examples=max_eval_examples, **common)
    image_size = _check_size("image_size", image_size)
    return CityscapesDatasets(
        train.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE),
        val,
        test.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE),
        sizes,
        (*image_size, 3),
        default_target_size(image_size) if target_size is None else _check_size("target_size", target_size),
    )
