"""Where the digit sources of the multi-digit benchmarks come from (MNIST, Fashion-MNIST).

`resolve_sources(name, ...)` finds the left and right sources of a data set in
this order: the directories given (`data_dir`, `mnist_dir`, `fashion_dir`),
the Debian package `dataset-fashion-mnist` (Fashion-MNIST only), a prepared
TFDS data set, and last Keras' own download (`keras.datasets.<kind>`, once,
unless `MTL_TF_DOWNLOAD=0`). A source is read lazily; its fingerprint keys the
composed data set's cache (`mtl_tf.data.multi_digits`). When every way fails,
`SourceNotFoundError` names each of them and why it failed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_tf.data import _cache, _sources
from mtl_tf.data import idx as idx_lib
from mtl_tf.data._digit_composites import ITEM_SIZE
from mtl_tf.data._digit_composites import check_choice as _check_choice

logger = logging.getLogger("mtl_tf.data.multi_digits")

DATASETS: tuple[str, ...] = ("multi_mnist", "multi_fashion", "multi_fashion_mnist")
NUM_CLASSES = 10

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Data set name -> (left source, right source).
_SOURCES = {
    "multi_mnist": ("mnist", "mnist"),
    "multi_fashion": ("fashion_mnist", "fashion_mnist"),
    "multi_fashion_mnist": ("mnist", "fashion_mnist"),
}
_PRETTY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


class SourceNotFoundError(_sources.SourceNotFoundError):
    """A source data set (MNIST or Fashion-MNIST) is nowhere to be found."""


# --------------------------------------------------------------------------
# Sources.


@dataclasses.dataclass(frozen=True)
class _Source:
    kind: str  # "mnist" or "fashion_mnist"
    origin: str  # human-readable, for logs
    fingerprint: str  # enters the cache key
    load: Callable[[], dict[str, np.ndarray]]  # lazily reads the four arrays


def _dir_source(kind: str, directory: Path, files: dict[str, Path]) -> _Source:
    fingerprint = _cache.files_fingerprint("idx", [files[role] for role in sorted(files)])

    def load():
        ds = idx_lib.load_idx_dataset(directory)
        arrays = {
            "train_images": ds.train_images,
            "train_labels": ds.train_labels,
            "test_images": ds.test_images,
            "test_labels": ds.test_labels,
        }
        for split in ("train", "test"):
            labels = arrays[f"{split}_labels"]
            if labels.size and labels.max() >= NUM_CLASSES:
                raise ValueError(
                    f"{ds.files[split + '_labels']}: expected labels in 0..{NUM_CLASSES - 1}, "
                    f"found {int(labels.max())}"
                )
        return arrays

    return _Source(kind, f"IDX files in {directory}", fingerprint, load)


def _tfds_source(kind: str, tfds_data_dir, download: bool) -> tuple[_Source | None, str]:
    """The prepared TFDS data set, or `(None, reason)`; never raises."""
    found, reason = _sources.find_tfds(kind, tfds_data_dir, download)
    if found is None:
        return None, reason

    def load():
        import tensorflow_datasets as tfds

        arrays = {}
        for split in ("train", "test"):
            data = tfds.as_numpy(found.builder.as_dataset(split=split, batch_size=-1))
            images = np.asarray(data["image"], dtype=np.uint8)
            if images.ndim == 4:
                images = images[..., 0]
            arrays[f"{split}_images"] = images
            arrays[f"{split}_labels"] = np.asarray(data["label"], dtype=np.uint8)
        return arrays

    return _Source(kind, found.origin, f"tfds|{found.origin}", load), ""


def _keras_arrays_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the arrays a Keras loader returned, or None."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (ITEM_SIZE, ITEM_SIZE):
            return (
                f"{split} images: expected uint8 [N, {ITEM_SIZE}, {ITEM_SIZE}], "
                f"found {images.dtype} of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            return f"{split} labels: expected [{images.shape[0]}] (one per image), found shape {labels.shape}"
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            return f"{split} labels: expected 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}"
    return None


def _keras_source(kind: str) -> tuple[_Source | None, str]:
    """Keras's copy of `kind` (downloaded on first use), or `(None, reason)`; never raises."""
    call = f"keras.datasets.{kind}.load_data()"
    refusal = _sources.download_refusal()
    if refusal is not None:
        return None, f"{call} not tried ({refusal})"
    logger.info("Loading %s with %s (downloaded on first use into ~/.keras/datasets).", _PRETTY[kind], call)
    try:
        import keras  # a core dependency; imported here so that tests can stub the loader

        (train_images, train_labels), (test_images, test_labels) = getattr(keras.datasets, kind).load_data()
        arrays = {
            "train_images": np.asarray(train_images),
            "train_labels": np.asarray(train_labels),
            "test_images": np.asarray(test_images),
            "test_labels": np.asarray(test_labels),
        }
    except Exception as e:  # no network, proxy, disk full, corrupt download, ...: just unavailable
        return None, f"{call} failed ({type(e).__name__}: {e})"
    problem = _keras_arrays_problem(arrays)
    if problem is not None:
        return None, f"{call} returned unusable data ({problem})"
    arrays["train_labels"] = arrays["train_labels"].astype(np.uint8)
    arrays["test_labels"] = arrays["test_labels"].astype(np.uint8)
    # The content itself keys the cache: Keras's files carry no version of their own.
    digest = _cache.cache_key({k: _cache.array_checksum(v) for k, v in sorted(arrays.items())})
    return _Source(kind, f"Keras's {kind} ({call})", f"keras|{kind}|{digest}", lambda: arrays), ""


def _missing_message(kind: str, dataset: str, reasons: list[str], dir_arg: str) -> str:
    files = ", ".join(f"{n}[.gz]" for n in idx_lib.IDX_FILE_NAMES.values())
    ways = [
        f"a directory holding the four IDX files {files}, passed as {dir_arg} "
        "(the --data_dir flag of the launch scripts)",
        _sources.tfds_way(kind),
    ]
    if kind == "fashion_mnist":
        ways.append(
            "the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
            f"which installs the files in {DEBIAN_FASHION_MNIST_DIR}"
        )
    ways.append(
        f"an internet connection: keras.datasets.{kind}.load_data() then downloads it once into "
        f"~/.keras/datasets ($KERAS_HOME) -- tried automatically when no directory is given, "
        f"unless {_sources.DOWNLOAD_ENV}=0"
    )
    return f"{_PRETTY[kind]} (needed by '{dataset}') was not found. " + _sources.how_to_provide("it", ways, reasons)


def _resolve_one(
    kind: str,
    dataset: str,
    explicit: list[tuple[Path, str]],
    dir_arg: str,
    tfds_data_dir,
    tfds_download: bool,
) -> _Source:
    """First match among the explicit directories, Debian (Fashion-MNIST), TFDS and Keras's download."""
    if explicit:
        errors = []
        for directory, _ in explicit:
            try:
                return _dir_source(kind, directory, idx_lib.find_idx_dataset(directory))
            except FileNotFoundError as e:
                errors.append(str(e))
        given = " or ".join(f"{arg}={d}" for d, arg in explicit)
        raise SourceNotFoundError(
            f"{_PRETTY[kind]} IDX files not found at {given}: "
            + "; ".join(errors)
            + "\n"
            + _missing_message(kind, dataset, [], dir_arg)
        )
    reasons = [f"no {dir_arg} given"]
    if kind == "fashion_mnist":
        debian = Path(DEBIAN_FASHION_MNIST_DIR)
        try:
            return _dir_source(kind, debian, idx_lib.find_idx_dataset(debian))
        except FileNotFoundError:
            reasons.append(f"Debian package files not in {debian}")
    source, reason = _tfds_source(kind, tfds_data_dir, tfds_download)
    if source is not None:
        return source
    reasons.append(reason)
    source, reason = _keras_source(kind)
    if source is not None:
        return source
    reasons.append(reason)
    raise SourceNotFoundError(_missing_message(kind, dataset, reasons, dir_arg))


def resolve_sources(
    name: str,
    *,
    data_dir=None,
    mnist_dir=None,
    fashion_dir=None,
    tfds_data_dir=None,
    tfds_download: bool = False,
) -> tuple[_Source, _Source]:
    """Finds the (left, right) sources of data set `name`; see the module doc.

    Raises:
      SourceNotFoundError: naming every way to provide the missing source.
    """
    _check_choice("name", name, DATASETS)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    per_kind = {"mnist": mnist_dir, "fashion_mnist": fashion_dir}
    dir_args = {"mnist": "mnist_dir", "fashion_mnist": "fashion_dir"}
    mixed = _SOURCES[name][0] != _SOURCES[name][1]
    resolved = {}
    for kind in dict.fromkeys(_SOURCES[name]):
        own = per_kind[kind]
        if own is not None:
            explicit = [(Path(own).expanduser(), dir_args[kind])]
        elif data_dir is not None and mixed:
            explicit = [(data_dir / kind, "data_dir")]
        elif data_dir is not None:
            explicit = [(data_dir, "data_dir"), (data_dir / kind, "data_dir")]
        else:
            explicit = []
        if mixed:
            dir_arg = f"{dir_args[kind]}= (or data_dir= with a {kind}/ subdirectory)"
        else:
            dir_arg = f"data_dir= (or {dir_args[kind]}=)"
        resolved[kind] = _resolve_one(kind, name, explicit, dir_arg, tfds_data_dir, tfds_download)
    left, right = _SOURCES[name]
    return resolved[left], resolved[right]
