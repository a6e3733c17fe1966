"""The file index of :mod:`mtl_tf.data.cityscapes`: the official layout, checked before training.

Which files make an example, and the checks of their presence, PNG bit depth
and size, as the module doc of :mod:`mtl_tf.data.cityscapes` (which exports
these names) describes them; every failure names the file.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
DISPARITY_SUFFIX = "_disparity.png"


class CityscapesFormatError(ValueError):
    """A Cityscapes file is not what the official layout says it is."""


class CityscapesMissingFileError(CityscapesFormatError, FileNotFoundError):
    """A file the official layout requires is missing."""


@dataclasses.dataclass(frozen=True)
class CityscapesFiles:
    """The four files of one example."""

    image: str
    label_ids: str
    instance_ids: str
    disparity: str
    city: str


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
# role -> (suffix, bit depth, allowed PNG colour types)
ROLES = {
    "image": (IMAGE_SUFFIX, 8, (2, 6)),
    "label_ids": (LABEL_SUFFIX, 8, (0,)),
    "instance_ids": (INSTANCE_SUFFIX, 16, (0,)),
    "disparity": (DISPARITY_SUFFIX, 16, (0,)),
}


def png_header(path) -> tuple[int, int, int, int]:
    """`(height, width, bit_depth, colour_type)` from a PNG's IHDR chunk.

    Raises:
      CityscapesFormatError: the file is not a PNG (naming it).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise CityscapesFormatError(f"{path}: not a PNG file (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width, head[24], head[25]


def _check_pngs(files: CityscapesFiles) -> None:
    sizes = {}
    for role, (_, depth, colour_types) in ROLES.items():
        path = getattr(files, role)
        height, width, bit_depth, colour_type = png_header(path)
        if bit_depth != depth or colour_type not in colour_types:
            expected = " or ".join(_COLOR_TYPES[c] for c in colour_types)
            raise CityscapesFormatError(
                f"{path}: a {bit_depth}-bit {_COLOR_TYPES.get(colour_type, colour_type)} PNG; "
                f"expected a {depth}-bit {expected} PNG as in the official Cityscapes release"
            )
        sizes[role] = (height, width)
    image_size = sizes["image"]
    for role, size in sizes.items():
        if size != image_size:
            raise CityscapesFormatError(
                f"{getattr(files, role)}: {size[0]}x{size[1]} pixels (height x width), but its image "
                f"{files.image} is {image_size[0]}x{image_size[1]}; every file of an example must "
                "have the image's size"
            )


def find_cityscapes_files(root, split: str, *, cities=None, exclude_cities=(), check: bool = True) -> list:
    """The examples of `split` in the official layout, sorted by image path.

    Args:
      root: the directory holding `leftImg8bit/`, `gtFine/` and `disparity/`.
      split: "train", "val" or "test".
      cities: keep only these cities (None: all).
      exclude_cities: drop these cities.
      check: read the PNG headers and check bit depths and sizes.

    Returns:
      a list of :class:`CityscapesFiles`.

    Raises:
      CityscapesMissingFileError: a directory, an image's partner file or a
        labelIds file's image is missing (naming it).
      CityscapesFormatError: a file has the wrong size or format (naming it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Cityscapes split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    image_dir = root / "leftImg8bit" / split
    for directory in (image_dir, root / "gtFine" / split, root / "disparity" / split):
        if not directory.is_dir():
            raise CityscapesMissingFileError(
                f"{directory}: directory not found; expected the official Cityscapes layout under {root}: "
                f"leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX}, gtFine/{split}/<city>/*{LABEL_SUFFIX} and "
                f"*{INSTANCE_SUFFIX}, disparity/{split}/<city>/*{DISPARITY_SUFFIX}"
            )
    wanted = None if cities is None else set(cities)
    excluded = set(exclude_cities or ())
    known_cities = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    for city in sorted((wanted or set()) | excluded):
        if city not in known_cities:
            raise ValueError(f"city {city!r} is not in {image_dir}; cities there: {known_cities}")
    examples = []
    for city in known_cities:
        if (wanted is not None and city not in wanted) or city in excluded:
            continue
        images = sorted((image_dir / city).glob("*" + IMAGE_SUFFIX))
        stems = {p.name[: -len(IMAGE_SUFFIX)] for p in images}
        for label in sorted((root / "gtFine" / split / city).glob("*" + LABEL_SUFFIX)):
            stem = label.name[: -len(LABEL_SUFFIX)]
            if stem not in stems:
                raise CityscapesMissingFileError(
                    f"{label}: a label without its image; expected {image_dir / city / (stem + IMAGE_SUFFIX)}"
                )
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            paths = {
                "label_ids": root / "gtFine" / split / city / (stem + LABEL_SUFFIX),
                "instance_ids": root / "gtFine" / split / city / (stem + INSTANCE_SUFFIX),
                "disparity": root / "disparity" / split / city / (stem + DISPARITY_SUFFIX),
            }
            for role, path in paths.items():
                if not path.is_file():
                    raise CityscapesMissingFileError(f"{path}: missing ({role.replace('_', ' ')} of image {image})")
            files = CityscapesFiles(str(image), *(str(paths[r]) for r in ("label_ids", "instance_ids", "disparity")), city)
            if check:
                _check_pngs(files)
            examples.append(files)
    if not examples:
        raise CityscapesMissingFileError(f"{image_dir}: no *{IMAGE_SUFFIX} images found for split {split!r}")
    return examples
