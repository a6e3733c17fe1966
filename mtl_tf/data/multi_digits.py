"""Multi-digit benchmarks (MultiMNIST and relatives) as deterministic `tf.data` pipelines.

Data sets (`name`):

* `multi_mnist`: two MNIST digits;
* `multi_fashion`: two Fashion-MNIST items;
* `multi_fashion_mnist`: an MNIST digit (top-left, task `left`) and a
  Fashion-MNIST item (bottom-right, task `right`).

Every example is `(image float32 [H, W, 1], {"left": int32, "right": int32})`;
the task names are :data:`TASKS`.

Protocols (`protocol`):

`"sener"` -- Sener & Koltun (2018).  Each item of a split is used once as the
  left item and gets one partner drawn by a random permutation of the same
  split (labels may coincide, as in the original).  On a 36x36 canvas the left
  item sits at rows/cols `[0:28]`, the right one at `[6:34]`, overlap is
  the element-wise max; the canvas is resized to 28x28 with nearest neighbour
  (source pixel `floor((i + 0.5) * 36 / 28)`, i.e. PIL / `scipy.misc.imresize`
  `interp="nearest"`), scaled to [0, 1] and normalised with mean 0.1307 and
  std 0.3081.  Images are `[28, 28, 1]`.

`"pareto"` -- Lin et al. (2019) Pareto MTL, with Lee & Son's 120k/10k/10k
  split.  Two items, the left one placed at a random offset in `0..4` (rows
  and columns drawn independently), the right one at `4..8`, on a 36x36
  canvas (overlap by max, no resize), pixels scaled by `pixel_scale`.  For
  `multi_mnist` and `multi_fashion` the two labels always differ; for
  `multi_fashion_mnist` they are independent (the tasks are different, so an
  equal class index is no ambiguity).  Images are `[36, 36, 1]`.

Pixel scale (`pixel_scale`, `pareto` protocol only): `"unit"` (the
default) divides the pixels by 255, giving [0, 1]; `"raw"` feeds them as
float32 in [0, 255], as the official Pareto-MTL training code does (it feeds
its pickled composites with no scaling or mean/std).  The `sener` protocol
always applies its official loader's normalisation ((x / 255 - 0.1307) /
0.3081) and accepts `"unit"` only.  The scale is applied when the pipeline
reads the cached uint8 composites, so it does not enter the cache key.

Splits (both protocols), with no source item shared between splits:

* `train`: composed from the first `1 - val_fraction` (default 90 %, i.e.
  54,000) of the official training items;
* `val`: composed from the last `val_fraction` (6,000) training items --
  the papers pick the best epoch on a validation set, and it must not be the
  test set;
* `test`: composed from the 10,000 official test items.

Under `sener` each split has as many composites as items (54k / 6k / 10k);
under `pareto` the sizes are `pareto_sizes` (default 120k / 10k / 10k),
each item being drawn about evenly often (concatenated permutations).  Lee &
Son split one shuffled 140k pool, which lets a test composite reuse a
training digit; composing each split from its own items avoids that leak
while keeping their sizes.

Sources, per underlying data set (`mnist` / `fashion_mnist`), in order:

1. an explicit directory holding the four official IDX files
   (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
   `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`):
   `mnist_dir` / `fashion_dir`, or `data_dir`.  For `multi_mnist` and
   `multi_fashion` `data_dir` holds the files itself or in a `mnist/` /
   `fashion_mnist/` subdirectory; for `multi_fashion_mnist` it is the
   parent of `mnist/` and `fashion_mnist/`.  A directory that is given
   but lacks files is an error (never silently replaced);
2. Fashion-MNIST only: the Debian package `dataset-fashion-mnist`
   (:data:`DEBIAN_FASHION_MNIST_DIR`);
3. TFDS `mnist` / `fashion_mnist` when already prepared under
   `tfds_data_dir` (TFDS default: `$TFDS_DATA_DIR` or
   `~/tensorflow_datasets`).  TFDS downloads nothing unless
   `tfds_download=True`; every TFDS error counts as "not available";
4. Keras's own copy: `keras.datasets.mnist` / `keras.datasets.fashion_mnist`
   `.load_data()`, which downloads the data once into `~/.keras/datasets`
   (`$KERAS_HOME`) and reads it from there afterwards -- so the default jobs
   run on a fresh machine with internet and no set-up.  `MTL_TF_DOWNLOAD=0`
   turns this off (the test suite does); a failed download counts as "not
   available" and its reason enters the error.

When none works, :class:`SourceNotFoundError` names every way and why each
one failed.

Cache: the composed uint8 arrays of all three splits are built once per
parameter set and stored as `<cache>/multi_digits/<name>-<protocol>-seed<seed>-<key>.npz`
with a JSON sidecar (same stem, `.json`) holding the generation parameters
and a SHA-256 per array.  `<cache>` is `cache_dir`, else `$MTL_TF_CACHE`,
else `~/.cache/mtl_tf`; `<key>` hashes the parameters (data set, protocol,
seed, val_fraction, pareto sizes, format version and a fingerprint of each
source: path, size and mtime of the IDX files, or TFDS name, version and
directory).  Changed parameters give another file; a checksum mismatch or an
unreadable file is rebuilt with a warning.  Both files are written atomically
(temporary, fsync, rename: never a partial file), and a build first deletes the
temporaries a killed build left; :mod:`mtl_tf.data._cache` holds these rules.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtl_tf.data import _cache
from mtl_tf.data._cache import CACHE_ENV, DEFAULT_CACHE_DIR  # noqa: F401
# How composites are made: its public names are this module's too.
from mtl_tf.data._digit_composites import (  # noqa: F401
    CANVAS_SIZE, ITEM_SIZE, PARETO_LEFT_OFFSETS, PARETO_RIGHT_OFFSETS, PIXEL_SCALES, PROTOCOLS, SENER_MEAN,
    SENER_OFFSETS, SENER_STD, SPLITS, check_pixel_scale, compose_pairs, nearest_index, nearest_resize,
)
from mtl_tf.data._digit_composites import check_choice as _check_choice
from mtl_tf.data._digit_composites import compose_split as _compose_split
from mtl_tf.data._digit_composites import preprocess as _preprocess
# Where the MNIST / Fashion-MNIST sources are found: its public names are this module's too.
from mtl_tf.data._digit_sources import (  # noqa: F401
    DATASETS, DEBIAN_FASHION_MNIST_DIR, NUM_CLASSES, SourceNotFoundError, resolve_sources,
)

__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "IMAGE_SHAPES",
    "MultiDigitsDatasets",
    "NUM_CLASSES",
    "PARETO_SIZES",
    "PIXEL_SCALES",
    "PROTOCOLS",
    "SPLITS",
    "SourceNotFoundError",
    "TASKS",
    "cache_path",
    "check_pixel_scale",
    "compose_pairs",
    "load_multi_digits",
    "load_multi_digits_arrays",
    "multi_digits_datasets",
    "nearest_resize",
    "resolve_sources",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, str] = ("left", "right")
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "sener": (28, 28, 1),
    "pareto": (36, 36, 1),
}
PARETO_SIZES = (120_000, 10_000, 10_000)  # train, val, test
DEFAULT_VAL_FRACTION = 0.1

_FORMAT_VERSION = 1
_ARRAY_KEYS = ("images", "left", "right", "left_index", "right_index", "offsets")


# --------------------------------------------------------------------------
# Cache.


def _cache_root(cache_dir) -> Path:
    return _cache.cache_root(cache_dir, "multi_digits")


def _params(name, protocol, seed, val_fraction, pareto_sizes, sources) -> dict:
    return {
        "format": _FORMAT_VERSION,
        "name": name,
        "protocol": protocol,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "sizes": [int(s) for s in pareto_sizes] if protocol == "pareto" else None,
        "left_source": sources[0].fingerprint,
        "right_source": sources[1].fingerprint,
    }


def _cache_stem(params: dict) -> str:
    return f"{params['name']}-{params['protocol']}-seed{params['seed']}-{_cache.cache_key(params)}"


def _read_cache(npz_path: Path, json_path: Path, params: dict, split: str):
    """The cached arrays of `split`, or `(None, reason)`; reason None = absent."""
    if not npz_path.exists() and not json_path.exists():
        return None, None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("params") != params:
            return None, f"its sidecar {json_path.name} records other parameters"
        out = {}
        with np.load(npz_path, allow_pickle=False) as npz:
            for key in _ARRAY_KEYS:
                full = f"{split}_{key}"
                array = npz[full]
                if _cache.array_checksum(array) != meta["checksums"][full]:
                    return None, f"checksum mismatch for array '{full}'"
                out[key] = array
        return out, None
    except Exception as e:  # missing half, truncated zip, bad JSON, ...
        return None, f"unreadable ({type(e).__name__}: {e})"


def cache_path(
    name: str,
    protocol: str = "sener",
    *,
    data_dir=None,
    mnist_dir=None,
    fashion_dir=None,
    seed: int = 0,
    cache_dir=None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    pareto_sizes=PARETO_SIZES,
    tfds_data_dir=None,
    tfds_download: bool = False,
) -> Path:
    """The `.npz` cache file for these parameters (the sidecar is `.json`)."""
    return _entry(
        name, protocol, seed, val_fraction, pareto_sizes, cache_dir, data_dir=data_dir, mnist_dir=mnist_dir,
        fashion_dir=fashion_dir, tfds_data_dir=tfds_data_dir, tfds_download=tfds_download,
    )[2]


def _entry(name, protocol, seed, val_fraction, pareto_sizes, cache_dir, **source_args):
    """`(sources, params, npz path)` of the cache entry."""
    sources = resolve_sources(name, **source_args)
    params = _params(name, protocol, seed, val_fraction, pareto_sizes, sources)
    return sources, params, _cache_root(cache_dir) / f"{_cache_stem(params)}.npz"


def _build_and_store(params, sources, npz_path: Path, json_path: Path) -> dict[str, np.ndarray]:
    start = time.perf_counter()
    left_data = sources[0].load()
    right_data = left_data if sources[1] is sources[0] else sources[1].load()
    same = params["left_source"] == params["right_source"]
    sizes = params["sizes"] or [0, 0, 0]
    arrays = {}
    for split, size in zip(SPLITS, sizes):
        part = _compose_split(
            split, params["protocol"], params["seed"], params["val_fraction"],
            size, left_data, right_data, same,
        )
        arrays.update({f"{split}_{k}": v for k, v in part.items()})
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    _cache.remove_stale_temporaries(npz_path.parent)
    _cache.atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    meta = {
        "params": params,
        "checksums": {k: _cache.array_checksum(v) for k, v in arrays.items()},
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "sources": [s.origin for s in sources],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _cache.atomic_write_json(json_path, meta)
    logger.info(
        "Built %s (%s) in %.1f s from %s.", npz_path, params["protocol"],
        time.perf_counter() - start, " and ".join(dict.fromkeys(s.origin for s in sources)),
    )
    return arrays


# --------------------------------------------------------------------------
# Public loaders.


def load_multi_digits_arrays(
    name: str,
    protocol: str = "sener",
    split: str = "train",
    *,
    data_dir=None,
    mnist_dir=None,
    fashion_dir=None,
    seed: int = 0,
    cache_dir=None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    pareto_sizes=PARETO_SIZES,
    max_examples: int | None = None,
    tfds_data_dir=None,
    tfds_download: bool = False,
) -> dict[str, np.ndarray]:
    """The composed split as NumPy arrays (built or read from the cache).

    Returns:
      `{"images": uint8 [n, H, W] (unnormalised), "left": int32 [n],
      "right": int32 [n], "left_index": int64 [n], "right_index": int64 [n],
      "offsets": int8 [n, 4]}`; the indices point into the source's training
      images for `train` / `val` and its test images for `test`; the
      offsets are (row, col) of the left then the right item on the 36x36
      canvas.  `max_examples` keeps the first examples only.
    """
    _check_choice("name", name, DATASETS)
    _check_choice("protocol", protocol, PROTOCOLS)
    _check_choice("split", split, SPLITS)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if protocol == "pareto" and (len(pareto_sizes) != 3 or min(pareto_sizes) < 1):
        raise ValueError(f"pareto_sizes must be three positive sizes, got {pareto_sizes}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    sources, params, npz_path = _entry(
        name, protocol, seed, val_fraction, pareto_sizes, cache_dir, data_dir=data_dir, mnist_dir=mnist_dir,
        fashion_dir=fashion_dir, tfds_data_dir=tfds_data_dir, tfds_download=tfds_download,
    )
    json_path = npz_path.with_suffix(".json")
    arrays, problem = _read_cache(npz_path, json_path, params, split)
    if arrays is None:
        if problem is not None:
            warnings.warn(f"Cache {npz_path} is corrupt or stale ({problem}); rebuilding it.")
        full = _build_and_store(params, sources, npz_path, json_path)
        arrays = {k: full[f"{split}_{k}"] for k in _ARRAY_KEYS}
    if max_examples is not None:
        arrays = {k: v[: int(max_examples)] for k, v in arrays.items()}
    return arrays


def load_multi_digits(
    name: str,
    protocol: str = "sener",
    split: str = "train",
    *,
    pixel_scale: str = "unit",
    **kwargs,
) -> tf.data.Dataset:
    """The split as an unbatched, unshuffled `tf.data.Dataset`.

    Elements are `(image float32 [H, W, 1], {"left": int32, "right": int32})`
    with `[H, W] = IMAGE_SHAPES[protocol][:2]`, pixels scaled by
    `pixel_scale` (see the module doc; `"raw"` with `sener` is a
    `ValueError`).  Other keyword arguments are those of
    :func:`load_multi_digits_arrays` (`data_dir`, `mnist_dir`,
    `fashion_dir`, `seed`, `cache_dir`, `val_fraction`,
    `pareto_sizes`, `max_examples`, `tfds_data_dir`, `tfds_download`).
    """
    prep = _preprocess(protocol, pixel_scale)
    arrays = load_multi_digits_arrays(name, protocol, split, **kwargs)
    ds = tf.data.Dataset.from_tensor_slices(
        (arrays["images"], {task: arrays[task] for task in TASKS})
    )
    return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


MultiDigitsDatasets = collections.namedtuple(
    "MultiDigitsDatasets", ["train", "val", "test", "sizes", "image_shape"]
)
MultiDigitsDatasets.__doc__ = (
    "Batched train / val / test datasets, their example counts (dict) and the image shape."
)


def _batched(arrays, protocol, batch_size, *, shuffle_seed, drop_remainder, pixel_scale):
    images = tf.constant(arrays["images"])
    labels = {task: tf.constant(arrays[task]) for task in TASKS}
    n = int(arrays["images"].shape[0])
    ds = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    prep = _preprocess(protocol, pixel_scale)

    def gather(idx):
        return prep(tf.gather(images, idx), {t: tf.gather(v, idx) for t, v in labels.items()})

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def multi_digits_datasets(
    name: str,
    protocol: str = "sener",
    batch_size: int = 256,
    *,
    eval_batch_size: int | None = None,
    seed: int = 0,
    shuffle_seed: int | None = None,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    drop_remainder: bool = False,
    pixel_scale: str = "unit",
    **kwargs,
) -> MultiDigitsDatasets:
    """Batched train / val / test datasets, ready for `model.fit`.

    The training set is reshuffled every epoch, in an order fixed by
    `shuffle_seed` (default `seed`); val and test keep their order.  All
    three end with `prefetch(tf.data.AUTOTUNE)`.  `seed` also fixes the
    composition; `pixel_scale` (`"unit"` or `"raw"`, see the module doc)
    the input range; other keyword arguments go to
    :func:`load_multi_digits_arrays`.  `max_train_examples` caps the training
    set, `max_eval_examples` each of val and test.

    Returns:
      `MultiDigitsDatasets(train, val, test, sizes, image_shape)`.

    Raises:
      ValueError: an unknown `pixel_scale`, or `"raw"` with `sener`.
    """
    if "max_examples" in kwargs:
        raise TypeError("use max_train_examples / max_eval_examples")
    check_pixel_scale(protocol, pixel_scale)
    eval_batch_size = eval_batch_size or batch_size
    shuffle_seed = seed if shuffle_seed is None else shuffle_seed
    out, sizes = {}, {}
    for split in SPLITS:
        cap = max_train_examples if split == "train" else max_eval_examples
        arrays = load_multi_digits_arrays(
            name, protocol, split, seed=seed, max_examples=cap, **kwargs
        )
        sizes[split] = int(arrays["images"].shape[0])
        out[split] = _batched(
            arrays,
            protocol,
            batch_size if split == "train" else eval_batch_size,
            shuffle_seed=shuffle_seed if split == "train" else None,
            drop_remainder=drop_remainder if split == "train" else False,
            pixel_scale=pixel_scale,
        )
    return MultiDigitsDatasets(out["train"], out["val"], out["test"], sizes, IMAGE_SHAPES[protocol])
