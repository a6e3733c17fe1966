"""How :mod:`mtl_tf.data.multi_digits` makes its composites (its module doc states the rules).

Placement and overlap of two items on a canvas, nearest-neighbour resizing,
the item range of each split, the pairing of items per protocol (vectorised
NumPy), and the pixel scaling the pipelines apply to the cached uint8
composites.  The public names are exported by :mod:`mtl_tf.data.multi_digits`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

PROTOCOLS: tuple[str, ...] = ("sener", "pareto")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SENER_MEAN = 0.1307
SENER_STD = 0.3081
SENER_OFFSETS = (0, 0, 6, 6)  # (row, col) of the left item, then of the right item.
PARETO_LEFT_OFFSETS = (0, 4)  # inclusive range, rows and cols drawn independently
PARETO_RIGHT_OFFSETS = (4, 8)
PIXEL_SCALES: tuple[str, ...] = ("unit", "raw")
CANVAS_SIZE = 36
ITEM_SIZE = 28


def check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


def compose_pairs(
    left: np.ndarray,
    right: np.ndarray,
    offsets: np.ndarray,
    canvas_size: int = CANVAS_SIZE,
) -> np.ndarray:
    """Places pairs of images on blank canvases, overlapping by element-wise max.

    Args:
      left, right: `uint8 [n, h, w]` items.
      offsets: `int [n, 4]` or `[4]`: (row, col) of the top-left corner of
        the left item, then of the right item.
      canvas_size: side of the square canvas.

    Returns:
      `uint8 [n, canvas_size, canvas_size]`.
    """
    left, right = np.asarray(left), np.asarray(right)
    n, h, w = left.shape
    if right.shape != left.shape:
        raise ValueError(f"left and right items differ in shape: {left.shape} vs {right.shape}")
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.int64), (n, 4))
    if n and (offsets.min() < 0 or max(offsets[:, [0, 2]].max() + h, offsets[:, [1, 3]].max() + w) > canvas_size):
        raise ValueError(f"offsets place items outside the {canvas_size}x{canvas_size} canvas")
    canvas = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    for items, rows, cols in ((left, offsets[:, 0], offsets[:, 1]), (right, offsets[:, 2], offsets[:, 3])):
        keys = rows * (canvas_size + 1) + cols
        for key in np.unique(keys):
            sel = np.flatnonzero(keys == key)
            r, c = divmod(int(key), canvas_size + 1)
            window = canvas[sel, r : r + h, c : c + w]
            canvas[sel, r : r + h, c : c + w] = np.maximum(window, items[sel])
    return canvas


def nearest_index(src: int, dst: int) -> np.ndarray:
    """Source pixel of each target pixel under nearest-neighbour resizing.

    Pixel centres are aligned (`floor((i + 0.5) * src / dst)`), as in PIL,
    `scipy.misc.imresize(interp="nearest")` and `tf.image.resize`.
    """
    return np.minimum(np.floor((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def nearest_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of `[n, H, W]` images to `[n, size, size]`."""
    images = np.asarray(images)
    rows = nearest_index(images.shape[1], size)
    cols = nearest_index(images.shape[2], size)
    return images[:, rows[:, None], cols[None, :]]


def _spread_indices(rng: np.random.Generator, n_items: int, n: int) -> np.ndarray:
    """`n` draws from `range(n_items)`: concatenated permutations, truncated."""
    reps = -(-n // n_items)
    return np.concatenate([rng.permutation(n_items) for _ in range(reps)])[:n]


def _split_range(n_items: int, val_fraction: float, split: str) -> tuple[int, int]:
    """Item range of a split inside its source pool (train pool for train/val)."""
    if split == "test":
        return 0, n_items
    n_val = int(round(n_items * val_fraction))
    return (0, n_items - n_val) if split == "train" else (n_items - n_val, n_items)


def compose_split(
    split: str,
    protocol: str,
    seed: int,
    val_fraction: float,
    size: int,
    left_src: dict[str, np.ndarray],
    right_src: dict[str, np.ndarray],
    same_source: bool,
) -> dict[str, np.ndarray]:
    pool = "test" if split == "test" else "train"
    l_images, l_labels = left_src[f"{pool}_images"], left_src[f"{pool}_labels"]
    r_images, r_labels = right_src[f"{pool}_images"], right_src[f"{pool}_labels"]
    l_lo, l_hi = _split_range(len(l_labels), val_fraction, split)
    r_lo, r_hi = _split_range(len(r_labels), val_fraction, split)
    if l_hi <= l_lo or r_hi <= r_lo:
        raise ValueError(
            f"split '{split}' gets no source items (val_fraction={val_fraction}, "
            f"{len(l_labels)} / {len(r_labels)} items in the {pool} pool)"
        )
    rng = np.random.default_rng([seed, SPLITS.index(split), PROTOCOLS.index(protocol)])
    if protocol == "sener":
        l_idx = np.arange(l_lo, l_hi)
        r_idx = r_lo + np.resize(rng.permutation(r_hi - r_lo), l_idx.size)
        offsets = np.broadcast_to(np.array(SENER_OFFSETS, np.int8), (l_idx.size, 4)).copy()
    else:
        l_idx = l_lo + _spread_indices(rng, l_hi - l_lo, size)
        r_idx = r_lo + _spread_indices(rng, r_hi - r_lo, size)
        if same_source:
            if np.unique(r_labels[r_lo:r_hi]).size < 2:
                raise ValueError(f"split '{split}': need two distinct labels to pair items")
            for _ in range(10_000):
                clash = np.flatnonzero(l_labels[l_idx] == r_labels[r_idx])
                if clash.size == 0:
                    break
                r_idx[clash] = rng.integers(r_lo, r_hi, clash.size)
        lo1, hi1 = PARETO_LEFT_OFFSETS
        lo2, hi2 = PARETO_RIGHT_OFFSETS
        offsets = np.concatenate(
            [rng.integers(lo1, hi1 + 1, (size, 2)), rng.integers(lo2, hi2 + 1, (size, 2))], axis=1
        ).astype(np.int8)
    images = np.empty(
        (l_idx.size,) + ((ITEM_SIZE, ITEM_SIZE) if protocol == "sener" else (CANVAS_SIZE, CANVAS_SIZE)),
        dtype=np.uint8,
    )
    chunk = 16_384
    for start in range(0, l_idx.size, chunk):
        stop = start + chunk
        canvas = compose_pairs(
            l_images[l_idx[start:stop]], r_images[r_idx[start:stop]], offsets[start:stop]
        )
        images[start:stop] = nearest_resize(canvas, ITEM_SIZE) if protocol == "sener" else canvas
    return {
        "images": images,
        "left": l_labels[l_idx].astype(np.int32),
        "right": r_labels[r_idx].astype(np.int32),
        "left_index": l_idx.astype(np.int64),
        "right_index": r_idx.astype(np.int64),
        "offsets": offsets,
    }


def check_pixel_scale(protocol: str, pixel_scale: str) -> str:
    """Returns `pixel_scale` if `protocol` accepts it.

    Raises:
      ValueError: an unknown scale, or `"raw"` with the `sener` protocol,
        whose normalisation is fixed by its official loader.
    """
    check_choice("pixel_scale", pixel_scale, PIXEL_SCALES)
    if protocol == "sener" and pixel_scale != "unit":
        raise ValueError(
            f"pixel_scale={pixel_scale!r} does not apply to protocol 'sener', which always normalises as its "
            f"official loader does ((x / 255 - {SENER_MEAN}) / {SENER_STD}); use pixel_scale='unit' with "
            "protocol 'sener', or protocol 'pareto' for raw pixels"
        )
    return pixel_scale


def preprocess(protocol: str, pixel_scale: str = "unit"):
    check_pixel_scale(protocol, pixel_scale)

    def fn(images, labels):
        x = tf.cast(images, tf.float32)
        if pixel_scale == "unit":
            x = x / 255.0
        if protocol == "sener":
            x = (x - SENER_MEAN) / SENER_STD
        return x[..., tf.newaxis], labels

    return fn
