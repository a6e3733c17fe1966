"""CelebA loader on a small directory written in the official layout.

`write_celeba_dir` writes a few dozen JPEGs (a solid colour each, which
identifies the image after decoding and resizing), `list_attr_celeba.txt` and
`list_eval_partition.txt` exactly as the official release formats them, so the
parser, the splits, the label alignment and the error messages are checked
against the format rather than against the loader's own writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.data import celeba

NUM_IMAGES = 30
PARTITION = [0] * 16 + [1] * 7 + [2] * 7  # shuffled below


def _colour(i):
    return np.array([(8 * i) % 256, 255 - (8 * i) % 256, (40 + 5 * i) % 256], np.uint8)


def write_celeba_dir(root, num_images=NUM_IMAGES, seed=0, image_shape=(22, 18), subfolders=False):
    """Writes CelebA in the official layout; returns (labels -1/1 [n, 40], filenames, partition)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    filenames = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    labels = rng.choice([-1, 1], size=(num_images, 40))
    partition = np.resize(np.array(PARTITION), num_images)
    rng.shuffle(partition)
    image_dir = root / ("Img" if subfolders else "") / "img_align_celeba"
    anno_dir = root / ("Anno" if subfolders else "")
    eval_dir = root / ("Eval" if subfolders else "")
    for d in (image_dir, anno_dir, eval_dir):
        d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(filenames):
        image = np.broadcast_to(_colour(i), (*image_shape, 3))
        tf.io.write_file(str(image_dir / name), tf.io.encode_jpeg(image, quality=95))
    # The official file: the count, the names (with a trailing space), then rows
    # whose values are right-aligned in two characters and separated by spaces.
    lines = [str(num_images), " ".join(celeba.ATTRIBUTES) + " "]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(filenames, labels)]
    (anno_dir / "list_attr_celeba.txt").write_text("\r\n".join(lines) + "\r\n")
    (eval_dir / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(filenames, partition))
    )
    return labels, filenames, partition


@pytest.fixture(scope="module")
def celeba_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    labels, filenames, partition = write_celeba_dir(root)
    return root, labels, filenames, partition


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _identify(images):
    """Index of the generated image each decoded uint8 image shows (nearest colour)."""
    colours = np.stack([_colour(i) for i in range(NUM_IMAGES)]).astype(float)
    centre = images[:, 32, 32].astype(float)
    distances = np.abs(centre[:, None, :] - colours[None]).max(-1)
    assert distances.min(axis=1).max() <= 6, "a decoded image matches no generated colour"
    return distances.argmin(axis=1)


# -- parsing ---------------------------------------------------------------------------


def test_parse_attribute_file(celeba_dir):
    root, labels, filenames, _ = celeba_dir
    names, files, parsed, lines = celeba.read_attribute_file(root / "list_attr_celeba.txt")
    assert names == celeba.ATTRIBUTES and len(names) == 40
    assert files == filenames
    assert parsed.dtype == np.uint8 and parsed.shape == (NUM_IMAGES, 40)
    np.testing.assert_array_equal(parsed, (labels == 1).astype(np.uint8))
    assert lines == list(range(3, 3 + NUM_IMAGES))


def test_parse_partition_and_index(celeba_dir):
    root, labels, filenames, partition = celeba_dir
    files, splits, lines = celeba.read_partition_file(root / "list_eval_partition.txt")
    assert files == filenames and lines == list(range(1, NUM_IMAGES + 1))
    assert splits == [("train", "val", "test")[p] for p in partition]
    index = celeba.load_official_index(root)
    for split, code in zip(celeba.SPLITS, (0, 1, 2)):
        np.testing.assert_array_equal(index.split_indices(split), np.flatnonzero(partition == code))


def test_release_subfolders_are_found(tmp_path):
    write_celeba_dir(tmp_path, num_images=6, subfolders=True)
    files = celeba.find_official_files(tmp_path)
    assert files["attributes"] == tmp_path / "Anno" / "list_attr_celeba.txt"
    assert files["images"] == tmp_path / "Img" / "img_align_celeba"


# -- splits, shapes, labels --------------------------------------------------------------


def test_arrays_splits_shapes_and_label_alignment(celeba_dir, cache_dir):
    root, labels, _, partition = celeba_dir
    seen = []
    for split, code in zip(celeba.SPLITS, (0, 1, 2)):
        images, split_labels = celeba.load_celeba_arrays(split, data_dir=root, cache_dir=cache_dir)
        expected_rows = np.flatnonzero(partition == code)
        assert images.shape == (len(expected_rows), 64, 64, 3) and images.dtype == np.uint8
        assert split_labels.shape == (len(expected_rows), 40)
        assert set(np.unique(split_labels)) <= {0, 1}
        # File order within a split, and each image carries its own row's labels.
        np.testing.assert_array_equal(_identify(np.asarray(images)), expected_rows)
        np.testing.assert_array_equal(split_labels, (labels[expected_rows] == 1).astype(np.uint8))
        seen += list(expected_rows)
    assert sorted(seen) == list(range(NUM_IMAGES))


def test_datasets_shapes_and_values(celeba_dir, cache_dir):
    root, labels, _, partition = celeba_dir
    data = celeba.celeba_datasets(root, batch_size=5, eval_batch_size=4, cache_dir=cache_dir, normalization="unit")
    assert data.sizes == {s: int((partition == c).sum()) for s, c in zip(celeba.SPLITS, (0, 1, 2))}
    assert data.image_shape == (64, 64, 3) and data.attributes == celeba.ATTRIBUTES
    x, y = next(iter(data.train))
    assert x.shape == (5, 64, 64, 3) and x.dtype == tf.float32
    assert list(y) == list(celeba.ATTRIBUTES)
    assert all(v.dtype == tf.int32 and v.shape == (5,) for v in y.values())
    # Val batches: file order, labels of the right rows, pixels scaled to [0, 1].
    rows = np.flatnonzero(partition == 1)
    xs, ys = [], {a: [] for a in celeba.ATTRIBUTES}
    for x, y in data.val:
        xs.append(x.numpy())
        for a in celeba.ATTRIBUTES:
            ys[a].append(y[a].numpy())
    xs = np.concatenate(xs)
    assert xs.shape[0] == len(rows)
    np.testing.assert_array_equal(_identify(np.round(xs * 255).astype(np.uint8)), rows)
    for j, a in enumerate(celeba.ATTRIBUTES):
        np.testing.assert_array_equal(np.concatenate(ys[a]), (labels[rows, j] == 1).astype(np.int32))
    assert 0.0 <= xs.min() and xs.max() <= 1.0


def _train_order(data):
    order = []
    for x, _ in data.train:
        order += list(_identify(np.round(x.numpy() * 255).astype(np.uint8)))
    return order


def test_training_shuffle_is_deterministic_per_seed(celeba_dir, cache_dir):
    root, _, _, partition = celeba_dir
    kwargs = dict(batch_size=4, cache_dir=cache_dir, normalization="unit")
    a = celeba.celeba_datasets(root, seed=1, **kwargs)
    b = celeba.celeba_datasets(root, seed=1, **kwargs)
    c = celeba.celeba_datasets(root, seed=2, **kwargs)
    a1, a2 = _train_order(a), _train_order(a)
    assert sorted(a1) == list(np.flatnonzero(partition == 0))
    assert a1 == _train_order(b) and a2 == _train_order(b)  # same seed: same epochs
    assert a1 != a2  # reshuffled every epoch
    assert a1 != _train_order(c)


def test_max_examples_and_drop_remainder(celeba_dir, cache_dir):
    root, _, _, partition = celeba_dir
    data = celeba.celeba_datasets(
        root, batch_size=3, cache_dir=cache_dir, max_train_examples=7, max_eval_examples=2, drop_remainder=True,
        normalization="unit",
    )
    assert data.sizes == {"train": 7, "val": 2, "test": 2}
    assert [int(x.shape[0]) for x, _ in data.train] == [3, 3]
    first_rows = set(np.flatnonzero(partition == 0)[:7])
    assert set(_train_order(data)) <= first_rows
    assert [int(x.shape[0]) for x, _ in data.val] == [2]


# -- normalisation ---------------------------------------------------------------------


def test_sener_normalisation_by_hand(rng):
    images = rng.integers(0, 256, size=(3, 5, 4, 3), dtype=np.uint8)
    got = celeba.normalize_images(images, "sener").numpy()
    bgr = images[..., ::-1].astype(np.float64) - np.array([73.15835921, 82.90891754, 72.39239876])
    low = bgr.min(axis=(1, 2, 3), keepdims=True)
    high = bgr.max(axis=(1, 2, 3), keepdims=True)
    expected = (bgr - low) / np.where(high > low, high - low, 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.min(axis=(1, 2, 3)).tolist() == [0.0] * 3
    np.testing.assert_allclose(got.max(axis=(1, 2, 3)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(celeba.normalize_images(images, "unit").numpy(), images / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        celeba.normalize_images(images, "imagenet")


def test_resize_is_bilinear_with_antialiasing(tmp_path, cache_dir):
    """A 2-colour stripe image resized to 64x64 keeps its halves and blends the border."""
    write_celeba_dir(tmp_path, num_images=3)
    image = np.zeros((128, 96, 3), np.uint8)
    image[:, 48:] = 200
    tf.io.write_file(str(tmp_path / "img_align_celeba" / "000001.jpg"), tf.io.encode_jpeg(image, quality=100))
    files, splits, _ = celeba.read_partition_file(tmp_path / "list_eval_partition.txt")
    split = splits[0]
    images, _ = celeba.load_celeba_arrays(split, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    first = np.asarray(images[0]).astype(int)
    assert np.abs(first[:, :30] - 0).max() <= 3 and np.abs(first[:, 34:] - 200).max() <= 3
    expected = tf.image.resize(
        tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "img_align_celeba" / "000001.jpg"))), [64, 64],
        antialias=True,
    ).numpy()
    np.testing.assert_allclose(first, np.round(expected), atol=1)


# -- cache -----------------------------------------------------------------------------


def test_cache_is_reused_and_keyed_by_the_files(tmp_path):
    root = tmp_path / "data"
    labels, filenames, partition = write_celeba_dir(root, num_images=8)
    cache = tmp_path / "cache"
    first, _ = celeba.load_celeba_arrays("train", data_dir=root, cache_dir=cache)
    first = np.array(first)
    directories = list((cache / "celeba").iterdir())
    assert len(directories) == 1
    meta = json.loads((directories[0] / "train.json").read_text())
    assert meta["num_examples"] == int((partition == 0).sum()) and meta["image_size"] == 64
    # Overwrite the images in place (the directory stays as it was): the cache
    # alone serves the split, nothing is decoded again.
    for name in filenames:
        (root / "img_align_celeba" / name).write_bytes(b"not a jpeg")
    again, _ = celeba.load_celeba_arrays("train", data_dir=root, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(again), first)
    # Editing the attribute file changes the key, so the images are decoded again.
    path = root / "list_attr_celeba.txt"
    os.utime(path, ns=(1, 1))
    with pytest.raises(celeba.CelebAFormatError, match="cannot be decoded"):
        celeba.load_celeba_arrays("train", data_dir=root, cache_dir=cache)


def test_unreadable_cache_is_rebuilt(tmp_path, caplog):
    root = tmp_path / "data"
    write_celeba_dir(root, num_images=6)
    cache = tmp_path / "cache"
    good, _ = celeba.load_celeba_arrays("train", data_dir=root, cache_dir=cache)
    good = np.array(good)
    (directory,) = (cache / "celeba").iterdir()
    (directory / "train-images.npy").write_bytes(b"garbage")
    rebuilt, _ = celeba.load_celeba_arrays("train", data_dir=root, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(rebuilt), good)
    assert "unreadable" in caplog.text


# -- errors ----------------------------------------------------------------------------


def _rewrite_line(path, number, new):
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def small_dir(tmp_path):
    root = tmp_path / "data"
    write_celeba_dir(root, num_images=6)
    return root


def test_missing_image_names_file_and_line(small_dir, tmp_path):
    files, splits, _ = celeba.read_partition_file(small_dir / "list_eval_partition.txt")
    victim = files[2]
    os.remove(small_dir / "img_align_celeba" / victim)
    with pytest.raises(FileNotFoundError, match=rf"{victim} is missing; it is listed on line 5 of .*list_attr_celeba.txt"):
        celeba.load_celeba_arrays(splits[2], data_dir=small_dir, cache_dir=tmp_path / "cache")


def test_corrupt_image_is_named(small_dir, tmp_path):
    files, splits, _ = celeba.read_partition_file(small_dir / "list_eval_partition.txt")
    (small_dir / "img_align_celeba" / files[3]).write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(celeba.CelebAFormatError, match=rf"{files[3]} cannot be decoded"):
        celeba.load_celeba_arrays(splits[3], data_dir=small_dir, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "line, new, message",
    [
        (4, "000002.jpg " + " ".join(["1"] * 39), r"line 4: expected 41 columns .* found 40"),
        (4, "000002.jpg " + " ".join(["1"] * 41), r"line 4: expected 41 columns .* found 42"),
        (5, "000003.jpg " + " ".join(["1"] * 20 + ["0"] + ["-1"] * 19), r"line 5: attribute Male \(column 22\) is '0'; expected -1 or 1"),
        (6, "000004.jpg " + " ".join(["1"] * 39 + ["yes"]), r"line 6: attribute Young .* is 'yes'"),
        (1, "7", r"line 1: declares 7 images but the file lists 6"),
        (1, "six", r"line 1: expected the number of images"),
        (2, " ".join(celeba.ATTRIBUTES[:-1]), r"line 2: expected the 40 official attribute names .*missing: \['Young'\]"),
        (7, "000002.jpg " + " ".join(["1"] * 40), r"line 7: image 000002.jpg is listed again \(first on line 4\)"),
    ],
)
def test_malformed_attribute_file(small_dir, line, new, message):
    path = small_dir / "list_attr_celeba.txt"
    _rewrite_line(path, line, new)
    with pytest.raises(celeba.CelebAFormatError, match=message) as info:
        celeba.load_official_index(small_dir)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "line, new, message",
    [
        (2, "000002.jpg 3", r"list_eval_partition.txt, line 2: partition of 000002.jpg is '3'"),
        (3, "000003.jpg", r"list_eval_partition.txt, line 3: expected 2 columns"),
        (4, "000099.jpg 0", r"list_eval_partition.txt, line 4: image 000099.jpg has no attributes in"),
        (5, "000001.jpg 0", r"list_eval_partition.txt, line 5: image 000001.jpg is listed again"),
    ],
)
def test_malformed_partition_file(small_dir, line, new, message):
    _rewrite_line(small_dir / "list_eval_partition.txt", line, new)
    with pytest.raises(celeba.CelebAFormatError, match=message):
        celeba.load_official_index(small_dir)


def test_partition_missing_an_image(small_dir):
    path = small_dir / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4] + lines[5:]) + "\n")  # drops 000005.jpg
    with pytest.raises(celeba.CelebAFormatError, match=r"no partition for 1 image\(s\) .* 000005.jpg \(line 7 there\)"):
        celeba.load_official_index(small_dir)


def test_missing_files_name_both_ways(small_dir, tmp_path):
    os.remove(small_dir / "list_eval_partition.txt")
    with pytest.raises(celeba.SourceNotFoundError) as info:
        celeba.celeba_datasets(small_dir, cache_dir=tmp_path / "cache")
    text = str(info.value)
    assert "list_eval_partition.txt or" in text and "Eval/list_eval_partition.txt" in text
    assert "data_dir" in text and "celeb_a" in text


def test_no_source_at_all_names_both_ways(tmp_path):
    with pytest.raises(celeba.SourceNotFoundError) as info:
        celeba.load_celeba_arrays("val", tfds_data_dir=tmp_path / "tfds", cache_dir=tmp_path / "cache")
    text = str(info.value)
    assert "no data_dir given" in text and "not prepared" in text
    assert "list_attr_celeba.txt" in text and "tfds" in text


def test_bad_arguments(small_dir):
    with pytest.raises(ValueError, match="split"):
        celeba.load_celeba_arrays("validation", data_dir=small_dir)
    with pytest.raises(ValueError, match="normalization"):
        celeba.celeba_datasets(small_dir, normalization="imagenet")


def test_image_size_is_part_of_the_cache_key(small_dir, tmp_path):
    cache = tmp_path / "cache"
    big, _ = celeba.load_celeba_arrays("train", data_dir=small_dir, cache_dir=cache)
    small, _ = celeba.load_celeba_arrays("train", data_dir=small_dir, cache_dir=cache, image_size=32)
    assert big.shape[1:] == (64, 64, 3) and small.shape[1:] == (32, 32, 3)
    assert len(list((cache / "celeba").iterdir())) == 2


# -- TFDS ------------------------------------------------------------------------------


class _FakeSplit:
    def __init__(self, n):
        self.num_examples = n


class _FakeTfdsBuilder:
    """What the loader uses of a prepared `tfds.builder("celeb_a")`: 218x178 images, bool attributes."""

    version = "2.1.0"

    def __init__(self, data_dir, sizes):
        self.data_dir = str(data_dir)
        self.sizes = sizes
        self.info = type("Info", (), {"splits": {k: _FakeSplit(v) for k, v in sizes.items()}})()
        self.requested = []

    def is_prepared(self):
        return True

    def as_dataset(self, split, shuffle_files):
        assert shuffle_files is False
        self.requested.append(split)
        offset = {"train": 0, "validation": 100, "test": 200}[split]
        n = self.sizes[split]
        index = tf.range(offset, offset + n)

        def example(i):
            image = tf.fill([218, 178, 3], tf.cast(i % 256, tf.uint8))
            attributes = {a: tf.equal((i + j) % 3, 0) for j, a in enumerate(celeba.ATTRIBUTES)}
            return {"image": image, "attributes": attributes, "landmarks": {"nose_x": tf.cast(i, tf.int64)}}

        return tf.data.Dataset.from_tensor_slices(index).map(example)


def test_prepared_tfds_is_used_without_data_dir(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    fake = _FakeTfdsBuilder(tmp_path / "tfds", {"train": 5, "validation": 3, "test": 4})
    requests = []

    def builder(name, data_dir=None):
        requests.append((name, data_dir))
        return fake

    monkeypatch.setattr(tfds, "builder", builder)
    data = celeba.celeba_datasets(batch_size=2, tfds_data_dir=tmp_path / "tfds", cache_dir=tmp_path / "cache", normalization="unit")
    assert requests[0] == ("celeb_a", tmp_path / "tfds")
    assert data.sizes == {"train": 5, "val": 3, "test": 4}
    images, labels = celeba.load_celeba_arrays("val", tfds_data_dir=tmp_path / "tfds", cache_dir=tmp_path / "cache")
    assert fake.requested.count("validation") == 1  # decoded once, then read from the cache
    np.testing.assert_array_equal(np.asarray(images)[:, 10, 10, 0], [100, 101, 102])
    expected = np.array([[(i + j) % 3 == 0 for j in range(40)] for i in (100, 101, 102)], np.uint8)
    np.testing.assert_array_equal(labels, expected)
    x, y = next(iter(data.test))
    np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], np.array([200, 201]) / 255.0, rtol=1e-6)
    assert y["Male"].numpy().tolist() == [int((200 + 20) % 3 == 0), int((201 + 20) % 3 == 0)]


def test_tfds_errors_count_as_not_available(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def broken(name, data_dir=None):
        raise OSError("quota exceeded")

    monkeypatch.setattr(tfds, "builder", broken)
    with pytest.raises(celeba.SourceNotFoundError, match=r"TFDS 'celeb_a' unavailable \(OSError: quota exceeded\)"):
        celeba.load_celeba_arrays("train", cache_dir=tmp_path / "cache")
