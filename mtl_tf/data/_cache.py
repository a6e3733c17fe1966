"""The on-disk cache the data modules share: where it is, what names an entry, how an entry is written.

Directory: `cache_dir` when the caller gives one, else `$MTL_TF_CACHE`
(:data:`CACHE_ENV`), else `~/.cache/mtl_tf` (:data:`DEFAULT_CACHE_DIR`); each
data module keeps its entries in its own sub-directory.

Keys: :func:`cache_key` hashes the generation parameters of an entry, which
include a fingerprint of every source it is made from (:func:`file_fingerprint`:
path, size and modification time of a file or directory; for TFDS its name,
version and directory). A changed parameter or a changed source file therefore
names another entry, and a stale one is never read; a module that changes what
it writes raises its format version, which enters the key.

Checksums: :func:`array_checksum` (SHA-256 over dtype, shape and bytes) lets a
module check an entry's arrays against the sidecar written with them.

Writing: :func:`atomic_paths` (and :func:`atomic_write`, :func:`atomic_write_json`
built on it) writes to temporary names in the target directory, flushes them to
disk (`fsync`), and only then renames them over the targets, so a reader sees
the old entry or the complete new one, never a partial file; on any exception
(or interrupt) the temporaries are removed. A process killed mid-write leaves
its temporaries behind; :func:`remove_stale_temporaries` deletes those whose
writer is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "STALE_TEMPORARY_SECONDS",
    "array_checksum",
    "atomic_paths",
    "atomic_write",
    "atomic_write_json",
    "cache_key",
    "cache_root",
    "file_fingerprint",
    "files_fingerprint",
    "remove_stale_temporaries",
    "temporary_path",
]

CACHE_ENV = "MTL_TF_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/mtl_tf")
# A temporary untouched for this long is abandoned whoever wrote it (another
# machine sharing the cache, whose processes cannot be checked from here).
STALE_TEMPORARY_SECONDS = 24 * 3600

# ".{target name}.{host}-{pid}.{32 hex}.tmp"; temporaries of older versions lack "{host}-".
_TEMPORARY = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<host>[^.]*)-)?(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


def cache_root(cache_dir=None, subdir: str | None = None) -> Path:
    """`cache_dir`, else `$MTL_TF_CACHE`, else `~/.cache/mtl_tf`; then `subdir` below it."""
    root = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    root = Path(root).expanduser()
    root = root / subdir if subdir else root
    # Every lookup cleans what crashed writers left, not only a new build:
    # a cache that is only ever read would keep their temporaries for good.
    remove_stale_temporaries(root)
    return root


def file_fingerprint(path) -> str:
    """`"{resolved path}:{size}:{mtime in ns}"` of a file or directory (it must exist)."""
    path = Path(path)
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def files_fingerprint(kind: str, paths) -> str:
    """`"{kind}|{fingerprint}|..."` over `paths` in the order given."""
    return "|".join([kind, *(file_fingerprint(p) for p in paths)])


def cache_key(params: dict, length: int = 16) -> str:
    """Hex digest of the JSON of `params` (keys sorted): the same parameters give the same key."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:length]


def array_checksum(array: np.ndarray) -> str:
    """SHA-256 over the dtype, the shape and the C-order bytes of `array`."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temporary_path(path) -> Path:
    """A fresh hidden temporary name next to `path`, naming this host and process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # not every system opens directories; the data are synced already
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(*paths) -> Iterator[tuple[Path, ...]]:
    """Yields a temporary path for each target; the body creates and fills them.

    When the body returns, every temporary is flushed to disk and renamed over
    its target, in the order given, and the directories are synced. When it
    raises (`KeyboardInterrupt` included), the temporaries are deleted and the
    targets are left as they were.
    """
    targets = [Path(p) for p in paths]
    temporaries = tuple(temporary_path(p) for p in targets)
    try:
        yield temporaries
        for tmp in temporaries:
            _fsync(tmp)
        for tmp, target in zip(temporaries, targets):
            os.replace(tmp, target)
        for directory in dict.fromkeys(t.parent for t in targets):
            _fsync(directory, directory=True)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def atomic_write(path, write: Callable[[BinaryIO], object]) -> None:
    """Writes `path` through `write(binary file)`, atomically (see :func:`atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        with open(tmp, "xb") as f:
            write(f)


def atomic_write_json(path, data) -> None:
    """Writes `data` as indented JSON with sorted keys, atomically."""
    text = json.dumps(data, indent=1, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def _running_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(directory, max_age: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Deletes the temporaries of :func:`temporary_path` left in `directory` by writers that are gone.

    A temporary is gone when its process (on this host) no longer runs, or when
    nobody has touched it for `max_age` seconds (a writer on another host, or
    one of an older version that did not record its host). Returns what was deleted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host, now, removed = _host(), time.time(), []
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its writer renamed or deleted it meanwhile
            continue
        same_host = match["host"] == host
        if (same_host and not _running_here(int(match["pid"]))) or age > max_age:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
