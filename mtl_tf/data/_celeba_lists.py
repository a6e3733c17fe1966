"""The official CelebA list files, `list_attr_celeba.txt` and `list_eval_partition.txt`.

Their format, and the errors (naming file and line) for files that depart from
it, are described in :mod:`mtl_tf.data.celeba`, which exports these names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)
PARTITION_IDS = {"0": "train", "1": "val", "2": "test"}


class CelebAFormatError(ValueError):
    """A CelebA list file or image does not have the official format."""


def _read_lines(path: Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CelebAFormatError(f"{path}: not a text file ({e}); expected the official CelebA list file") from e


def read_attribute_file(path) -> tuple[tuple[str, ...], list[str], np.ndarray, list[int]]:
    """Parses `list_attr_celeba.txt`.

    Returns:
      `(names, filenames, labels, line_numbers)`: the attribute names of line
      2, the image file names, `uint8 [n, len(names)]` labels in {0, 1} (-1
      -> 0) and the 1-based line of each row.

    Raises:
      CelebAFormatError: naming the file and line of the first problem.
    """
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2:
        raise CelebAFormatError(
            f"{path}: has {len(lines)} line(s); expected the image count on line 1, "
            "the 40 attribute names on line 2, then one row per image"
        )
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise CelebAFormatError(
            f"{path}, line 1: expected the number of images, found {lines[0].strip()[:80]!r}"
        ) from None
    names = tuple(lines[1].split())
    if names != ATTRIBUTES:
        missing = [a for a in ATTRIBUTES if a not in names]
        unknown = [a for a in names if a not in ATTRIBUTES]
        raise CelebAFormatError(
            f"{path}, line 2: expected the {len(ATTRIBUTES)} official attribute names in the "
            f"official order; found {len(names)} names (missing: {missing}, unknown: {unknown}"
            + (", same names in another order" if not missing and not unknown else "") + ")"
        )
    width = len(names) + 1
    filenames, line_numbers, tokens = [], [], []
    first_line = {}
    for number, line in enumerate(lines[2:], start=3):
        columns = line.split()
        if not columns:
            continue
        if len(columns) != width:
            raise CelebAFormatError(
                f"{path}, line {number}: expected {width} columns (a file name and "
                f"{len(names)} values -1/1), found {len(columns)}"
            )
        name = columns[0]
        if name in first_line:
            raise CelebAFormatError(
                f"{path}, line {number}: image {name} is listed again (first on line {first_line[name]})"
            )
        first_line[name] = number
        filenames.append(name)
        line_numbers.append(number)
        tokens.append(columns[1:])
    if len(filenames) != declared:
        raise CelebAFormatError(
            f"{path}, line 1: declares {declared} images but the file lists {len(filenames)} "
            "(a truncated or edited file?)"
        )
    values = np.asarray(tokens, dtype=str).reshape(len(filenames), len(names))
    positive, negative = values == "1", values == "-1"
    bad = ~(positive | negative)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise CelebAFormatError(
            f"{path}, line {line_numbers[row]}: attribute {names[column]} (column {column + 2}) "
            f"is {str(values[row, column])!r}; expected -1 or 1"
        )
    return names, filenames, positive.astype(np.uint8), line_numbers


def read_partition_file(path) -> tuple[list[str], list[str], list[int]]:
    """Parses `list_eval_partition.txt`: `(filenames, splits, line_numbers)`.

    Raises:
      CelebAFormatError: a row without exactly two columns, a value other than
        0 / 1 / 2 or a duplicate image, naming the file and line.
    """
    path = Path(path)
    filenames, splits, line_numbers = [], [], []
    first_line = {}
    for number, line in enumerate(_read_lines(path), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) != 2:
            raise CelebAFormatError(
                f"{path}, line {number}: expected 2 columns (a file name and 0, 1 or 2), found {len(columns)}"
            )
        name, value = columns
        if value not in PARTITION_IDS:
            raise CelebAFormatError(
                f"{path}, line {number}: partition of {name} is {value!r}; expected 0 (train), 1 (val) or 2 (test)"
            )
        if name in first_line:
            raise CelebAFormatError(
                f"{path}, line {number}: image {name} is listed again (first on line {first_line[name]})"
            )
        first_line[name] = number
        filenames.append(name)
        splits.append(PARTITION_IDS[value])
        line_numbers.append(number)
    if not filenames:
        raise CelebAFormatError(f"{path}: lists no images; expected rows 'filename 0|1|2'")
    return filenames, splits, line_numbers
