"""Reading (and writing) IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by a C-order payload in big-endian byte order:

* bytes 0-1: zero;
* byte 2: element type code (`0x08` uint8, `0x09` int8, `0x0B` int16,
  `0x0C` int32, `0x0D` float32, `0x0E` float64);
* byte 3: number of dimensions `ndim`;
* `ndim` big-endian uint32 sizes;
* the `prod(sizes)` elements.

Files may be gzip-compressed (recognised by their first two bytes, whatever
their name).  Every inconsistency raises a `ValueError` naming the file, what
was expected and what was found.

A data set in the official layout is four files in one directory (each
optionally `.gz`)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

:func:`find_idx_dataset` locates them and :func:`load_idx_dataset` reads and
checks them.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "IDX_DTYPES",
    "IDX_FILE_NAMES",
    "IdxDataset",
    "find_idx_dataset",
    "load_idx_dataset",
    "read_idx",
    "write_idx",
]

# Type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Role -> official file name (without the optional ".gz").
IDX_FILE_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip-compressed."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"{path}: corrupt or truncated gzip stream "
            f"(expected a complete gzip file, found {len(raw)} compressed bytes "
            f"that fail to decompress: {e})"
        ) from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (plain or gzip-compressed) into a NumPy array.

    Returns:
      An array with the header's shape and the element type in native byte
      order (`uint8` for the MNIST images and labels).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: bad magic number, unknown type code, header shorter than it
        claims, or a payload whose length does not match the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated IDX header (expected at least 4 bytes, found {len(data)})"
        )
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00":
        raise ValueError(
            f"{path}: bad IDX magic number (expected first two bytes 0x0000, "
            f"found 0x{zero.hex()}); not an IDX file"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"{path}: unknown IDX element type code (expected one of {known}, "
            f"found 0x{code:02X})"
        )
    if ndim == 0:
        raise ValueError(
            f"{path}: IDX header declares 0 dimensions (expected at least 1)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header (expected {header_len} bytes for "
            f"{ndim} dimensions, found {len(data)})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "trailing data in"
        raise ValueError(
            f"{path}: {what} IDX payload (expected {expected} bytes for shape "
            f"{tuple(shape)} of {dtype.name}, found {found})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Writes `array` as an IDX file; gzip-compressed when `compress` is true.

    `compress=None` compresses when the name ends in `.gz`.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): c for c, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(
            f"{path}: cannot write dtype {array.dtype} as IDX "
            f"(expected one of {', '.join(d.name for d in codes)})"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"{path}: IDX needs 1 to 255 dimensions, found {array.ndim}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """The four arrays of an MNIST-like data set (images `uint8 [N, H, W]`)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    files: dict[str, Path]


def find_idx_dataset(directory: str | os.PathLike) -> dict[str, Path]:
    """Locates the four official IDX files in `directory`.

    Each file may be plain or `.gz`; the plain one wins when both exist. The
    spelling with a dot before `idx` (`train-images.idx3-ubyte`), which
    several mirrors and unpacked archives use, is accepted too.

    Returns:
      `{"train_images": path, "train_labels": ..., "test_images": ...,
      "test_labels": ...}`.

    Raises:
      FileNotFoundError: naming the directory and every missing file.
    """
    directory = Path(directory).expanduser()
    found, missing = {}, []
    for role, name in IDX_FILE_NAMES.items():
        dotted = name.replace("-idx", ".idx")
        for candidate in (directory / name, directory / f"{name}.gz", directory / dotted, directory / f"{dotted}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{name}[.gz]")
    if missing:
        where = (
            f"directory {directory}"
            if directory.is_dir()
            else f"{directory} (which is not a directory)"
        )
        raise FileNotFoundError(
            f"missing IDX file(s) in {where}: {', '.join(missing)} "
            f"(expected all of {', '.join(n + '[.gz]' for n in IDX_FILE_NAMES.values())})"
        )
    return found


def has_idx_dataset(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds all four official IDX files."""
    try:
        find_idx_dataset(directory)
    except FileNotFoundError:
        return False
    return True


def load_idx_dataset(
    directory: str | os.PathLike, *, image_shape: tuple[int, int] | None = (28, 28)
) -> IdxDataset:
    """Reads and cross-checks the four IDX files of an MNIST-like data set.

    Args:
      directory: holds the four files named in :data:`IDX_FILE_NAMES`.
      image_shape: the expected `(H, W)` of each image; `None` accepts any.

    Raises:
      FileNotFoundError: missing files (all named).
      ValueError: an unreadable file, or images / labels of the wrong type,
        rank, shape or count.
    """
    files = find_idx_dataset(directory)
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ipath, lpath = files[f"{split}_images"], files[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"{ipath}: expected uint8 images of rank 3 [N, H, W], "
                f"found {images.dtype} of shape {images.shape}"
            )
        if image_shape is not None and images.shape[1:] != tuple(image_shape):
            raise ValueError(
                f"{ipath}: expected images of size {tuple(image_shape)}, "
                f"found {images.shape[1:]}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(
                f"{lpath}: expected uint8 labels of rank 1 [N], "
                f"found {labels.dtype} of shape {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{lpath}: expected {images.shape[0]} labels (one per image in "
                f"{ipath.name}), found {labels.shape[0]}"
            )
    return IdxDataset(files=files, **arrays)
