"""Where a data set's files come from: the rules the data modules share.

A data module looks for its data, in order, in

1. the directories the caller names (`data_dir` and per-source arguments,
   the `--data_dir` flag of the launch scripts); a directory that is given
   but lacks the files is an error, never silently replaced by another source;
2. fixed system directories (files a Debian package installs);
3. a TFDS data set that is already prepared (:func:`find_tfds`); nothing is
   downloaded through TFDS unless the caller asks (`tfds_download=True`), and
   every TFDS error counts as "not available";
4. for the data sets Keras ships a loader for (MNIST, Fashion-MNIST): that
   loader's download (`keras.datasets.<name>.load_data()`, kept in
   `~/.keras/datasets`, `$KERAS_HOME`), so that a fresh machine with internet
   runs the default jobs with no set-up. It is on by default; `MTL_TF_DOWNLOAD=0`
   (:data:`DOWNLOAD_ENV`, :func:`download_refusal`) turns it off, as the test
   suite does, so that no test depends on the network.

When none holds the data, the error (a :class:`SourceNotFoundError`) names
every way to provide it (:func:`how_to_provide`, :func:`tfds_way`) and what was
tried.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

__all__ = [
    "DOWNLOAD_ENV",
    "SourceNotFoundError",
    "TfdsDataset",
    "download_refusal",
    "find_first",
    "find_tfds",
    "how_to_provide",
    "tfds_way",
]


DOWNLOAD_ENV = "MTL_TF_DOWNLOAD"
_OFF = ("0", "false", "no", "off")


class SourceNotFoundError(FileNotFoundError):
    """A data set is nowhere to be found; the message names every way to provide it."""


def download_refusal() -> str | None:
    """Why the download fallback (rule 4) is off, or None when it may run.

    It is off when the environment variable `MTL_TF_DOWNLOAD` is one of
    `0`, `false`, `no`, `off` (any case); unset or anything else allows it.
    """
    value = os.environ.get(DOWNLOAD_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return f"download turned off by {DOWNLOAD_ENV}={value}"
    return None


def find_first(root, candidates: Sequence[str], *, directory: bool = False) -> tuple[Path | None, list[Path]]:
    """The first of `root / candidate` that is a file (a directory with `directory=True`).

    Returns:
      `(found or None, every path looked at)`.
    """
    root = Path(root)
    paths = [root / c for c in candidates]
    found = next((p for p in paths if (p.is_dir() if directory else p.is_file())), None)
    return found, paths


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A prepared TFDS data set: its builder, `origin` (name, version and directory, for logs and
    cache keys) and `info` (what the caller's `inspect` returned)."""

    builder: object
    origin: str
    info: object = None


def find_tfds(
    name: str, data_dir=None, download: bool = False, inspect: Callable | None = None
) -> tuple[TfdsDataset | None, str]:
    """The prepared TFDS data set `name` under `data_dir` (TFDS default: `$TFDS_DATA_DIR` or
    `~/tensorflow_datasets`), or `(None, reason)`; never raises.

    `download=True` prepares it when it is not. `inspect(builder)` runs in
    the same guard (its errors, too, make the data set unavailable) and its
    result is `info`.
    """
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            if not download:
                return None, f"TFDS '{name}' is not prepared in {builder.data_dir}"
            builder.download_and_prepare()
        origin = f"TFDS '{name}' {builder.version} in {builder.data_dir}"
        info = inspect(builder) if inspect is not None else None
    except Exception as e:  # no network, quota, broken install, ...: just unavailable
        return None, f"TFDS '{name}' unavailable ({type(e).__name__}: {e})"
    return TfdsDataset(builder, origin, info), ""


def tfds_way(name: str, note: str = "") -> str:
    """How to provide the TFDS data set `name`, as a line of :func:`how_to_provide`."""
    return (
        f"the TFDS data set '{name}', prepared beforehand on a machine with network "
        f"(python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}').download_and_prepare()\", "
        "then copy ~/tensorflow_datasets or set TFDS_DATA_DIR / tfds_data_dir), "
        "or tfds_download=True to let this call download it" + (f" ({note})" if note else "")
    )


def how_to_provide(what: str, ways: Sequence[str], tried: Sequence[str] = ()) -> str:
    """`"Provide {what} in one of these ways:"`, one line per way, then `"Tried: ..."` when given."""
    lines = [f"Provide {what} in one of these ways:"]
    lines += [f"  * {way}{';' if i < len(ways) - 1 else '.'}" for i, way in enumerate(ways)]
    if tried:
        lines.append("Tried: " + "; ".join(tried) + ".")
    return "\n".join(lines)
