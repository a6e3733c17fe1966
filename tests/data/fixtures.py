"""Test helpers: IDX files written byte by byte, and small MNIST-like data sets.

The writer here is independent of ``mtl_tf.data.idx`` on purpose, so the
reader is checked against the format, not against its own writer.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# dtype -> IDX type code (the format is big-endian).
_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}

OFFICIAL_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: 0x0000, type code, ndim, sizes, big-endian payload."""
    array = np.asarray(array)
    header = b"\x00\x00" + bytes([_CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes(order="C")


def write_raw(path: Path, payload: bytes, gz: bool = False) -> Path:
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_idx_file(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    return write_raw(path, idx_bytes(array), gz)


def make_source(n_train: int = 200, n_test: int = 100, *, seed: int = 0, style: str = "digits") -> dict:
    """Small MNIST-like arrays with known patterns.

    Item ``j`` of class ``k`` is blank except for a bar whose position depends
    on ``k`` (horizontal for ``style="digits"``, vertical for ``"fashion"``),
    drawn with an intensity that depends on ``j``, plus a few random pixels so
    that no two items are equal.  Labels are balanced (every class present).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for j, k in enumerate(labels):
            value = 40 + (j * 7) % 200
            lo = 2 + 2 * int(k)
            if style == "digits":
                images[j, lo : lo + 3, 4:24] = value
            else:
                images[j, 4:24, lo : lo + 3] = value
            rows, cols = rng.integers(0, 28, (2, 5))
            images[j, rows, cols] = rng.integers(1, 256, 5)
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def write_idx_dataset(directory: Path, arrays: dict, *, gz: bool = True) -> Path:
    """Writes ``arrays`` under the official file names (``.gz`` when ``gz``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for role, name in OFFICIAL_NAMES.items():
        write_idx_file(directory / (name + (".gz" if gz else "")), arrays[role], gz)
    return directory


def place_by_hand(left: np.ndarray, right: np.ndarray, offsets, canvas: int = 36) -> np.ndarray:
    """One composite, pixel by pixel: left at (r1, c1), right at (r2, c2), max on overlap."""
    r1, c1, r2, c2 = (int(o) for o in offsets)
    out = np.zeros((canvas, canvas), np.uint8)
    out[r1 : r1 + 28, c1 : c1 + 28] = left
    window = out[r2 : r2 + 28, c2 : c2 + 28]
    out[r2 : r2 + 28, c2 : c2 + 28] = np.where(right > window, right, window)
    return out


def resize_nearest_by_hand(image: np.ndarray, size: int = 28) -> np.ndarray:
    """PIL-style nearest neighbour: target pixel i samples source floor((i + 0.5) * src / size)."""
    src = image.shape[0]
    pick = [min(int((i + 0.5) * src / size), src - 1) for i in range(size)]
    return np.array([[image[r, c] for c in pick] for r in pick], dtype=image.dtype)
