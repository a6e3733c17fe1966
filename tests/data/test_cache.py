"""The shared cache plumbing: directory, keys, checksums, atomic writes, leftover temporaries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mtl_tf.data import _cache, celeba, multi_digits as md
from tests.data import fixtures


class Interrupted(Exception):
    """Stands for a crash, a full disk or a signal in the middle of a write."""


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


# -- where -------------------------------------------------------------------------------


def test_cache_root_argument_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "env"))
    assert _cache.cache_root(tmp_path / "arg", "celeba") == tmp_path / "arg" / "celeba"
    assert _cache.cache_root(None, "celeba") == tmp_path / "env" / "celeba"
    monkeypatch.delenv(_cache.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.cache_root() == tmp_path / "home" / ".cache" / "mtl_tf"
    assert md.CACHE_ENV == _cache.CACHE_ENV == "MTL_TF_CACHE"


# -- keys --------------------------------------------------------------------------------


def test_key_is_the_digest_of_the_sorted_parameters():
    params = {"b": [1, 2], "a": "x", "format": 1}
    expected = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    assert _cache.cache_key(params) == expected  # the key of the caches written so far
    assert _cache.cache_key(dict(reversed(list(params.items())))) == expected
    assert _cache.cache_key({**params, "a": "y"}) != expected


def test_changed_source_file_changes_the_key(tmp_path):
    source = tmp_path / "list.txt"
    source.write_text("first version\n")
    other = tmp_path / "other.txt"
    other.write_text("unchanged\n")

    def key():
        return _cache.cache_key({"format": 1, "source": _cache.files_fingerprint("files", [source, other])})

    first = key()
    assert key() == first  # nothing changed, same entry
    source.write_text("second, longer version\n")  # other content and size
    second = key()
    assert second != first
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, touched
    assert key() not in (first, second)
    fingerprint = _cache.file_fingerprint(source)
    assert fingerprint.startswith(str(source.resolve()) + ":") and fingerprint.endswith(str(source.stat().st_mtime_ns))


def test_multi_digits_key_follows_its_source_files(tmp_path):
    data = fixtures.write_idx_dataset(tmp_path / "mnist", fixtures.make_source(60, 30, seed=3))
    kw = {"data_dir": data, "cache_dir": tmp_path / "cache", "tfds_data_dir": tmp_path / "no_tfds"}
    before = md.cache_path("multi_mnist", "sener", **kw)
    assert md.cache_path("multi_mnist", "sener", **kw) == before
    labels = data / "t10k-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1_000_000_000))
    assert md.cache_path("multi_mnist", "sener", **kw) != before


# -- checksums ---------------------------------------------------------------------------


def test_checksum_covers_values_dtype_and_shape():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    base = _cache.array_checksum(a)
    assert _cache.array_checksum(a.copy()) == base
    assert _cache.array_checksum(np.asfortranarray(a)) == base  # C-order bytes, whatever the layout
    changed = a.copy()
    changed[1, 2] ^= 1
    assert _cache.array_checksum(changed) != base
    assert _cache.array_checksum(a.astype(np.int8)) != base
    assert _cache.array_checksum(a.reshape(4, 3)) != base


# -- atomic writes -----------------------------------------------------------------------


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_interrupted_write_leaves_no_partial_file(tmp_path, error):
    target = tmp_path / "entry.npz"

    def write(f):
        f.write(b"x" * 4096)  # half of the file is out ...
        raise error("stopped mid-write")  # ... when the writer dies

    with pytest.raises(error):
        _cache.atomic_write(target, write)
    assert _entries(tmp_path) == []  # neither the target nor a temporary

    target.write_bytes(b"the complete old entry")
    with pytest.raises(error):
        _cache.atomic_write(target, write)
    assert _entries(tmp_path) == ["entry.npz"] and target.read_bytes() == b"the complete old entry"


def test_atomic_paths_publish_all_targets_or_none(tmp_path):
    images, labels = tmp_path / "train-images.npy", tmp_path / "train-labels.npy"
    with pytest.raises(Interrupted):
        with _cache.atomic_paths(images, labels) as (images_tmp, labels_tmp):
            with open(images_tmp, "xb") as f:
                np.save(f, np.zeros((4, 2), np.uint8))
            raise Interrupted  # before the labels are written
    assert _entries(tmp_path) == []
    with _cache.atomic_paths(images, labels) as (images_tmp, labels_tmp):
        assert images_tmp.parent == tmp_path and images_tmp.name.startswith(".train-images.npy.")
        with open(images_tmp, "xb") as f:
            np.save(f, np.ones((4, 2), np.uint8))
        with open(labels_tmp, "xb") as f:
            np.save(f, np.arange(4))
    assert _entries(tmp_path) == ["train-images.npy", "train-labels.npy"]
    np.testing.assert_array_equal(np.load(labels), np.arange(4))


def test_data_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(a))) or real_replace(a, b))
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name the synced files")
    target = tmp_path / "meta.json"
    _cache.atomic_write_json(target, {"b": 1, "a": [2]})
    (synced_tmp, replace, synced_dir) = events
    assert synced_tmp[0] == "fsync" and replace == ("replace", synced_tmp[1])
    assert synced_dir == ("fsync", str(tmp_path))
    assert json.loads(target.read_text()) == {"a": [2], "b": 1}


def test_interrupted_multi_digits_build_leaves_no_partial_cache(tmp_path, monkeypatch):
    data = fixtures.write_idx_dataset(tmp_path / "mnist", fixtures.make_source(60, 30, seed=4))
    kw = {"data_dir": data, "cache_dir": tmp_path / "cache", "tfds_data_dir": tmp_path / "no_tfds"}
    real_savez = np.savez

    def savez_then_die(f, **arrays):
        f.write(b"PK\x03\x04 the first bytes of a zip")
        raise Interrupted

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.raises(Interrupted):
        md.load_multi_digits_arrays("multi_mnist", "sener", "test", **kw)
    assert _entries(tmp_path / "cache" / "multi_digits") == []
    monkeypatch.setattr(np, "savez", real_savez)
    arrays = md.load_multi_digits_arrays("multi_mnist", "sener", "test", **kw)
    assert arrays["images"].shape == (30, 28, 28)
    stem = md.cache_path("multi_mnist", "sener", **kw).stem
    assert _entries(tmp_path / "cache" / "multi_digits") == [f"{stem}.json", f"{stem}.npz"]


# -- leftover temporaries ----------------------------------------------------------------


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftover_temporaries_of_gone_writers_are_removed(tmp_path):
    host = _cache._host()
    token = "0" * 32
    mine = _cache.temporary_path(tmp_path / "mine.npz")  # a writer still running: this process
    dead = tmp_path / f".dead.npz.{host}-{_dead_pid()}.{token}.tmp"
    remote = tmp_path / f".remote.npz.otherhost-1.{token}.tmp"  # another machine: only by age
    remote_old = tmp_path / f".remote_old.npz.otherhost-1.{token}.tmp"
    legacy = tmp_path / f".legacy.npz.12345.{token}.tmp"  # older versions named no host
    legacy_old = tmp_path / f".legacy_old.npz.12345.{token}.tmp"
    kept = [tmp_path / "entry.npz", tmp_path / ".hidden", tmp_path / f".x.{token}.tmp"]
    for path in (mine, dead, remote, remote_old, legacy, legacy_old, *kept):
        path.write_bytes(b"partial")
    old = time.time() - _cache.STALE_TEMPORARY_SECONDS - 60
    for path in (remote_old, legacy_old):
        os.utime(path, (old, old))
    removed = _cache.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, remote_old, legacy_old])
    assert _entries(tmp_path) == sorted(p.name for p in (mine, remote, legacy, *kept))
    assert _cache.remove_stale_temporaries(tmp_path / "absent") == []


def test_building_an_entry_clears_leftovers_of_a_killed_build(tmp_path):
    data = fixtures.write_idx_dataset(tmp_path / "mnist", fixtures.make_source(60, 30, seed=5))
    kw = {"data_dir": data, "cache_dir": tmp_path / "cache", "tfds_data_dir": tmp_path / "no_tfds"}
    directory = tmp_path / "cache" / "multi_digits"
    directory.mkdir(parents=True)
    host = _cache._host()
    leftover = directory / f".multi_mnist-sener-seed0-0123456789abcdef.npz.{host}-{_dead_pid()}.{'f' * 32}.tmp"
    leftover.write_bytes(b"half a zip")
    md.load_multi_digits_arrays("multi_mnist", "sener", "val", **kw)
    assert not leftover.exists()


def test_celeba_decode_failing_mid_split_leaves_no_partial_cache(tmp_path, monkeypatch):
    from tests.data.test_celeba import write_celeba_dir

    _, filenames, partition = write_celeba_dir(tmp_path / "data", num_images=12)
    train = [name for name, p in zip(filenames, partition) if p == 0]
    (tmp_path / "data" / "img_align_celeba" / train[-1]).write_bytes(b"\xff\xd8 not a jpeg")
    monkeypatch.setattr(celeba, "_DECODE_BATCH", 2)  # earlier batches are in the file when it fails
    with pytest.raises(celeba.CelebAFormatError, match="cannot be decoded"):
        celeba.load_celeba_arrays("train", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    (directory,) = (tmp_path / "cache" / "celeba").iterdir()
    assert _entries(directory) == []


def test_a_cache_lookup_removes_a_crashed_writers_temporary(tmp_path):
    # A cache that is only ever read again (no new entry built) must not keep them either.
    root = tmp_path / "multi_digits"
    root.mkdir()
    dead = root / f".entry.npz.{_cache._host()}-{_dead_pid()}.{'0' * 32}.tmp"
    dead.write_bytes(b"partial")
    entry = root / "entry.npz"
    entry.write_bytes(b"complete")
    assert _cache.cache_root(tmp_path, "multi_digits") == root
    assert not dead.exists() and entry.exists()
