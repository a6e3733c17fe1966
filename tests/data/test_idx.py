"""IDX reader: round trips, compression, and clear errors on broken files."""

import gzip

import numpy as np
import pytest

from mtl_tf.data import idx
from tests.data import fixtures


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    "dtype,shape",
    [(np.uint8, (5, 28, 28)), (np.uint8, (7,)), (np.int8, (3, 4)), (np.int16, (2, 3)),
     (np.int32, (4, 2, 3)), (np.float32, (6,)), (np.float64, (2, 2, 2, 2))],
)
def test_reads_hand_written_files(tmp_path, rng, gz, dtype, shape):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=shape).astype(dtype)
    path = fixtures.write_idx_file(tmp_path / ("a.idx" + (".gz" if gz else "")), array, gz)
    out = idx.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)


def test_gzip_recognised_by_content_not_name(tmp_path, rng):
    array = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    path = fixtures.write_idx_file(tmp_path / "no-suffix", array, gz=True)
    np.testing.assert_array_equal(idx.read_idx(path), array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_idx_matches_the_format(tmp_path, rng, suffix):
    array = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    path = idx.write_idx(tmp_path / f"x{suffix}", array)
    raw = path.read_bytes()
    if suffix:
        raw = gzip.decompress(raw)
    assert raw == fixtures.idx_bytes(array)
    np.testing.assert_array_equal(idx.read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_payload_names_file_and_sizes(tmp_path, gz):
    payload = fixtures.idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path = fixtures.write_raw(tmp_path / "train-images-idx3-ubyte", payload[:-100], gz)
    with pytest.raises(ValueError) as err:
        idx.read_idx(path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg
    assert "truncated" in msg and "7840" in msg and "7740" in msg


def test_trailing_bytes_rejected(tmp_path):
    payload = fixtures.idx_bytes(np.zeros((3,), np.uint8)) + b"\x00"
    path = fixtures.write_raw(tmp_path / "labels", payload)
    with pytest.raises(ValueError, match=r"labels.*expected 3 bytes.*found 4"):
        idx.read_idx(path)


def test_truncated_gzip_stream_names_file(tmp_path):
    compressed = gzip.compress(fixtures.idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        idx.read_idx(path)


def test_bad_magic(tmp_path):
    payload = b"\x01\x02" + fixtures.idx_bytes(np.zeros((2, 2), np.uint8))[2:]
    path = fixtures.write_raw(tmp_path / "bad", payload)
    with pytest.raises(ValueError, match=r"bad.*magic.*0x0000.*0x0102"):
        idx.read_idx(path)


def test_unknown_type_code(tmp_path):
    payload = b"\x00\x00\x07\x01" + (2).to_bytes(4, "big") + b"\x00\x00"
    path = fixtures.write_raw(tmp_path / "code", payload)
    with pytest.raises(ValueError, match=r"code.*type code.*0x07"):
        idx.read_idx(path)


def test_truncated_header(tmp_path):
    path = fixtures.write_raw(tmp_path / "hdr", b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match=r"hdr.*header.*expected 16 bytes.*found 8"):
        idx.read_idx(path)
    path = fixtures.write_raw(tmp_path / "tiny", b"\x00\x00")
    with pytest.raises(ValueError, match=r"tiny.*header"):
        idx.read_idx(path)


def _arrays(rng, n_train=12, n_test=6):
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_load_dataset_plain_and_gz_mixed(tmp_path, rng):
    arrays = _arrays(rng)
    for i, (role, name) in enumerate(fixtures.OFFICIAL_NAMES.items()):
        gz = i % 2 == 0
        fixtures.write_idx_file(tmp_path / (name + (".gz" if gz else "")), arrays[role], gz)
    ds = idx.load_idx_dataset(tmp_path)
    for role in fixtures.OFFICIAL_NAMES:
        np.testing.assert_array_equal(getattr(ds, role), arrays[role])
    assert ds.files["train_images"].name == "train-images-idx3-ubyte.gz"
    assert ds.files["train_labels"].name == "train-labels-idx1-ubyte"


def test_dotted_file_names_of_mirrors_are_found(tmp_path, rng):
    arrays = _arrays(rng)
    for i, (role, name) in enumerate(fixtures.OFFICIAL_NAMES.items()):
        dotted = name.replace("-idx", ".idx")
        fixtures.write_idx_file(tmp_path / (dotted + (".gz" if i == 0 else "")), arrays[role], i == 0)
    ds = idx.load_idx_dataset(tmp_path)
    for role in fixtures.OFFICIAL_NAMES:
        np.testing.assert_array_equal(getattr(ds, role), arrays[role])
    assert ds.files["train_images"].name == "train-images.idx3-ubyte.gz"
    assert ds.files["test_labels"].name == "t10k-labels.idx1-ubyte"


def test_missing_files_all_named(tmp_path, rng):
    arrays = _arrays(rng)
    fixtures.write_idx_file(tmp_path / "train-images-idx3-ubyte.gz", arrays["train_images"], True)
    fixtures.write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    with pytest.raises(FileNotFoundError) as err:
        idx.find_idx_dataset(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    missing = msg.split("expected")[0]
    assert "train-labels-idx1-ubyte" in missing and "t10k-images-idx3-ubyte" in missing
    assert "train-images" not in missing and "t10k-labels" not in missing
    assert not idx.has_idx_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        idx.find_idx_dataset(tmp_path / "nowhere")


def test_label_count_mismatch(tmp_path, rng):
    arrays = _arrays(rng)
    arrays["test_labels"] = arrays["test_labels"][:-1]
    fixtures.write_idx_dataset(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*expected 6 labels.*found 5"):
        idx.load_idx_dataset(tmp_path)


def test_wrong_image_shape(tmp_path, rng):
    arrays = _arrays(rng)
    arrays["train_images"] = arrays["train_images"][:, :27]
    fixtures.write_idx_dataset(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*\(28, 28\).*\(27, 28\)"):
        idx.load_idx_dataset(tmp_path)
