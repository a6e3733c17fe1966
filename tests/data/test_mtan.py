"""MTAN's preprocessed Cityscapes and NYUv2 on small data sets written in that layout."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.data import mtan
from mtl_tf.losses import IGNORE_LABEL
from tests.data import scene_fixtures as sf

H, W = 8, 16


def _first(ds):
    x, y = next(iter(ds))
    return x.numpy(), {k: v.numpy() for k, v in y.items()}


@pytest.fixture
def nyu(tmp_path):
    return tmp_path, sf.make_mtan(tmp_path, {"train": 3, "val": 2}, height=H, width=W, num_classes=13)


def test_arrays_come_back_as_stored(nyu):
    root, written = nyu
    ds, n = mtan.load_mtan(root, "nyuv2", "val")
    assert n == 2
    for (x, y), example in zip(ds, written["val"]):
        np.testing.assert_array_equal(x.numpy(), example["image"])
        np.testing.assert_array_equal(y["depth"].numpy(), example["depth"])
        np.testing.assert_array_equal(y["normal"].numpy(), example["normal"])
        label = example["label"].astype(np.int32)
        np.testing.assert_array_equal(y["segmentation"].numpy(), np.where(label < 0, IGNORE_LABEL, label))
        assert y["segmentation"].dtype == tf.int32 and x.dtype == tf.float32
    # The fixture's hand-set invalid pixels: label -1 -> ignore, depth 0, normal 0.
    _, y = _first(ds)
    assert (y["segmentation"][0, :3] == IGNORE_LABEL).all()
    assert (y["depth"][1, :2] == 0).all() and (y["normal"][2, :2] == 0).all()


def test_cityscapes_has_no_normals_and_finds_label_7(tmp_path):
    written = sf.make_mtan(tmp_path, {"train": 2, "val": 1}, height=H, width=W, num_classes=7, normals=False,
                           label_folder="label_7")
    ds, _ = mtan.load_mtan(tmp_path, "cityscapes", "val")
    x, y = _first(ds)
    assert set(y) == {"segmentation", "depth"}
    label = written["val"][0]["label"].astype(np.int32)
    np.testing.assert_array_equal(y["segmentation"], np.where(label < 0, IGNORE_LABEL, label))


def test_channels_first_and_other_dtypes_are_read_exactly(tmp_path):
    example = sf.mtan_example(H, W, 13, seed=5)
    for split in ("train", "val"):
        for kind in ("image", "label", "depth", "normal"):
            (tmp_path / split / kind).mkdir(parents=True)
    np.save(tmp_path / "val/image/0.npy", np.moveaxis(example["image"], -1, 0).astype(">f8"))  # CHW, big-endian
    np.save(tmp_path / "val/label/0.npy", example["label"].astype(np.int64))
    np.save(tmp_path / "val/depth/0.npy", np.moveaxis(example["depth"], -1, 0))  # [1, H, W]
    np.save(tmp_path / "val/normal/0.npy", np.moveaxis(example["normal"], -1, 0).astype(np.float16))
    ds, _ = mtan.load_mtan(tmp_path, "nyuv2", "val")
    x, y = _first(ds)
    np.testing.assert_array_equal(x, example["image"])
    np.testing.assert_array_equal(y["depth"], example["depth"])
    np.testing.assert_array_equal(y["normal"], example["normal"].astype(np.float16).astype(np.float32))
    assert (y["segmentation"][0, :3] == IGNORE_LABEL).all()


def test_datasets_hold_out_validation_and_shuffle_by_seed(tmp_path):
    written = sf.make_mtan(tmp_path, {"train": 6, "val": 2}, height=H, width=W)
    data = mtan.mtan_datasets(tmp_path, "nyuv2", batch_size=2, val_size=2, seed=1)
    assert data.sizes == {"train": 4, "val": 2, "test": 2} and data.image_shape == (H, W, 3)
    val_images = np.concatenate([x.numpy() for x, _ in data.val])
    np.testing.assert_array_equal(val_images, np.stack([e["image"] for e in written["train"][4:]]))
    test_images = np.concatenate([x.numpy() for x, _ in data.test])
    np.testing.assert_array_equal(test_images, np.stack([e["image"] for e in written["val"]]))

    def order(seed):
        d = mtan.mtan_datasets(tmp_path, "nyuv2", batch_size=4, val_size=2, seed=seed)
        return [[x.numpy()[:, 0, 0, 0].tolist() for x, _ in d.train] for _ in range(2)]

    a, b = order(1), order(1)
    assert a == b and a[0] != a[1]  # fixed by the seed, reshuffled each epoch
    train_pixels = sorted(e["image"][0, 0, 0].item() for e in written["train"][:4])
    assert sorted(sum(a[0], [])) == pytest.approx(train_pixels)  # no held-out image is trained on
    with pytest.raises(ValueError, match="val_size"):
        mtan.mtan_datasets(tmp_path, "nyuv2", batch_size=2, val_size=6)


# -- errors ------------------------------------------------------------------------------------


def test_missing_partner_file_names_it(nyu):
    root, _ = nyu
    (root / "train" / "normal" / "1.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"train/normal/1\.npy: missing \(normal of image"):
        mtan.find_mtan_files(root, "nyuv2", "train")


def test_label_without_image_and_gaps_name_the_file(nyu):
    root, _ = nyu
    np.save(root / "train" / "depth" / "3.npy", np.ones((H, W, 1), np.float32))
    with pytest.raises(FileNotFoundError, match=r"depth/3\.npy: a depth file without its image"):
        mtan.find_mtan_files(root, "nyuv2", "train")
    (root / "train" / "depth" / "3.npy").unlink()
    (root / "train" / "image" / "1.npy").rename(root / "train" / "image" / "7.npy")
    with pytest.raises(FileNotFoundError, match="numbered 0..2"):
        mtan.find_mtan_files(root, "nyuv2", "train")


def test_label_of_the_wrong_size_names_the_file(nyu):
    root, _ = nyu
    path = root / "val" / "label" / "1.npy"
    np.save(path, np.zeros((H - 2, W), np.float32))
    with pytest.raises(mtan.MTANFormatError, match=f"label of {H - 2}x{W} pixels") as info:
        mtan.find_mtan_files(root, "nyuv2", "val")
    assert str(path) in str(info.value) and "image" in str(info.value)


def test_image_size_is_checked_against_the_config(nyu):
    root, _ = nyu
    with pytest.raises(mtan.MTANFormatError, match="configured image size 288x384"):
        mtan.find_mtan_files(root, "nyuv2", "val", image_size=(288, 384))


def test_unknown_layouts_and_broken_files_name_the_file(nyu):
    root, _ = nyu
    path = root / "val" / "normal" / "0.npy"
    np.save(path, np.zeros((H, W, 4), np.float32))
    with pytest.raises(mtan.MTANFormatError, match=r"normal array of shape \(8, 16, 4\); expected \[H, W, 3\]"):
        mtan.find_mtan_files(root, "nyuv2", "val")
    np.save(path, np.asfortranarray(np.zeros((H, W, 3), np.float32)))
    with pytest.raises(mtan.MTANFormatError, match="Fortran"):
        mtan.find_mtan_files(root, "nyuv2", "val")
    np.save(path, np.zeros((H, W, 3), np.float32))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(mtan.MTANFormatError, match="truncated") as info:
        mtan.find_mtan_files(root, "nyuv2", "val")
    assert str(path) in str(info.value)
    path.write_bytes(b"garbage")
    with pytest.raises(mtan.MTANFormatError, match="not a readable .npy"):
        mtan.find_mtan_files(root, "nyuv2", "val")


def test_label_beyond_the_classes_fails_naming_the_file(nyu):
    root, _ = nyu
    path = root / "val" / "label" / "0.npy"
    label = np.zeros((H, W), np.float32)
    label[3, 3] = 13  # NYUv2 has classes 0..12
    np.save(path, label)
    ds, _ = mtan.load_mtan(root, "nyuv2", "val")
    with pytest.raises(tf.errors.InvalidArgumentError, match="0.npy"):
        _first(ds)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found"):
        mtan.find_mtan_files(tmp_path, "nyuv2", "train")
    with pytest.raises(ValueError, match="unknown MTAN data set"):
        mtan.find_mtan_files(tmp_path, "kitti", "train")
