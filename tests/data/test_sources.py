"""The shared source rules: candidate paths, the TFDS lookup, and errors that name every way."""

from __future__ import annotations

import pytest

from mtl_tf.data import _digit_sources, _sources, celeba, multi_digits as md


def test_find_first_takes_the_first_candidate_of_the_right_kind(tmp_path):
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Anno" / "list.txt").write_text("x")
    (tmp_path / "list.txt").mkdir()  # a directory where a file is wanted does not count
    found, looked = _sources.find_first(tmp_path, ["list.txt", "Anno/list.txt"])
    assert found == tmp_path / "Anno" / "list.txt"
    assert looked == [tmp_path / "list.txt", tmp_path / "Anno" / "list.txt"]
    found, _ = _sources.find_first(tmp_path, ["list.txt", "Anno/list.txt"], directory=True)
    assert found == tmp_path / "list.txt"
    assert _sources.find_first(tmp_path, ["absent"])[0] is None


def test_how_to_provide_names_every_way_and_what_was_tried():
    text = _sources.how_to_provide("Foo", ["way one", "way two", "way three"], ["no data_dir given", "TFDS 'foo' x"])
    assert text.splitlines() == [
        "Provide Foo in one of these ways:",
        "  * way one;",
        "  * way two;",
        "  * way three.",
        "Tried: no data_dir given; TFDS 'foo' x.",
    ]
    assert "Tried" not in _sources.how_to_provide("Foo", ["only way"])
    way = _sources.tfds_way("foo", "its host has quotas")
    assert "'foo'" in way and "tfds_download=True" in way and "TFDS_DATA_DIR" in way
    assert way.endswith("(its host has quotas)")


@pytest.mark.parametrize("value, off", [(None, False), ("1", False), ("yes", False), ("0", True),
                                         ("false", True), (" OFF ", True), ("No", True)])
def test_download_refusal_reads_the_environment(monkeypatch, value, off):
    if value is None:
        monkeypatch.delenv("MTL_TF_DOWNLOAD", raising=False)
    else:
        monkeypatch.setenv("MTL_TF_DOWNLOAD", value)
    refusal = _sources.download_refusal()
    assert (refusal is not None) == off
    if off:
        assert f"MTL_TF_DOWNLOAD={value}" in refusal


def test_every_data_module_error_is_a_source_not_found_error():
    for module in (md, celeba):
        assert issubclass(module.SourceNotFoundError, _sources.SourceNotFoundError)
        assert issubclass(module.SourceNotFoundError, FileNotFoundError)


def test_fashion_mnist_error_names_every_source(tmp_path, monkeypatch):
    monkeypatch.setattr(_digit_sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no_debian")
    monkeypatch.setenv(_sources.DOWNLOAD_ENV, "0")  # no network in tests
    with pytest.raises(_sources.SourceNotFoundError) as err:
        md.resolve_sources("multi_fashion", tfds_data_dir=tmp_path / "no_tfds")
    lines = str(err.value).splitlines()
    ways = [line for line in lines if line.startswith("  * ")]
    assert len(ways) == 4
    assert "IDX files" in ways[0] and "data_dir=" in ways[0] and "fashion_dir=" in ways[0]
    assert "TFDS data set 'fashion_mnist'" in ways[1]
    assert "dataset-fashion-mnist" in ways[2] and str(tmp_path / "no_debian") in ways[2]
    tried = lines[-1]
    assert tried.startswith("Tried: no data_dir") and "Debian package files not in" in tried
    assert "TFDS 'fashion_mnist' is not prepared" in tried
    assert "keras.datasets.fashion_mnist.load_data()" in ways[3] and "MTL_TF_DOWNLOAD=0" in ways[3]
    assert "load_data() not tried (download turned off by MTL_TF_DOWNLOAD=0)" in tried


def test_celeba_error_names_every_source(tmp_path):
    with pytest.raises(_sources.SourceNotFoundError) as err:
        celeba.load_celeba_arrays("train", tfds_data_dir=tmp_path / "no_tfds", cache_dir=tmp_path / "cache")
    text = str(err.value)
    ways = [line for line in text.splitlines() if line.startswith("  * ")]
    assert len(ways) == 2
    assert "data_dir" in ways[0] and celeba.ATTRIBUTE_FILE in ways[0] and celeba.PARTITION_FILE in ways[0]
    assert "TFDS data set 'celeb_a'" in ways[1] and "quota" in ways[1]
    assert "no data_dir given" in text and "'celeb_a' is not prepared" in text


# -- TFDS --------------------------------------------------------------------------------


class _Builder:
    version = "1.2.3"

    def __init__(self, data_dir, prepared=True):
        self.data_dir = str(data_dir)
        self.prepared = prepared
        self.downloads = 0

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self):
        self.downloads += 1
        self.prepared = True


@pytest.fixture
def tfds_builders(monkeypatch):
    """Replaces ``tfds.builder``; returns the builders it hands out, by name."""
    tfds = pytest.importorskip("tensorflow_datasets")
    builders = {}

    def builder(name, data_dir=None):
        if name not in builders:
            raise ValueError(f"no such data set {name}")
        return builders[name]

    monkeypatch.setattr(tfds, "builder", builder)
    return builders


def test_tfds_prepared_is_found_without_download(tmp_path, tfds_builders):
    tfds_builders["foo"] = _Builder(tmp_path)
    found, reason = _sources.find_tfds("foo", tmp_path, inspect=lambda b: b.version)
    assert reason == "" and found.builder is tfds_builders["foo"]
    assert found.origin == f"TFDS 'foo' 1.2.3 in {tmp_path}" and found.info == "1.2.3"
    assert tfds_builders["foo"].downloads == 0


def test_tfds_downloads_only_when_asked(tmp_path, tfds_builders):
    tfds_builders["foo"] = _Builder(tmp_path, prepared=False)
    found, reason = _sources.find_tfds("foo", tmp_path)
    assert found is None and reason == f"TFDS 'foo' is not prepared in {tmp_path}"
    assert tfds_builders["foo"].downloads == 0
    found, reason = _sources.find_tfds("foo", tmp_path, download=True)
    assert found is not None and tfds_builders["foo"].downloads == 1


def test_tfds_errors_mean_unavailable_never_raised(tmp_path, tfds_builders):
    found, reason = _sources.find_tfds("absent", tmp_path)
    assert found is None and reason == "TFDS 'absent' unavailable (ValueError: no such data set absent)"
    tfds_builders["foo"] = _Builder(tmp_path)

    def broken(builder):
        raise KeyError("validation")

    found, reason = _sources.find_tfds("foo", tmp_path, inspect=broken)
    assert found is None and reason.startswith("TFDS 'foo' unavailable (KeyError")
