"""Cityscapes (Sener's three tasks) on small data sets written in the official layout."""

import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.data import cityscapes as cs
from tests.data import scene_fixtures as sf

H, W = 16, 32
IGNORE = cs.IGNORE_LABEL


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    written = sf.make_cityscapes(root, height=H, width=W)
    return root, written


def _paths(files):
    return {role: tf.constant(getattr(files, role)) for role in ("image", "label_ids", "instance_ids", "disparity")}


def _decoded(tree, index=0, split="train", **kwargs):
    root, _ = tree
    files = cs.find_cityscapes_files(root, split)[index]
    return {k: v.numpy() for k, v in cs.decode_example(_paths(files), **kwargs).items()}


# -- the official table ----------------------------------------------------------------------


def test_train_id_table_is_the_official_one():
    table = {label.label_id: label.train_id for label in cs.CITYSCAPES_LABELS}
    # A few rows of cityscapesScripts' labels.py, checked by hand.
    assert table[7] == 0 and table[8] == 1 and table[11] == 2 and table[23] == 10
    assert table[24] == 11 and table[26] == 13 and table[31] == 16 and table[33] == 18
    assert table[0] == 255 and table[9] == 255 and table[29] == 255 and table[30] == 255
    train_ids = sorted(t for t in table.values() if t != 255)
    assert train_ids == list(range(19))  # every train id exactly once
    assert cs.CLASS_NAMES[:3] == ("road", "sidewalk", "building") and cs.CLASS_NAMES[-1] == "bicycle"
    label_ids = tf.constant([[7, 26], [29, 0], [33, 255]], tf.uint8)
    np.testing.assert_array_equal(cs.label_ids_to_train_ids(label_ids).numpy(), [[0, 13], [IGNORE, IGNORE], [18, IGNORE]])
    things = {label.name for label in cs.CITYSCAPES_LABELS if label.has_instances}
    assert things == {"person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"}


# -- targets against hand-worked values ----------------------------------------------------------


def test_targets_of_a_known_example(tree):
    ex = _decoded(tree)
    seg, offsets, mask = ex["segmentation"], ex["instance"], ex["instance_mask"]
    assert seg.shape == (H, W) and offsets.shape == (H, W, 2) and ex["disparity"].shape == (H, W, 1)
    # Train ids: sky (10) on top, road (0) below, car (13), person (11); caravan and unlabeled ignored.
    assert seg[0, 0] == 10 and seg[H - 2, 10] == 0 and seg[3, 5] == 13 and seg[10, 20] == 11
    assert (seg[1:3, 26:30] == IGNORE).all() and seg[H - 1, W - 1] == IGNORE
    assert seg[13, 1] == 13  # the crowd of cars keeps its class
    # The car occupies rows 2..5, cols 4..9: centroid (3.5, 6.5); offsets are centroid - pixel.
    rows, cols = np.mgrid[0:H, 0:W]
    car = np.zeros((H, W), bool)
    car[2:6, 4:10] = True
    np.testing.assert_allclose(offsets[car, 0], (3.5 - rows)[car])
    np.testing.assert_allclose(offsets[car, 1], (6.5 - cols)[car])
    np.testing.assert_allclose(offsets[2, 4], [1.5, 2.5])
    # The person: rows 9..12, cols 20..21 -> centroid (10.5, 20.5).
    np.testing.assert_allclose(offsets[9, 20], [1.5, 0.5])
    np.testing.assert_allclose(offsets[12, 21], [-1.5, -0.5])
    expected_mask = car.copy()
    expected_mask[9:13, 20:22] = True  # crowd (id 26 < 1000) and caravan (ignored class) are not instances
    np.testing.assert_array_equal(mask, expected_mask)
    assert np.isnan(offsets[~expected_mask]).all() and np.isfinite(offsets[expected_mask]).all()
    # Disparity: p = 1 + 64 * col, so d = col / 4; column 0 has p = 0 (invalid).
    disparity = ex["disparity"][..., 0]
    np.testing.assert_allclose(disparity[:, 1:], np.broadcast_to(np.arange(1, W) / 4.0, (H, W - 1)))
    assert np.isnan(disparity[:, 0]).all()
    np.testing.assert_array_equal(ex["disparity_mask"], cols > 0)


def test_disparity_conversion_is_the_official_one():
    raw = tf.constant([0, 1, 2, 257, 65535], tf.uint16)
    disparity, valid = cs.disparity_from_png(raw)
    np.testing.assert_array_equal(valid.numpy(), [False, True, True, True, True])
    np.testing.assert_allclose(disparity.numpy()[1:], [0.0, 1 / 256, 1.0, 65534 / 256])
    assert np.isnan(disparity.numpy()[0])


def test_centroid_is_exact_for_a_large_instance():
    # A float32 accumulation gives a mean column of 1023.004 here instead of 1023.5.
    instance = tf.fill([1024, 2048], 26001)
    train = tf.fill([1024, 2048], 13)
    offsets, mask = cs.instance_offsets(instance, train)
    assert bool(tf.reduce_all(mask))
    np.testing.assert_allclose(offsets[0, 0].numpy(), [511.5, 1023.5], atol=1e-4)
    np.testing.assert_allclose(offsets[1023, 2047].numpy(), [-511.5, -1023.5], atol=1e-4)


def test_flipped_example_mirrors_targets_and_negates_dx(tree):
    plain = _decoded(tree)
    flipped = _decoded(tree, augment=True, seed=tf.constant([1, 2]), max_rotation_degrees=0.0, flip_probability=1.0)
    np.testing.assert_array_equal(flipped["segmentation"], plain["segmentation"][:, ::-1])
    np.testing.assert_array_equal(flipped["instance_mask"], plain["instance_mask"][:, ::-1])
    mirrored = plain["instance"][:, ::-1]
    np.testing.assert_allclose(flipped["instance"][..., 0], mirrored[..., 0])  # dy unchanged
    np.testing.assert_allclose(flipped["instance"][..., 1], -mirrored[..., 1])  # dx negated
    # Hand check: the car pixel (2, 4) moves to (2, 27), its dx from +2.5 to -2.5.
    np.testing.assert_allclose(flipped["instance"][2, W - 1 - 4], [1.5, -2.5])
    np.testing.assert_allclose(flipped["disparity"], plain["disparity"][:, ::-1])
    np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])


def test_rotation_by_180_degrees_maps_pixels_exactly():
    image = tf.reshape(tf.range(12, dtype=tf.float32), [3, 4, 1])
    maps = tf.concat([image, image + 100.0], axis=-1)
    rotated_image, rotated_maps, inside = cs.rotate_maps(image, maps, tf.constant(math.pi))
    np.testing.assert_allclose(rotated_image.numpy()[..., 0], np.arange(12).reshape(3, 4)[::-1, ::-1], atol=1e-4)
    np.testing.assert_array_equal(rotated_maps.numpy()[..., 1], np.arange(12).reshape(3, 4)[::-1, ::-1] + 100)
    assert inside.numpy().all()


def test_rotation_direction_and_fill():
    # 90 degrees counter-clockwise on screen: the top-right pixel goes to the top-left.
    square = tf.reshape(tf.range(9, dtype=tf.float32), [3, 3, 1])
    _, rotated, _ = cs.rotate_maps(square, square, tf.constant(math.pi / 2))
    np.testing.assert_array_equal(rotated.numpy()[..., 0], [[2, 5, 8], [1, 4, 7], [0, 3, 6]])
    # A small rotation leaves the corners of a wide image without a source pixel.
    wide = tf.ones([20, 40, 1])
    _, _, inside = cs.rotate_maps(wide, wide, tf.constant(10 * math.pi / 180))
    inside = inside.numpy()
    assert not inside[0, 0] and not inside[-1, -1] and inside[10, 20]


def test_rotated_example_fills_outside_pixels_as_invalid(tree):
    root, _ = tree
    files = cs.find_cityscapes_files(root, "train")[0]
    # Draw seeds until the angle is large enough to cut a corner (deterministic search).
    for seed in range(50):
        ex = cs.decode_example(_paths(files), augment=True, seed=tf.constant([seed, 0]), max_rotation_degrees=30.0,
                               flip_probability=0.0)
        angle = (2.0 * tf.random.stateless_uniform([2], seed=[seed, 0])[0].numpy() - 1.0) * 30.0
        if abs(angle) > 15:
            break
    corner_rows, corner_cols = [0, 0, H - 1, H - 1], [0, W - 1, 0, W - 1]
    seg = ex["segmentation"].numpy()
    assert (seg[corner_rows, corner_cols] == IGNORE).all()
    assert np.isnan(ex["disparity"].numpy()[corner_rows, corner_cols]).all()
    assert not ex["instance_mask"].numpy()[corner_rows, corner_cols].any()


# -- the pipeline ------------------------------------------------------------------------------


def test_targets_are_sampled_nearest_at_one_eighth(tree):
    root, _ = tree
    ds, n = cs.load_cityscapes(root, "val", image_size=(H, W), normalization="unit")
    assert n == 2
    x, y = next(iter(ds))
    # Default target size: ceil(16 / 8) x ceil(32 / 8) = 2 x 4.
    assert x.shape == (H, W, 3) and y["segmentation"].shape == (2, 4)
    assert y["instance"].shape == (2, 4, 2) and y["disparity"].shape == (2, 4, 1)
    full = _decoded(tree, split="val")
    rows, cols = [4, 12], [4, 12, 20, 28]  # floor((i + 0.5) * 8)
    np.testing.assert_array_equal(y["segmentation"].numpy(), full["segmentation"][np.ix_(rows, cols)])
    np.testing.assert_array_equal(y["instance"].numpy(), full["instance"][np.ix_(rows, cols)])
    np.testing.assert_array_equal(y["disparity"].numpy(), full["disparity"][np.ix_(rows, cols)])
    # Offsets keep source-pixel units: the car pixel (4, 4) has (-0.5, 2.5).
    np.testing.assert_allclose(y["instance"].numpy()[0, 0], [-0.5, 2.5])
    np.testing.assert_allclose(x.numpy(), full["image"] / 255.0, atol=1e-6)


def test_image_normalisations(tree):
    root, written = tree
    image = written["val"][0][1]["image"].astype(np.float64)
    outputs = {}
    for normalization in cs.NORMALIZATIONS:
        ds, _ = cs.load_cityscapes(root, "val", image_size=(H, W), normalization=normalization)
        outputs[normalization] = next(iter(ds))[0].numpy()
    bgr = image[..., ::-1]
    shifted = bgr - np.array(cs.SENER_MEAN)
    expected_sener = (shifted - shifted.min()) / (shifted.max() - shifted.min())
    np.testing.assert_allclose(outputs["sener"], expected_sener, atol=1e-5)
    assert outputs["sener"].min() == 0.0 and outputs["sener"].max() == pytest.approx(1.0)
    np.testing.assert_allclose(outputs["caffe"], bgr - np.array(cs.CAFFE_BGR_MEAN), atol=1e-3)
    np.testing.assert_allclose(outputs["unit"], image / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        cs.load_cityscapes(root, "val", normalization="imagenet")


def test_image_is_resized_like_pil_bilinear(tree):
    # scipy.misc.imresize (Sener's code) is PIL's bilinear resize, which widens its
    # triangle filter when downsampling (antialiasing); compare with PIL itself.
    from PIL import Image

    root, written = tree
    ds, _ = cs.load_cityscapes(root, "val", image_size=(H // 2, W // 4), normalization="unit")
    x = next(iter(ds))[0].numpy()
    image = written["val"][0][1]["image"].astype(np.float32)
    expected = np.stack(
        [np.asarray(Image.fromarray(image[..., c], mode="F").resize((W // 4, H // 2), Image.BILINEAR)) for c in range(3)],
        axis=-1,
    ) / 255.0
    np.testing.assert_allclose(x, expected, atol=2e-3)
    plain = tf.image.resize(image, (H // 2, W // 4), method="bilinear", antialias=False).numpy() / 255.0
    assert np.abs(plain - expected).max() > 0.02  # the check tells antialiasing apart


def test_batched_splits_sizes_and_validation_cities(tree):
    root, _ = tree
    data = cs.cityscapes_datasets(root, batch_size=2, image_size=(H, W), seed=0)
    assert data.sizes == {"train": 4, "test": 2} and data.val is None
    assert data.image_shape == (H, W, 3) and data.target_size == (2, 4)
    batches = list(data.train)
    assert [b[0].shape[0] for b in batches] == [2, 2]
    held = cs.cityscapes_datasets(root, batch_size=3, image_size=(H, W), val_cities=("bochum",), augment=False)
    assert held.sizes == {"train": 2, "val": 2, "test": 2}
    with pytest.raises(ValueError, match="city 'paris'"):
        cs.cityscapes_datasets(root, batch_size=2, val_cities=("paris",))


def _epochs(root, seed, epochs=2):
    ds, _ = cs.load_cityscapes(root, "train", image_size=(H, W), target_size=(H, W), augment=True, shuffle=True,
                               seed=seed, max_rotation_degrees=10.0)
    return [[(x.numpy(), y["instance"].numpy()) for x, y in ds] for _ in range(epochs)]


def test_augmentation_is_deterministic_for_a_seed_and_varies_by_epoch(tree):
    root, _ = tree
    first, again, other = _epochs(root, 3), _epochs(root, 3), _epochs(root, 4)
    for epoch_a, epoch_b in zip(first, again):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)

    def same(a, b):
        return all(np.array_equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))

    assert not same(first[0], first[1])  # a new draw every epoch
    assert not same(first[0], other[0])  # another seed, other draws


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture
def small_tree(tmp_path):
    written = sf.make_cityscapes(tmp_path, {"train": {"aachen": 2}}, height=8, width=16)
    return tmp_path, written["train"]


def test_missing_label_names_the_file(small_tree):
    root, rows = small_tree
    paths = rows[1][0]
    paths["instance_ids"].unlink()
    with pytest.raises(FileNotFoundError, match=str(paths["instance_ids"])) as info:
        cs.find_cityscapes_files(root, "train")
    assert "instance ids of image" in str(info.value) and str(paths["image"]) in str(info.value)


def test_label_without_image_names_the_file(small_tree):
    root, rows = small_tree
    rows[0][0]["image"].unlink()
    with pytest.raises(FileNotFoundError, match="a label without its image") as info:
        cs.find_cityscapes_files(root, "train")
    assert str(rows[0][0]["label_ids"]) in str(info.value)


def test_label_of_the_wrong_size_names_the_file(small_tree):
    root, rows = small_tree
    path = rows[0][0]["label_ids"]
    sf.write_png(path, np.full((4, 16), sf.ROAD, np.uint8))
    with pytest.raises(cs.CityscapesFormatError, match="4x16 pixels") as info:
        cs.find_cityscapes_files(root, "train")
    assert str(path) in str(info.value) and "8x16" in str(info.value)


def test_wrong_bit_depth_and_non_png_name_the_file(small_tree):
    root, rows = small_tree
    path = rows[0][0]["instance_ids"]
    sf.write_png(path, np.zeros((8, 16), np.uint8))  # an 8-bit instance map
    with pytest.raises(cs.CityscapesFormatError, match="8-bit greyscale PNG; expected a 16-bit") as info:
        cs.find_cityscapes_files(root, "train")
    assert str(path) in str(info.value)
    path.write_bytes(b"not a png at all, but long enough")
    with pytest.raises(cs.CityscapesFormatError, match="not a PNG") as info:
        cs.find_cityscapes_files(root, "train")
    assert str(path) in str(info.value)


def test_missing_directory_and_split(tmp_path, small_tree):
    root, _ = small_tree
    shutil.rmtree(root / "disparity")
    with pytest.raises(FileNotFoundError, match="disparity/train"):
        cs.find_cityscapes_files(root, "train")
    with pytest.raises(ValueError, match="unknown Cityscapes split"):
        cs.find_cityscapes_files(root, "training")
    (tmp_path / "empty" / "leftImg8bit" / "val").mkdir(parents=True)
    for part in ("gtFine", "disparity"):
        (tmp_path / "empty" / part / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_leftImg8bit.png images"):
        cs.find_cityscapes_files(tmp_path / "empty", "val")
