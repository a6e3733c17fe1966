"""The last source of MNIST / Fashion-MNIST: Keras's download, tried when nothing else holds the data.

No test here touches the network: `keras.datasets.<name>.load_data` is replaced by a stub that
returns small generated arrays (or raises as an offline machine does).
"""

import keras
import numpy as np
import pytest

from mtl_tf.data import _digit_sources, _sources, multi_digits as md
from tests.data import fixtures

N_TRAIN, N_TEST = 60, 30
PARETO = (40, 10, 10)


@pytest.fixture(autouse=True)
def nothing_else(tmp_path, monkeypatch):
    """No Debian package, no prepared TFDS, a private cache; the download allowed."""
    monkeypatch.setattr(_digit_sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no_debian")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    monkeypatch.setenv(md.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(_sources.DOWNLOAD_ENV, raising=False)


def stub_loader(monkeypatch, kind, arrays=None, error=None):
    """Replaces keras.datasets.<kind>.load_data; returns the list of calls it receives."""
    calls = []

    def load_data():
        calls.append(kind)
        if error is not None:
            raise error
        return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])

    monkeypatch.setattr(getattr(keras.datasets, kind), "load_data", load_data)
    return calls


def offline(kind):
    # What keras.utils.get_file raises on a machine without a route to storage.googleapis.com.
    url = f"https://storage.googleapis.com/tensorflow/tf-keras-datasets/{kind}"
    return Exception(f"URL fetch failure on {url}: None -- [Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("name, kind", [("multi_fashion", "fashion_mnist"), ("multi_mnist", "mnist")])
def test_download_is_the_fallback_of_the_default(monkeypatch, name, kind):
    source = fixtures.make_source(N_TRAIN, N_TEST, seed=3)
    calls = stub_loader(monkeypatch, kind, source)
    a = md.load_multi_digits_arrays(name, "sener", "test")
    assert calls == [kind]
    # Sener test composites: item i on the left, in order, so the labels are the test labels.
    np.testing.assert_array_equal(a["left"], source["test_labels"])
    assert a["images"].shape == (N_TEST, 28, 28)
    train = md.load_multi_digits_arrays(name, "pareto", "train", pareto_sizes=PARETO)
    assert train["images"].shape == (PARETO[0], 36, 36)
    # Every training composite is made of training items (first 90 %), none of the test items.
    assert train["left_index"].max() < N_TRAIN * 0.9 and train["right_index"].max() < N_TRAIN * 0.9
    left, right = md.resolve_sources(name)
    assert left is right and f"keras.datasets.{kind}.load_data()" in left.origin


def test_mixed_set_downloads_both(monkeypatch):
    digits = fixtures.make_source(N_TRAIN, N_TEST, seed=4, style="digits")
    fashion = fixtures.make_source(N_TRAIN, N_TEST, seed=5, style="fashion")
    stub_loader(monkeypatch, "mnist", digits)
    stub_loader(monkeypatch, "fashion_mnist", fashion)
    a = md.load_multi_digits_arrays("multi_fashion_mnist", "sener", "test")
    np.testing.assert_array_equal(a["left"], digits["test_labels"])
    assert set(a["right"].tolist()) <= set(fashion["test_labels"].tolist())


def test_other_sources_win_over_the_download(monkeypatch, tmp_path):
    calls = stub_loader(monkeypatch, "fashion_mnist", error=AssertionError("must not be called"))
    fixtures.write_idx_dataset(tmp_path / "debian", fixtures.make_source(N_TRAIN, N_TEST, seed=6))
    monkeypatch.setattr(_digit_sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    left, _ = md.resolve_sources("multi_fashion")
    assert "IDX files" in left.origin and calls == []


def test_changed_download_content_changes_the_cache_entry(monkeypatch):
    stub_loader(monkeypatch, "mnist", fixtures.make_source(N_TRAIN, N_TEST, seed=7))
    first = md.cache_path("multi_mnist")
    stub_loader(monkeypatch, "mnist", fixtures.make_source(N_TRAIN, N_TEST, seed=8))
    assert md.cache_path("multi_mnist") != first


def test_all_fail_names_every_way_and_why(monkeypatch, tmp_path):
    stub_loader(monkeypatch, "fashion_mnist", error=offline("train-labels-idx1-ubyte.gz"))
    with pytest.raises(md.SourceNotFoundError) as err:
        md.load_multi_digits_arrays("multi_fashion", "pareto", "train")
    msg = str(err.value)
    # Every way: the Debian package, a directory with the four file names, TFDS, the download.
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path / "no_debian") in msg
    assert "data_dir" in msg and "--data_dir" in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "TFDS data set 'fashion_mnist'" in msg and "not prepared" in msg
    assert "keras.datasets.fashion_mnist.load_data()" in msg and "internet" in msg
    # ... and why the download failed, in the words of the error.
    assert "Temporary failure in name resolution" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_download_turned_off_is_said(monkeypatch):
    calls = stub_loader(monkeypatch, "mnist", error=AssertionError("must not be called"))
    monkeypatch.setenv(_sources.DOWNLOAD_ENV, "0")
    with pytest.raises(md.SourceNotFoundError, match="turned off by MTL_TF_DOWNLOAD=0"):
        md.resolve_sources("multi_mnist")
    assert calls == []


def test_explicit_directory_is_never_replaced_by_the_download(monkeypatch, tmp_path):
    calls = stub_loader(monkeypatch, "mnist", fixtures.make_source(N_TRAIN, N_TEST))
    with pytest.raises(md.SourceNotFoundError, match=str(tmp_path / "empty")):
        md.resolve_sources("multi_mnist", data_dir=tmp_path / "empty")
    assert calls == []


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"test_images": np.zeros((N_TEST, 32, 32), np.uint8)}, "test images: expected uint8 [N, 28, 28]"),
        ({"train_labels": np.zeros(N_TRAIN - 1, np.uint8)}, f"train labels: expected [{N_TRAIN}]"),
        ({"test_labels": np.full(N_TEST, 10, np.uint8)}, "test labels: expected 0..9, found 10..10"),
    ],
)
def test_unusable_download_is_reported(monkeypatch, bad, expected):
    stub_loader(monkeypatch, "mnist", {**fixtures.make_source(N_TRAIN, N_TEST), **bad})
    with pytest.raises(md.SourceNotFoundError) as err:
        md.resolve_sources("multi_mnist")
    assert "returned unusable data" in str(err.value) and expected in str(err.value)
