"""Test helpers: tiny Cityscapes and MTAN data sets written in the official layouts.

The writers use PIL and ``numpy.save`` directly (never the loaders' code), so
the loaders are checked against the formats, not against themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Label ids (official Cityscapes table) used by the fixtures.
ROAD, SKY, CAR, PERSON, CARAVAN, UNLABELED = 7, 23, 26, 24, 29, 0


def write_png(path: Path, array: np.ndarray) -> Path:
    """uint8 [H, W, 3] -> 8-bit RGB, uint8 [H, W] -> 8-bit grey, uint16 [H, W] -> 16-bit grey."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def cityscapes_example(height: int = 16, width: int = 32, seed: int = 0) -> dict:
    """One example with known contents.

    * label ids: road on the bottom half, sky on the top half, then
      a car (26001) on rows 2..5, cols 4..9 -> centroid (3.5, 6.5);
      a person (24002) on rows 9..12, cols 20..21 -> centroid (10.5, 20.5);
      a crowd of cars (instance id 26, < 1000) on rows 13..14, cols 0..3;
      a caravan (29001, train id ignored) on rows 1..2, cols 26..29;
      an unlabeled pixel at (15, 31).
    * disparity: p = 1 + 256 * d with d = column / 4, zero (invalid) in column 0.
    """
    rng = np.random.default_rng(seed)
    label = np.full((height, width), ROAD, np.uint8)
    label[: height // 2] = SKY
    instance = label.astype(np.uint16).copy()
    label[2:6, 4:10] = CAR
    instance[2:6, 4:10] = CAR * 1000 + 1
    label[9:13, 20:22] = PERSON
    instance[9:13, 20:22] = PERSON * 1000 + 2
    label[13:15, 0:4] = CAR
    instance[13:15, 0:4] = CAR
    label[1:3, 26:30] = CARAVAN
    instance[1:3, 26:30] = CARAVAN * 1000 + 1
    label[height - 1, width - 1] = UNLABELED
    instance[height - 1, width - 1] = UNLABELED
    columns = np.broadcast_to(np.arange(width), (height, width))
    disparity = (1 + 256 * columns // 4).astype(np.uint16)
    disparity[:, 0] = 0
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"image": image, "label_ids": label, "instance_ids": instance, "disparity": disparity}


def write_cityscapes_example(root: Path, split: str, city: str, frame: int, example: dict) -> dict:
    """Writes the four official files of one example; returns their paths."""
    root = Path(root)
    stem = f"{city}_000000_{frame:06d}"
    paths = {
        "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "label_ids": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "instance_ids": root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png",
        "disparity": root / "disparity" / split / city / f"{stem}_disparity.png",
    }
    for role, path in paths.items():
        write_png(path, example[role])
    return paths


def make_cityscapes(root: Path, cities=None, height: int = 16, width: int = 32) -> dict:
    """A small Cityscapes tree; ``cities``: split -> {city: number of images}.

    Returns split -> list of (paths, example) in sorted path order.
    """
    cities = cities or {"train": {"aachen": 2, "bochum": 2}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
    written = {}
    seed = 0
    for split, per_city in cities.items():
        rows = []
        for city, count in sorted(per_city.items()):
            for frame in range(count):
                example = cityscapes_example(height, width, seed)
                seed += 1
                rows.append((write_cityscapes_example(root, split, city, frame, example), example))
        written[split] = rows
    return written


# --------------------------------------------------------------------------
# MTAN preprocessed layout: {split}/{image,label,depth,normal}/{i}.npy, HWC float.


def mtan_example(height: int, width: int, num_classes: int, seed: int = 0, normals: bool = True) -> dict:
    """One example as MTAN stores it: image [H, W, 3] float in [0, 1], label [H, W] float
    with -1 = ignore, depth [H, W, 1] with 0 = invalid, normal [H, W, 3] unit vectors with 0 = invalid."""
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3)).astype(np.float32)
    label = rng.integers(0, num_classes, (height, width)).astype(np.float32)
    label[0, :3] = -1.0
    depth = rng.uniform(0.5, 10.0, (height, width, 1)).astype(np.float32)
    depth[1, :2] = 0.0
    out = {"image": image, "label": label, "depth": depth}
    if normals:
        normal = rng.normal(size=(height, width, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[2, :2] = 0.0
        out["normal"] = normal
    return out


def make_mtan(root: Path, sizes=None, height: int = 32, width: int = 64, num_classes: int = 13,
              normals: bool = True, label_folder: str = "label") -> dict:
    """Writes ``{root}/{split}/{kind}/{i}.npy``; returns split -> list of examples."""
    sizes = sizes or {"train": 3, "val": 2}
    written = {}
    for s, (split, n) in enumerate(sorted(sizes.items())):
        rows = []
        for i in range(n):
            example = mtan_example(height, width, num_classes, seed=100 * s + i, normals=normals)
            for kind, array in example.items():
                folder = label_folder if kind == "label" else kind
                path = Path(root) / split / folder / f"{i}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, array)
            rows.append(example)
        written[split] = rows
    return written
