"""Cityscapes (7 classes + depth) and NYUv2 (13 classes + depth + normals) in MTAN's preprocessed layout.

Lee & Son (section 4.2) evaluate on "the same data sets as MTAN" (Liu, Johns
& Davison, CVPR 2019), which its authors distribute already preprocessed as
one NumPy file per array::

    {root}/{train,val}/image/{i}.npy     float, [H, W, 3] (HWC), values in [0, 1]
    {root}/{train,val}/label/{i}.npy     float, [H, W], class index, -1 = ignore
    {root}/{train,val}/depth/{i}.npy     float, [H, W, 1], 0 = no measurement
    {root}/{train,val}/normal/{i}.npy    float, [H, W, 3] unit vectors, 0 = none   (NYUv2 only)

with `i` = 0 .. n-1 (MTAN's loader indexes by position). These are the
layouts MTAN's `create_dataset.py` reads (it moves the channel axis of
image, depth and normal to the front for PyTorch, so the files are
channels-last; labels have no channel axis). Sizes: NYUv2 288x384 (795
train / 654 val images), Cityscapes 128x256 (2,975 / 500; MTAN also
publishes a 256x512 version). MTAN's Cityscapes release names its label
folders `label_2`, `label_7` and `label_19`; `label_folder=None` picks
`label` and else `label_7` for Cityscapes. MTAN trains on `train` and
reports `val`; :func:`mtan_datasets` returns `val` as `test` and can
hold the last `val_size` training examples out for model selection.

Layouts accepted (checked per file from the `.npy` header, in Python,
before training): image `[H, W, 3]` or `[3, H, W]`; label `[H, W]`,
`[H, W, 1]` or `[1, H, W]`; depth `[H, W]`, `[H, W, 1]` or
`[1, H, W]`; normal `[H, W, 3]` or `[3, H, W]`; any little- or
big-endian integer or float dtype; C order. Channels-first files are
transposed to channels-last. A missing partner file, an unknown shape, a
spatial size that differs from the image's or from `image_size`, a
Fortran-ordered or unreadable array each raise :class:`MTANFormatError`
naming the file. A label value >= `num_classes` fails at read time with an
error naming the file.

Elements are `(image float32 [H, W, 3], targets)` with

* `"segmentation"`: int32 `[H, W]`; negative labels (MTAN's -1) become
  `IGNORE_LABEL` (250), the void label of every benchmark here;
* `"depth"`: float32 `[H, W, 1]` as stored, 0 = invalid (MTAN's rule);
* `"normal"` (NYUv2): float32 `[H, W, 3]` as stored, the zero vector = invalid.

Images are used as stored (MTAN applies no normalisation), and nothing is
augmented (MTAN's released code does not augment).

Reading: the header of every file is parsed once with `numpy.lib.format`
when the data set is indexed; the pipeline then reads the raw bytes with
`tf.io.read_file` and `tf.io.decode_raw` at the recorded offset, so
decoding runs in parallel TensorFlow ops without the Python lock.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtl_tf.losses import IGNORE_LABEL

__all__ = [
    "DATASETS",
    "MTANDatasets",
    "MTANFormatError",
    "MTANIndex",
    "MTANMissingFileError",
    "MTANSpec",
    "NpyHeader",
    "SPECS",
    "find_mtan_files",
    "load_mtan",
    "mtan_datasets",
    "read_npy_header",
]

SPLITS = ("train", "val")
_KINDS = ("image", "label", "depth", "normal")
_TASK_OF_KIND = {"label": "segmentation", "depth": "depth", "normal": "normal"}


@dataclasses.dataclass(frozen=True)
class MTANSpec:
    """What one MTAN data set holds."""

    name: str
    num_classes: int
    image_size: tuple
    tasks: tuple
    label_folders: tuple  # tried in order when label_folder is None
    sizes: dict  # official split sizes, for documentation and sanity messages


SPECS = {
    "cityscapes": MTANSpec("cityscapes", 7, (128, 256), ("segmentation", "depth"), ("label", "label_7"),
                           {"train": 2975, "val": 500}),
    "nyuv2": MTANSpec("nyuv2", 13, (288, 384), ("segmentation", "depth", "normal"), ("label",),
                      {"train": 795, "val": 654}),
}
DATASETS = tuple(SPECS)


class MTANFormatError(ValueError):
    """An MTAN `.npy` file is missing or not in the expected layout."""


class MTANMissingFileError(MTANFormatError, FileNotFoundError):
    """A file the MTAN layout requires is missing."""


@dataclasses.dataclass(frozen=True)
class NpyHeader:
    """What the pipeline needs to decode one `.npy` file without NumPy."""

    path: str
    shape: tuple
    dtype: np.dtype
    offset: int  # byte offset of the data


def read_npy_header(path) -> NpyHeader:
    """The shape, dtype and data offset of a `.npy` file (`numpy.lib.format`); errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except (ValueError, OSError) as e:
        raise MTANFormatError(f"{path}: not a readable .npy file ({e})") from e
    if fortran:
        raise MTANFormatError(f"{path}: a Fortran-ordered array; expected C order (numpy.save of a C array)")
    if dtype.hasobject or dtype.kind not in "iuf" or dtype.fields is not None:
        raise MTANFormatError(f"{path}: dtype {dtype}; expected a plain integer or float array")
    expected_bytes = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size - offset != expected_bytes:
        raise MTANFormatError(
            f"{path}: {size - offset} bytes of data for shape {shape} and dtype {dtype} "
            f"({expected_bytes} expected); the file is truncated or corrupt"
        )
    return NpyHeader(str(path), tuple(int(s) for s in shape), dtype, offset)


# (layout name, spatial size, channels-first?) from a shape, per kind.
def _layout(kind, shape):
    channels = {"image": (3,), "normal": (3,), "depth": (1, None), "label": (1, None)}[kind]
    if len(shape) == 2 and None in channels:
        return shape, False
    if len(shape) == 3:
        if shape[2] in channels and shape[2] is not None:
            return shape[:2], False
        if shape[0] in channels and shape[0] is not None:
            return shape[1:], True
    return None, None


def _expected_shapes(kind):
    return {
        "image": "[H, W, 3] or [3, H, W]",
        "normal": "[H, W, 3] or [3, H, W]",
        "depth": "[H, W], [H, W, 1] or [1, H, W]",
        "label": "[H, W], [H, W, 1] or [1, H, W]",
    }[kind]


@dataclasses.dataclass(frozen=True)
class MTANIndex:
    """The checked files of one split."""

    root: str
    split: str
    spec: MTANSpec
    headers: dict  # kind -> list[NpyHeader], aligned by index
    channels_first: dict  # kind -> bool
    image_size: tuple

    def __len__(self):
        return len(self.headers["image"])


def _resolve_label_folder(split_dir: Path, spec: MTANSpec, label_folder):
    if label_folder is not None:
        return label_folder
    for candidate in spec.label_folders:
        if (split_dir / candidate).is_dir():
            return candidate
    return spec.label_folders[0]


def find_mtan_files(root, name: str, split: str, *, label_folder=None, image_size=None) -> MTANIndex:
    """Indexes and checks `{root}/{split}/{kind}/{i}.npy` for data set `name`.

    Args:
      root: the directory holding `train/` and `val/`.
      name: "cityscapes" or "nyuv2".
      split: "train" or "val".
      label_folder: the label sub-directory (None: see the module doc).
      image_size: expected `(height, width)`; None accepts any size shared by all files.

    Raises:
      MTANMissingFileError / MTANFormatError naming the offending file.
    """
    if name not in SPECS:
        raise ValueError(f"unknown MTAN data set {name!r}; expected one of {', '.join(SPECS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; MTAN's layout has {', '.join(SPLITS)}")
    spec = SPECS[name]
    split_dir = Path(root).expanduser() / split
    folders = {"image": "image", "label": _resolve_label_folder(split_dir, spec, label_folder), "depth": "depth"}
    if "normal" in spec.tasks:
        folders["normal"] = "normal"
    indices = {}
    for kind, folder in folders.items():
        directory = split_dir / folder
        if not directory.is_dir():
            raise MTANMissingFileError(
                f"{directory}: directory not found; the MTAN {name} layout is "
                f"{{root}}/{{train,val}}/{{{','.join(folders.values())}}}/{{i}}.npy"
            )
        found = {}
        for path in directory.glob("*.npy"):
            if path.stem.isdigit():
                found[int(path.stem)] = path
        indices[kind] = found
    images = indices["image"]
    if not images:
        raise MTANMissingFileError(f"{split_dir / 'image'}: no {{i}}.npy files")
    n = len(images)
    if sorted(images) != list(range(n)):
        missing = sorted(set(range(max(images) + 1)) - set(images))[:5]
        raise MTANMissingFileError(
            f"{split_dir / 'image'}: files must be numbered 0..{n - 1} (MTAN indexes by position); "
            f"missing e.g. {[str(split_dir / 'image' / f'{i}.npy') for i in missing]}"
        )
    for kind in folders:
        if kind == "image":
            continue
        for i in range(n):
            if i not in indices[kind]:
                raise MTANMissingFileError(
                    f"{split_dir / folders[kind] / f'{i}.npy'}: missing ({kind} of image {images[i]})"
                )
        extra = sorted(set(indices[kind]) - set(range(n)))
        if extra:
            raise MTANMissingFileError(
                f"{indices[kind][extra[0]]}: a {kind} file without its image "
                f"(expected {split_dir / 'image' / f'{extra[0]}.npy'})"
            )
    headers = {kind: [read_npy_header(indices[kind][i]) for i in range(n)] for kind in folders}
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
    channels_first = {}
    for kind in folders:
        for i, header in enumerate(headers[kind]):
            size, first = _layout(kind, header.shape)
            if size is None:
                raise MTANFormatError(
                    f"{header.path}: {kind} array of shape {header.shape}; expected {_expected_shapes(kind)}"
                )
            if kind == "image" and image_size is None and i == 0:
                image_size = tuple(size)
            reference = image_size if kind == "image" else tuple(_layout("image", headers["image"][i].shape)[0])
            if tuple(size) != reference:
                what = (
                    f"the configured image size {image_size[0]}x{image_size[1]}" if kind == "image"
                    else f"its image {headers['image'][i].path} ({reference[0]}x{reference[1]})"
                )
                raise MTANFormatError(
                    f"{header.path}: {kind} of {size[0]}x{size[1]} pixels (height x width), but {what}; "
                    f"MTAN's {name} is {spec.image_size[0]}x{spec.image_size[1]}"
                )
            if channels_first.setdefault(kind, first) != first:
                raise MTANFormatError(
                    f"{header.path}: {'channels-first' if first else 'channels-last'} {kind} array {header.shape}, "
                    f"but {headers[kind][0].path} is {'channels-first' if not first else 'channels-last'}; "
                    "all files of a folder must share one layout"
                )
    return MTANIndex(str(root), split, spec, headers, channels_first, image_size)


def _decode_fn(index: MTANIndex, kind: str):
    """`fn(path, offset) -> float32/int32 channels-last tensor` for every file of `kind`."""
    first = index.headers[kind][0]
    dtype = first.dtype
    for header in index.headers[kind]:
        if header.dtype != dtype or header.shape != first.shape:
            raise MTANFormatError(
                f"{header.path}: {kind} array {header.shape} {header.dtype}, but {first.path} is "
                f"{first.shape} {first.dtype}; all files of a folder must share shape and dtype"
            )
    shape = first.shape
    nbytes = int(np.prod(shape)) * dtype.itemsize
    tf_dtype = tf.as_dtype(dtype.newbyteorder("=").type)
    little_endian = dtype.byteorder in ("<", "|") or (dtype.byteorder == "=" and np.little_endian)
    channels_first = index.channels_first[kind]

    def decode(path, offset):
        raw = tf.strings.substr(tf.io.read_file(path), offset, nbytes)
        values = tf.io.decode_raw(raw, tf_dtype, little_endian=little_endian)
        values = tf.reshape(values, shape)
        if len(shape) == 3 and channels_first:
            values = tf.transpose(values, [1, 2, 0])
        return values

    return decode


def load_mtan(
    root,
    name: str,
    split: str = "train",
    *,
    label_folder=None,
    image_size=None,
    shuffle: bool = False,
    seed: int = 0,
    select=None,
    index: MTANIndex | None = None,
):
    """One split as an unbatched `tf.data.Dataset` of `(image, {task: target})`.

    Args:
      root, name, split, label_folder, image_size: see :func:`find_mtan_files`.
      shuffle: reshuffle every epoch, in an order fixed by `seed`.
      select: optional `slice` or sequence of example indices to keep.
      index: an index from :func:`find_mtan_files` for this split (skips re-indexing).

    Returns:
      `(dataset, number_of_examples)`.
    """
    if index is None:
        index = find_mtan_files(root, name, split, label_folder=label_folder, image_size=image_size)
    spec = index.spec
    kinds = [k for k in _KINDS if k in index.headers]
    decoders = {kind: _decode_fn(index, kind) for kind in kinds}
    positions = np.arange(len(index))
    if select is not None:
        positions = positions[select] if isinstance(select, slice) else np.asarray(select, np.int64)
    table = {
        kind: (
            tf.constant([index.headers[kind][i].path for i in positions]),
            tf.constant([index.headers[kind][i].offset for i in positions], tf.int64),
        )
        for kind in kinds
    }
    n = len(positions)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    height, width = index.image_size
    num_classes = spec.num_classes

    def example(i):
        arrays = {kind: decoders[kind](table[kind][0][i], table[kind][1][i]) for kind in kinds}
        image = tf.cast(arrays["image"], tf.float32)
        image.set_shape([height, width, 3])
        label = tf.cast(arrays["label"], tf.int32)
        label = tf.reshape(label, [height, width])
        too_large = tf.reduce_max(label) >= num_classes
        with tf.control_dependencies([
            tf.debugging.Assert(
                tf.logical_not(too_large),
                [f"{spec.name} label file", table["label"][0][i],
                 f"holds a class >= {num_classes} (expected -1 or 0..{num_classes - 1}); maximum:",
                 tf.reduce_max(label)],
            )
        ]):
            label = tf.where(label < 0, IGNORE_LABEL, label)
        targets = {"segmentation": label}
        depth = tf.reshape(tf.cast(arrays["depth"], tf.float32), [height, width, 1])
        targets["depth"] = depth
        if "normal" in arrays:
            normal = tf.cast(arrays["normal"], tf.float32)
            normal.set_shape([height, width, 3])
            targets["normal"] = normal
        return image, targets

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds, n


MTANDatasets = collections.namedtuple("MTANDatasets", ["train", "val", "test", "sizes", "image_shape"])
MTANDatasets.__doc__ = (
    "Batched train / val (None when val_size is 0) / test (MTAN's val folder) datasets, sizes, input shape."
)


def mtan_datasets(
    root,
    name: str,
    batch_size: int,
    *,
    eval_batch_size: int | None = None,
    label_folder=None,
    image_size=None,
    seed: int = 0,
    val_size: int = 0,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    drop_remainder: bool = False,
) -> MTANDatasets:
    """Batched, prefetched pipelines: `train` (reshuffled each epoch), `val` (last
    `val_size` training examples, or None), `test` (MTAN's `val` folder)."""
    eval_batch_size = eval_batch_size or batch_size
    common = dict(label_folder=label_folder, image_size=image_size)
    train_index = find_mtan_files(root, name, "train", **common)
    test_index = find_mtan_files(root, name, "val", **common)
    n_total = len(train_index)
    val_size = int(val_size)
    if not 0 <= val_size < n_total:
        raise ValueError(f"val_size must be in [0, {n_total - 1}] for {n_total} training examples; got {val_size}")
    train_positions = np.arange(n_total - val_size)
    if max_train_examples is not None:
        train_positions = train_positions[: int(max_train_examples)]
    train, n_train = load_mtan(root, name, "train", shuffle=True, seed=seed, select=train_positions, index=train_index)
    sizes = {"train": n_train}
    val = None
    if val_size:
        val_positions = np.arange(n_total - val_size, n_total)[: max_eval_examples]
        val, sizes["val"] = load_mtan(root, name, "train", select=val_positions, index=train_index)
        val = val.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)
    test_select = None if max_eval_examples is None else slice(0, int(max_eval_examples))
    test, sizes["test"] = load_mtan(root, name, "val", select=test_select, index=test_index)
    if tuple(test_index.image_size) != tuple(train_index.image_size):
        raise MTANFormatError(
            f"{test_index.headers['image'][0].path}: val images are {test_index.image_size}, but train images "
            f"({train_index.headers['image'][0].path}) are {train_index.image_size}; both splits must share a size"
        )
    return MTANDatasets(
        train.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE),
        val,
        test.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE),
        sizes,
        (*train_index.image_size, 3),
    )
