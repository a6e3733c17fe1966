"""CelebA with its 40 binary attributes as `tf.data` pipelines.

Sener & Koltun (NeurIPS 2018, section 4.2) treat each of the 40 attributes of
CelebA (Liu et al., ICCV 2015) as a binary classification task on 64x64
images, with the official train / val / test partition (162,770 / 19,867 /
19,962 images of the aligned set).

Every example is `(image float32 [S, S, 3], {attribute: int32 0/1})` with
`S = image_size` (64); the task names are :data:`ATTRIBUTES`, in the order
of the official attribute file. Attribute values -1 / 1 become 0 / 1.

Sources, in order:

1. `data_dir` in the official layout: `img_align_celeba/*.jpg`,
   `list_attr_celeba.txt` (line 1 the number of images, line 2 the 40
   attribute names, then `filename v1 .. v40` with values -1 / 1) and
   `list_eval_partition.txt` (`filename 0|1|2`: train, val, test). The
   sub-directories of the Google Drive release (`Img/img_align_celeba/`,
   `Anno/`, `Eval/`) are found too. A `data_dir` that is given but
   incomplete is an error, never silently replaced by another source.
2. TFDS `celeb_a` when it is already prepared under `tfds_data_dir`
   (TFDS default: `$TFDS_DATA_DIR` or `~/tensorflow_datasets`); its
   `validation` split is our `val`. Nothing is downloaded unless
   `tfds_download=True`; every TFDS error counts as "not available".

Neither available: :class:`SourceNotFoundError` names both ways to provide it.
Malformed files raise :class:`CelebAFormatError` naming the file and line: an
attribute row with the wrong number of columns, a value other than -1 / 1, a
header that is not the 40 official names, a count on line 1 that disagrees
with the rows, duplicate rows, a partition value other than 0 / 1 / 2, and a
partition file that does not list exactly the images of the attribute file.
A missing image names the image and the attribute-file line that lists it; an
undecodable one names the image.

Preprocessing. Images are decoded with `tf.io.decode_jpeg` in a parallel
`map` and resized from 178x218 to `image_size` squared (aspect ratio not
kept, as in the official code) with bilinear interpolation and antialiasing,
which is what `scipy.misc.imresize` (PIL bilinear) did. Normalisation
(`normalization`):

* `"sener"` (default), the official code's transform: channels reversed to
  BGR, the per-channel mean (73.15835921, 82.90891754, 72.39239876) subtracted
  -- and then, because `imresize` byte-scales a float image, each image is
  min-max scaled to [0, 1] over all its pixels and channels. We apply it after
  resizing, in float (the official code scaled before resizing and rounded to
  uint8), a difference below 1/255 per pixel up to the antialiasing of the
  extremes.
* `"unit"`: RGB scaled to [0, 1].

Cache. The resized uint8 images and the labels of each split are decoded once
and stored as `.npy` files under
`<cache>/celeba/<source>-<size>px-<key>/{split}-images.npy` (and
`{split}-labels.npy`, `{split}.json`), written atomically (the rules of
:mod:`mtl_tf.data._cache`); `<cache>` is
`cache_dir`, else `$MTL_TF_CACHE`, else `~/.cache/mtl_tf`; `<key>`
hashes the image size, a format version and the source (path, size and
modification time of the two list files and of the image directory, or the
TFDS name, version and directory). Training reads the images through a
memory map, so the whole split is reshuffled every epoch without holding
~2 GB in a shuffle buffer -- this random access is why the cache is a NumPy
file and not `tf.data.Dataset.cache` (which can only be replayed in order).
Batches are gathered in a `tf.numpy_function` inside a parallel `map` and
prefetched, so decoding never runs in the training loop.

Shuffling: the training set is reshuffled every epoch in an order fixed by
`seed`; val and test keep file order.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from mtl_tf.data import _cache, _sources
from mtl_tf.data._cache import CACHE_ENV, DEFAULT_CACHE_DIR  # noqa: F401
# The two list files' formats and parsers: their public names are this module's too.
from mtl_tf.data._celeba_lists import (  # noqa: F401
    ATTRIBUTES, PARTITION_IDS, CelebAFormatError, read_attribute_file, read_partition_file,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_FILE",
    "BGR_MEAN",
    "CelebADatasets",
    "CelebAFormatError",
    "CelebAIndex",
    "IMAGE_DIR",
    "NORMALIZATIONS",
    "OFFICIAL_SIZES",
    "PARTITION_FILE",
    "SPLITS",
    "SourceNotFoundError",
    "celeba_datasets",
    "find_official_files",
    "load_celeba_arrays",
    "load_official_index",
    "normalize_images",
    "read_attribute_file",
    "read_partition_file",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
OFFICIAL_SIZES = {"train": 162_770, "val": 19_867, "test": 19_962}
TFDS_NAME = "celeb_a"
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
NORMALIZATIONS: tuple[str, ...] = ("sener", "unit")
# Official code: the mean of the BGR channels, subtracted after the flip.
BGR_MEAN = (73.15835921, 82.90891754, 72.39239876)
DEFAULT_IMAGE_SIZE = 64

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
# Where each part may sit below data_dir: flat, or the Google Drive release's folders.
_CANDIDATES = {
    "attributes": (ATTRIBUTE_FILE, f"Anno/{ATTRIBUTE_FILE}"),
    "partition": (PARTITION_FILE, f"Eval/{PARTITION_FILE}"),
    "images": (IMAGE_DIR, f"Img/{IMAGE_DIR}"),
}
_FORMAT_VERSION = 1
_DECODE_BATCH = 256


class SourceNotFoundError(_sources.SourceNotFoundError):
    """CelebA is neither in the given directory nor prepared in TFDS."""


# --------------------------------------------------------------------------
# The official layout below data_dir.


@dataclasses.dataclass(frozen=True)
class CelebAIndex:
    """The images and labels of the official files, checked against each other.

    Attributes:
      files: dict part -> path ("attributes", "partition", "images").
      filenames: image file names in attribute-file order.
      labels: uint8 [n, 40] in {0, 1}.
      splits: the split of each image ("train", "val" or "test").
      attribute_lines: the attribute-file line of each image.
    """

    files: dict
    filenames: list
    labels: np.ndarray
    splits: list
    attribute_lines: list

    def split_indices(self, split) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)


def find_official_files(data_dir) -> dict[str, Path]:
    """The attribute file, partition file and image directory below `data_dir`.

    Raises:
      SourceNotFoundError: naming every place looked at and both ways to provide CelebA.
    """
    data_dir = Path(data_dir).expanduser()
    found, missing = {}, []
    for part, candidates in _CANDIDATES.items():
        hit, paths = _sources.find_first(data_dir, candidates, directory=part == "images")
        if hit is None:
            missing.append(" or ".join(str(p) for p in paths))
        else:
            found[part] = hit
    if missing:
        raise SourceNotFoundError(
            f"CelebA is incomplete in data_dir={data_dir}: not found: {'; '.join(missing)}.\n"
            + _how_to_provide()
        )
    return found


def load_official_index(data_dir) -> CelebAIndex:
    """Reads and cross-checks the two list files below `data_dir` (images are not opened)."""
    files = find_official_files(data_dir)
    _, filenames, labels, attribute_lines = read_attribute_file(files["attributes"])
    part_names, part_splits, part_lines = read_partition_file(files["partition"])
    split_of = dict(zip(part_names, part_splits))
    known = set(filenames)
    extra = [(n, line) for n, line in zip(part_names, part_lines) if n not in known]
    if extra:
        name, line = extra[0]
        raise CelebAFormatError(
            f"{files['partition']}, line {line}: image {name} has no attributes in "
            f"{files['attributes']} ({len(extra)} such row(s)); expected both files to list the same images"
        )
    unlisted = [(n, line) for n, line in zip(filenames, attribute_lines) if n not in split_of]
    if unlisted:
        name, line = unlisted[0]
        raise CelebAFormatError(
            f"{files['partition']}: has no partition for {len(unlisted)} image(s) of "
            f"{files['attributes']}, the first {name} (line {line} there); expected both files "
            "to list the same images"
        )
    return CelebAIndex(
        files=files,
        filenames=filenames,
        labels=labels,
        splits=[split_of[n] for n in filenames],
        attribute_lines=attribute_lines,
    )


def _how_to_provide() -> str:
    files_way = (
        "data_dir (the --data_dir flag of the launch scripts) in the official layout: "
        f"{IMAGE_DIR}/*.jpg, {ATTRIBUTE_FILE} and {PARTITION_FILE} (from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; the Img/, Anno/ and Eval/ folders "
        "of the release are found too)"
    )
    tfds_way = _sources.tfds_way(TFDS_NAME, "its file host often refuses with a quota error")
    return _sources.how_to_provide("CelebA", [files_way, tfds_way])


# --------------------------------------------------------------------------
# Sources: something that can produce the uint8 images and labels of a split.


@dataclasses.dataclass(frozen=True)
class _Source:
    kind: str  # "files" or "tfds"
    origin: str  # human-readable, for logs
    fingerprint: str  # enters the cache key
    # split, image_size, writer(start, images, labels) -> number of examples
    decode: Callable
    size: Callable  # split -> number of examples


def _resize_uint8(image, image_size):
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _files_source(data_dir) -> _Source:
    files = find_official_files(data_dir)
    fingerprint = _cache.files_fingerprint("files", [files[k] for k in ("attributes", "partition", "images")])
    index_cache = {}

    def index():
        if "index" not in index_cache:
            index_cache["index"] = load_official_index(data_dir)
        return index_cache["index"]

    def size(split):
        return int(index().split_indices(split).size)

    def decode(split, image_size, write):
        idx = index()
        rows = idx.split_indices(split)
        names = [idx.filenames[i] for i in rows]
        present = set(os.listdir(files["images"]))
        for i, name in zip(rows, names):
            if name not in present:
                raise FileNotFoundError(
                    f"CelebA image {files['images'] / name} is missing; it is listed on line "
                    f"{idx.attribute_lines[i]} of {files['attributes']}"
                )
        paths = [str(files["images"] / n) for n in names]

        def load(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return _resize_uint8(image, image_size)

        dataset = (
            tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(_DECODE_BATCH)
            .prefetch(tf.data.AUTOTUNE)
        )
        start = 0
        iterator = iter(dataset)
        while True:
            try:
                images = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise _locate_bad_image(paths, start, e) from None
            write(start, images.numpy(), idx.labels[rows[start:start + len(images)]])
            start += len(images)
        return start

    return _Source("files", f"the official files in {Path(data_dir).expanduser()}", fingerprint, decode, size)


def _locate_bad_image(paths, start, error) -> CelebAFormatError:
    """Decodes the images from `start` one by one to name the one that failed."""
    for path in paths[start:]:
        try:
            tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        except tf.errors.OpError as e:
            return CelebAFormatError(f"CelebA image {path} cannot be decoded as a JPEG: {e.message.strip()}")
    return CelebAFormatError(f"decoding CelebA images from {paths[start]} on failed: {error.message.strip()}")


def _tfds_source(tfds_data_dir, download: bool) -> tuple[_Source | None, str]:
    """The prepared TFDS `celeb_a`, or `(None, reason)`; never raises."""
    found, reason = _sources.find_tfds(
        TFDS_NAME, tfds_data_dir, download,
        inspect=lambda builder: {s: int(builder.info.splits[TFDS_SPLITS[s]].num_examples) for s in SPLITS},
    )
    if found is None:
        return None, reason

    def decode(split, image_size, write):
        dataset = found.builder.as_dataset(split=TFDS_SPLITS[split], shuffle_files=False)

        def convert(example):
            labels = tf.stack([tf.cast(example["attributes"][a], tf.uint8) for a in ATTRIBUTES])
            return _resize_uint8(example["image"], image_size), labels

        dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        start = 0
        for images, labels in dataset.batch(_DECODE_BATCH).prefetch(tf.data.AUTOTUNE):
            write(start, images.numpy(), labels.numpy())
            start += len(images)
        return start

    return _Source("tfds", found.origin, f"tfds|{found.origin}", decode, lambda split: found.info[split]), ""


def _resolve_source(data_dir, tfds_data_dir, tfds_download) -> _Source:
    if data_dir is not None:
        return _files_source(data_dir)
    source, reason = _tfds_source(tfds_data_dir, tfds_download)
    if source is not None:
        return source
    raise SourceNotFoundError(
        f"CelebA was not found (no data_dir given; {reason}).\n" + _how_to_provide()
    )


# --------------------------------------------------------------------------
# Cache.


def _cache_dir(cache_dir, source: _Source, image_size: int) -> Path:
    params = {"format": _FORMAT_VERSION, "image_size": int(image_size), "source": source.fingerprint}
    return _cache.cache_root(cache_dir, "celeba") / f"{source.kind}-{image_size}px-{_cache.cache_key(params)}"


def _read_cached_split(directory: Path, split: str, image_size: int):
    """`(images memmap, labels)` of a complete cached split, else None."""
    meta_path = directory / f"{split}.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(directory / f"{split}-images.npy", mmap_mode="r")
        labels = np.load(directory / f"{split}-labels.npy")
        n = int(meta["num_examples"])
        if images.shape != (n, image_size, image_size, 3) or labels.shape != (n, len(ATTRIBUTES)):
            raise ValueError(f"shapes {images.shape} and {labels.shape} do not match {n} examples")
        return images, labels
    except Exception as e:  # truncated or hand-edited files: rebuild
        logger.warning("CelebA cache %s/%s is unreadable (%s); rebuilding it.", directory, split, e)
        return None


def _build_split(directory: Path, source: _Source, split: str, image_size: int):
    n = source.size(split)
    if n == 0:
        raise CelebAFormatError(f"{source.origin}: the {split} split has no images")
    directory.mkdir(parents=True, exist_ok=True)
    _cache.remove_stale_temporaries(directory)
    start_time = time.perf_counter()
    images_path, labels_path = directory / f"{split}-images.npy", directory / f"{split}-labels.npy"
    with _cache.atomic_paths(images_path, labels_path) as (images_tmp, labels_tmp):
        images = np.lib.format.open_memmap(images_tmp, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, 3))
        labels = np.zeros((n, len(ATTRIBUTES)), np.uint8)

        def write(start, batch_images, batch_labels):
            stop = start + len(batch_images)
            if stop > n:
                raise CelebAFormatError(f"{source.origin}: the {split} split yields more than the {n} images it declares")
            images[start:stop] = batch_images
            labels[start:stop] = batch_labels

        written = source.decode(split, image_size, write)
        if written != n:
            raise CelebAFormatError(f"{source.origin}: the {split} split yields {written} images; expected {n}")
        images.flush()
        del images
        with open(labels_tmp, "xb") as f:
            np.save(f, labels)
    meta = {
        "num_examples": n,
        "image_size": image_size,
        "source": source.origin,
        "fingerprint": source.fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _cache.atomic_write_json(directory / f"{split}.json", meta)
    logger.info("Decoded %d CelebA %s images from %s into %s in %.1f s.", n, split, source.origin,
                directory, time.perf_counter() - start_time)


def load_celeba_arrays(
    split: str,
    *,
    data_dir=None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    cache_dir=None,
    tfds_data_dir=None,
    tfds_download: bool = False,
    max_examples: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)` of a split: uint8 `[n, S, S, 3]` RGB (a read-only
    memory map) and uint8 `[n, 40]` in {0, 1}, in file order; decoded into the
    cache on first use. `max_examples` keeps the first examples only.
    """
    _check_choice("split", split, SPLITS)
    image_size = int(image_size)
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    source = _resolve_source(data_dir, tfds_data_dir, tfds_download)
    directory = _cache_dir(cache_dir, source, image_size)
    cached = _read_cached_split(directory, split, image_size)
    if cached is None:
        _build_split(directory, source, split, image_size)
        cached = _read_cached_split(directory, split, image_size)
    images, labels = cached
    if max_examples is not None:
        images, labels = images[: int(max_examples)], labels[: int(max_examples)]
    return images, labels


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


# --------------------------------------------------------------------------
# tf.data pipelines.


def normalize_images(images, normalization: str = "sener"):
    """uint8 RGB images `[..., H, W, 3]` -> float32 network inputs (see the module doc)."""
    _check_choice("normalization", normalization, NORMALIZATIONS)
    images = tf.convert_to_tensor(images)
    if normalization == "unit":
        return tf.cast(images, tf.float32) / 255.0
    # tf.reverse, not `[..., ::-1]`: the negative-stride slice is several times
    # slower on the CPU and this runs in the input pipeline.
    x = tf.cast(tf.reverse(images, axis=[-1]), tf.float32) - tf.constant(BGR_MEAN, tf.float32)
    low = tf.reduce_min(x, axis=[-3, -2, -1], keepdims=True)
    high = tf.reduce_max(x, axis=[-3, -2, -1], keepdims=True)
    # An image with no range would divide by zero; scipy's bytescale maps it to
    # 0, and so does this (with the official means it cannot come from uint8 RGB).
    return tf.math.divide_no_nan(x - low, high - low)


CelebADatasets = collections.namedtuple(
    "CelebADatasets", ["train", "val", "test", "sizes", "image_shape", "attributes"]
)
CelebADatasets.__doc__ = (
    "Batched train / val / test datasets, their example counts (dict), the image shape and the task names."
)


def _batched(images, labels, batch_size, *, normalization, shuffle_seed, drop_remainder):
    n = int(images.shape[0])
    image_shape = tuple(images.shape[1:])
    all_labels = tf.constant(labels)

    def gather_images(idx):
        # Sorted reads are sequential on disk; the order is restored after.
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *image_shape), np.uint8)
        out[order] = images[idx[order]]
        return out

    def gather(idx):
        batch = tf.numpy_function(gather_images, [idx], tf.uint8, stateful=False)
        batch = tf.ensure_shape(batch, [None, *image_shape])
        targets = tf.cast(tf.gather(all_labels, idx), tf.int32)
        return normalize_images(batch, normalization), dict(zip(ATTRIBUTES, tf.unstack(targets, axis=1)))

    dataset = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def celeba_datasets(
    data_dir=None,
    batch_size: int = 256,
    *,
    eval_batch_size: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    normalization: str = "sener",
    seed: int = 0,
    cache_dir=None,
    tfds_data_dir=None,
    tfds_download: bool = False,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    drop_remainder: bool = False,
) -> CelebADatasets:
    """Batched CelebA train / val / test datasets, ready for `model.fit`.

    Each yields `(images float32 [B, S, S, 3], {attribute: int32 [B]})`. The
    training set is reshuffled every epoch in an order fixed by `seed`; val
    and test keep file order. `max_train_examples` caps the training set,
    `max_eval_examples` each of val and test (first examples in file order).

    Returns:
      `CelebADatasets(train, val, test, sizes, image_shape, attributes)`.
    """
    _check_choice("normalization", normalization, NORMALIZATIONS)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    eval_batch_size = int(eval_batch_size or batch_size)
    out, sizes = {}, {}
    for split in SPLITS:
        cap = max_train_examples if split == "train" else max_eval_examples
        images, labels = load_celeba_arrays(
            split, data_dir=data_dir, image_size=image_size, cache_dir=cache_dir,
            tfds_data_dir=tfds_data_dir, tfds_download=tfds_download, max_examples=cap,
        )
        sizes[split] = int(images.shape[0])
        training = split == "train"
        out[split] = _batched(
            images, labels,
            int(batch_size) if training else eval_batch_size,
            normalization=normalization,
            shuffle_seed=int(seed) if training else None,
            drop_remainder=bool(drop_remainder) and training,
        )
    image_shape = (int(image_size), int(image_size), 3)
    return CelebADatasets(out["train"], out["val"], out["test"], sizes, image_shape, ATTRIBUTES)
