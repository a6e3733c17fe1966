"""Multi-digit benchmarks built from small IDX data sets written in the official layout."""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.data import _digit_sources, idx, multi_digits as md
from tests.data import fixtures

N_TRAIN, N_TEST = 200, 100
N_VAL = 20  # 10 % of the training items
PARETO = (300, 40, 50)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Fake MNIST (gzip) and Fashion-MNIST (plain) dirs, plus a parent with both as subdirs."""
    root = tmp_path_factory.mktemp("sources")
    mnist = fixtures.make_source(N_TRAIN, N_TEST, seed=1, style="digits")
    fashion = fixtures.make_source(N_TRAIN, N_TEST, seed=2, style="fashion")
    fixtures.write_idx_dataset(root / "mnist_only", mnist, gz=True)
    fixtures.write_idx_dataset(root / "fashion_only", fashion, gz=False)
    fixtures.write_idx_dataset(root / "both" / "mnist", mnist, gz=True)
    fixtures.write_idx_dataset(root / "both" / "fashion_mnist", fashion, gz=False)
    return {"root": root, "mnist": mnist, "fashion": fashion}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Caches go to a fresh dir; TFDS looks in an empty dir; never the user's."""
    monkeypatch.setenv(md.CACHE_ENV, str(tmp_path / "env_cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    # No test depends on the network: Keras's download fallback stays off here
    # (tests/data/test_download_fallback.py stubs it).
    monkeypatch.setenv("MTL_TF_DOWNLOAD", "0")


def _kw(sources, name, tmp_path, **extra):
    root = sources["root"]
    dirs = {
        "multi_mnist": {"data_dir": root / "mnist_only"},
        "multi_fashion": {"data_dir": root / "fashion_only"},
        "multi_fashion_mnist": {"data_dir": root / "both"},
    }[name]
    return {"cache_dir": tmp_path / "cache", "pareto_sizes": PARETO, **dirs, **extra}


def _src(sources, name):
    return {
        "multi_mnist": (sources["mnist"], sources["mnist"]),
        "multi_fashion": (sources["fashion"], sources["fashion"]),
        "multi_fashion_mnist": (sources["mnist"], sources["fashion"]),
    }[name]


# -- composition on hand-made items ------------------------------------------------


def test_compose_pairs_places_and_overlaps_by_max():
    left = np.full((1, 28, 28), 100, np.uint8)
    left[0, 0, 0] = 255
    right = np.full((1, 28, 28), 50, np.uint8)
    right[0, 27, 27] = 200
    right[0, 0, 0] = 150  # lands inside the left item, and is larger there
    out = md.compose_pairs(left, right, [[1, 2, 8, 8]])[0]
    assert out.shape == (36, 36) and out.dtype == np.uint8
    assert out[1, 2] == 255  # left corner
    assert out[35, 35] == 200  # right corner
    assert out[8, 8] == 150  # max(100, 150)
    assert out[10, 10] == 100  # overlap: max(100, 50)
    assert out[1 + 27, 2 + 3] == 100  # left only
    assert out[33, 33] == 50  # right only
    assert out[0].sum() == 0 and out[:, :2].sum() == 0 and out[0:8, 30:].sum() == 0
    assert out[:, 35].sum() == 50 * 27 + 200 and out[35, :].sum() == 50 * 27 + 200
    np.testing.assert_array_equal(out, fixtures.place_by_hand(left[0], right[0], [1, 2, 8, 8]))


def test_compose_pairs_rejects_offsets_off_canvas():
    items = np.zeros((1, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="outside"):
        md.compose_pairs(items, items, [[0, 0, 9, 0]])


def test_nearest_resize_matches_pil_convention(rng):
    assert md.nearest_index(36, 28).tolist() == [
        int((i + 0.5) * 36 / 28) for i in range(28)
    ]
    assert md.nearest_index(36, 28)[:4].tolist() == [0, 1, 3, 4]
    assert md.nearest_index(36, 28)[-1] == 35
    images = rng.integers(0, 256, (3, 36, 36), dtype=np.uint8)
    out = md.nearest_resize(images, 28)
    assert out.shape == (3, 28, 28)
    for i in range(3):
        np.testing.assert_array_equal(out[i], fixtures.resize_nearest_by_hand(images[i]))


# -- the Sener protocol ----------------------------------------------------------------


@pytest.mark.parametrize("name", md.DATASETS)
def test_sener_arrays(sources, tmp_path, name):
    left_src, right_src = _src(sources, name)
    ranges = {"train": (0, N_TRAIN - N_VAL), "val": (N_TRAIN - N_VAL, N_TRAIN), "test": (0, N_TEST)}
    for split, (lo, hi) in ranges.items():
        a = md.load_multi_digits_arrays(name, "sener", split, **_kw(sources, name, tmp_path))
        pool = "test" if split == "test" else "train"
        assert a["images"].shape == (hi - lo, 28, 28) and a["images"].dtype == np.uint8
        # Each item once on the left, a permutation of the same items on the right.
        np.testing.assert_array_equal(a["left_index"], np.arange(lo, hi))
        np.testing.assert_array_equal(np.sort(a["right_index"]), np.arange(lo, hi))
        np.testing.assert_array_equal(a["left"], left_src[f"{pool}_labels"][a["left_index"]])
        np.testing.assert_array_equal(a["right"], right_src[f"{pool}_labels"][a["right_index"]])
        assert a["left"].dtype == np.int32 and a["right"].dtype == np.int32
        for i in range(0, hi - lo, 7):
            canvas = fixtures.place_by_hand(
                left_src[f"{pool}_images"][a["left_index"][i]],
                right_src[f"{pool}_images"][a["right_index"][i]],
                (0, 0, 6, 6),
            )
            np.testing.assert_array_equal(a["images"][i], fixtures.resize_nearest_by_hand(canvas))


def test_sener_dataset_normalised(sources, tmp_path):
    kw = _kw(sources, "multi_mnist", tmp_path)
    ds = md.load_multi_digits("multi_mnist", "sener", "val", **kw)
    image_spec, label_spec = ds.element_spec
    assert image_spec.shape == (28, 28, 1) and image_spec.dtype == tf.float32
    assert set(label_spec) == set(md.TASKS) == {"left", "right"}
    assert all(s.shape == () and s.dtype == tf.int32 for s in label_spec.values())
    a = md.load_multi_digits_arrays("multi_mnist", "sener", "val", **kw)
    images = np.stack([x.numpy() for x, _ in ds])
    expected = (a["images"][..., None] / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    labels = [(y["left"].numpy(), y["right"].numpy()) for _, y in ds]
    assert labels == list(zip(a["left"], a["right"]))


# -- the Pareto protocol --------------------------------------------------------------


@pytest.mark.parametrize("name", md.DATASETS)
def test_pareto_arrays(sources, tmp_path, name):
    left_src, right_src = _src(sources, name)
    for split, size in zip(md.SPLITS, PARETO):
        a = md.load_multi_digits_arrays(name, "pareto", split, **_kw(sources, name, tmp_path))
        pool = "test" if split == "test" else "train"
        assert a["images"].shape == (size, 36, 36) and a["images"].dtype == np.uint8
        lo, hi = {"train": (0, 180), "val": (180, 200), "test": (0, 100)}[split]
        for key in ("left_index", "right_index"):  # no item leaks across splits
            assert a[key].min() >= lo and a[key].max() < hi
        np.testing.assert_array_equal(a["left"], left_src[f"{pool}_labels"][a["left_index"]])
        np.testing.assert_array_equal(a["right"], right_src[f"{pool}_labels"][a["right_index"]])
        assert set(np.unique(a["left"])) <= set(range(10))
        assert set(np.unique(a["right"])) <= set(range(10))
        if name != "multi_fashion_mnist":
            assert np.all(a["left"] != a["right"])
        off = a["offsets"].astype(int)
        assert off[:, :2].min() == 0 and off[:, :2].max() == 4
        assert off[:, 2:].min() == 4 and off[:, 2:].max() == 8
        for i in range(size):
            expected = fixtures.place_by_hand(
                left_src[f"{pool}_images"][a["left_index"][i]],
                right_src[f"{pool}_images"][a["right_index"][i]],
                off[i],
            )
            np.testing.assert_array_equal(a["images"][i], expected)


def test_pareto_dataset_scaled_to_unit_range(sources, tmp_path):
    kw = _kw(sources, "multi_fashion", tmp_path)
    ds = md.load_multi_digits("multi_fashion", "pareto", "test", **kw)
    assert ds.element_spec[0].shape == (36, 36, 1)
    images = np.stack([x.numpy() for x, _ in ds])
    a = md.load_multi_digits_arrays("multi_fashion", "pareto", "test", **kw)
    np.testing.assert_allclose(images[..., 0], a["images"] / 255.0, atol=1e-6)
    assert images.min() == 0.0 and images.max() <= 1.0


def test_pareto_raw_pixels_share_the_cache_with_unit(sources, tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    kw = _kw(sources, "multi_fashion", tmp_path)
    a = md.load_multi_digits_arrays("multi_fashion", "pareto", "test", **kw)
    raw = np.stack([x.numpy() for x, _ in md.load_multi_digits("multi_fashion", "pareto", "test", pixel_scale="raw", **kw)])
    unit = np.stack([x.numpy() for x, _ in md.load_multi_digits("multi_fashion", "pareto", "test", pixel_scale="unit", **kw)])
    np.testing.assert_array_equal(raw[..., 0], a["images"].astype(np.float32))  # no scaling, no mean/std
    np.testing.assert_allclose(unit, raw / 255.0, atol=1e-6)
    batched = md.multi_digits_datasets("multi_fashion", "pareto", 16, pixel_scale="raw", **kw)
    first, _ = next(iter(batched.test))
    np.testing.assert_array_equal(first.numpy()[..., 0], a["images"][:16].astype(np.float32))
    # One cache for both scales: it was built once, by the first call.
    assert calls == ["train", "val", "test"]
    assert len(list((tmp_path / "cache" / "multi_digits").glob("*.npz"))) == 1


def test_pixel_scale_choices(sources, tmp_path):
    kw = _kw(sources, "multi_mnist", tmp_path)
    with pytest.raises(ValueError, match="pixel_scale='raw' does not apply to protocol 'sener'.*0.1307.*0.3081"):
        md.load_multi_digits("multi_mnist", "sener", "val", pixel_scale="raw", **kw)
    with pytest.raises(ValueError, match="pixel_scale='raw' does not apply to protocol 'sener'"):
        md.multi_digits_datasets("multi_mnist", "sener", 8, pixel_scale="raw", **kw)
    with pytest.raises(ValueError, match="unknown pixel_scale 'imagenet'; expected one of unit, raw"):
        md.multi_digits_datasets("multi_mnist", "pareto", 8, pixel_scale="imagenet", **kw)


@pytest.mark.skipif(
    not idx.has_idx_dataset(md.DEBIAN_FASHION_MNIST_DIR),
    reason=f"Debian package dataset-fashion-mnist not installed ({md.DEBIAN_FASHION_MNIST_DIR})",
)
def test_pixel_scales_on_real_fashion_mnist(tmp_path):
    kw = {"cache_dir": tmp_path, "pareto_sizes": (512, 64, 256), "max_eval_examples": 256}
    ranges = {}
    for scale in md.PIXEL_SCALES:
        data = md.multi_digits_datasets("multi_fashion", "pareto", 256, pixel_scale=scale, **kw)
        images = np.concatenate([x.numpy() for x, _ in data.test])
        ranges[scale] = (images.min(), images.max())
    assert ranges["raw"][0] == 0.0 and 250.0 <= ranges["raw"][1] <= 255.0
    assert ranges["unit"][0] == 0.0 and 250.0 / 255.0 <= ranges["unit"][1] <= 1.0


# -- determinism and cache ------------------------------------------------------------


@pytest.mark.parametrize("protocol", md.PROTOCOLS)
def test_deterministic_for_a_seed(sources, tmp_path, protocol):
    kw = _kw(sources, "multi_mnist", tmp_path)
    del kw["cache_dir"]
    a = md.load_multi_digits_arrays("multi_mnist", protocol, "train", cache_dir=tmp_path / "c1", **kw)
    b = md.load_multi_digits_arrays("multi_mnist", protocol, "train", cache_dir=tmp_path / "c2", **kw)
    c = md.load_multi_digits_arrays("multi_mnist", protocol, "train", cache_dir=tmp_path / "c1", seed=1, **kw)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["right_index"], c["right_index"])
    assert not np.array_equal(a["images"], c["images"])


def _counting(monkeypatch):
    calls = []
    real = md._compose_split

    def spy(split, *args, **kwargs):
        calls.append(split)
        return real(split, *args, **kwargs)

    monkeypatch.setattr(md, "_compose_split", spy)
    return calls


def test_cache_reused_and_rebuilt_on_new_parameters(sources, tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    kw = _kw(sources, "multi_mnist", tmp_path)
    first = md.load_multi_digits_arrays("multi_mnist", "pareto", "train", **kw)
    assert calls == ["train", "val", "test"]  # every split built at once
    path = md.cache_path("multi_mnist", "pareto", **kw)
    sidecar = path.with_suffix(".json")
    assert path.parent == tmp_path / "cache" / "multi_digits"
    assert path.name.startswith("multi_mnist-pareto-seed0-") and sidecar.exists()
    meta = json.loads(sidecar.read_text())
    assert meta["params"]["seed"] == 0 and meta["params"]["sizes"] == list(PARETO)
    assert set(meta["checksums"]) == {f"{s}_{k}" for s in md.SPLITS for k in md._ARRAY_KEYS}
    mtime = path.stat().st_mtime_ns

    again = md.load_multi_digits_arrays("multi_mnist", "pareto", "train", **kw)
    md.load_multi_digits_arrays("multi_mnist", "pareto", "test", **kw)
    assert calls == ["train", "val", "test"] and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first["images"], again["images"])

    for change in ({"seed": 3}, {"val_fraction": 0.2}, {"pareto_sizes": (310, 40, 50)}):
        del calls[:]
        md.load_multi_digits_arrays("multi_mnist", "pareto", "train", **{**kw, **change})
        assert calls == ["train", "val", "test"], change
        assert md.cache_path("multi_mnist", "pareto", **{**kw, **change}) != path
    assert len(list(path.parent.glob("*.npz"))) == 4


def test_cache_dir_from_environment(sources, tmp_path, monkeypatch):
    kw = _kw(sources, "multi_fashion", tmp_path)
    del kw["cache_dir"]
    monkeypatch.setenv(md.CACHE_ENV, str(tmp_path / "from_env"))
    md.load_multi_digits_arrays("multi_fashion", "sener", "test", **kw)
    assert list((tmp_path / "from_env" / "multi_digits").glob("multi_fashion-sener-seed0-*.npz"))


@pytest.mark.parametrize("damage", ["flip", "rewrite", "truncate", "sidecar"])
def test_corrupt_cache_rebuilt_with_warning(sources, tmp_path, monkeypatch, damage):
    kw = _kw(sources, "multi_mnist", tmp_path)
    good = md.load_multi_digits_arrays("multi_mnist", "sener", "train", **kw)
    path = md.cache_path("multi_mnist", "sener", **kw)
    raw = bytearray(path.read_bytes())
    if damage == "flip":  # a pixel in the middle of the training images
        raw[len(raw) // 4] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "rewrite":  # a valid zip whose content no longer matches the checksums
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["train_images"][3, 10, 10] ^= 0xFF
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif damage == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        path.with_suffix(".json").write_text("{not json")
    calls = _counting(monkeypatch)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = md.load_multi_digits_arrays("multi_mnist", "sener", "train", **kw)
    assert calls == ["train", "val", "test"]
    for key in good:
        np.testing.assert_array_equal(rebuilt[key], good[key])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        md.load_multi_digits_arrays("multi_mnist", "sener", "train", **kw)
    assert calls == ["train", "val", "test"]


def test_max_examples_is_a_prefix(sources, tmp_path):
    kw = _kw(sources, "multi_mnist", tmp_path)
    full = md.load_multi_digits_arrays("multi_mnist", "pareto", "train", **kw)
    part = md.load_multi_digits_arrays("multi_mnist", "pareto", "train", max_examples=17, **kw)
    assert part["images"].shape[0] == 17
    np.testing.assert_array_equal(part["images"], full["images"][:17])


# -- batched datasets -----------------------------------------------------------------


def test_batched_datasets(sources, tmp_path):
    kw = _kw(sources, "multi_fashion_mnist", tmp_path)
    def make():
        return md.multi_digits_datasets(
            "multi_fashion_mnist", "sener", 32, eval_batch_size=16, seed=0,
            max_train_examples=100, max_eval_examples=20, **kw,
        )

    def order(ds):
        return np.concatenate([np.concatenate([b[1]["left"], b[1]["right"]]) for b in ds])

    d, d2 = make(), make()
    epoch1, epoch2 = order(d.train), order(d.train)
    assert not np.array_equal(epoch1, epoch2)  # reshuffled every epoch
    np.testing.assert_array_equal(order(d2.train), epoch1)  # same seed, same order
    np.testing.assert_array_equal(order(d2.train), epoch2)
    assert d.sizes == {"train": 100, "val": 20, "test": 20}
    assert d.image_shape == (28, 28, 1)
    x, y = next(iter(d.train))
    assert x.shape == (32, 28, 28, 1) and x.dtype == tf.float32
    assert set(y) == set(md.TASKS) and y["left"].dtype == tf.int32
    assert [b[0].shape[0] for b in d.val] == [16, 4]
    a = md.load_multi_digits_arrays("multi_fashion_mnist", "sener", "test", max_examples=20, **kw)
    np.testing.assert_array_equal(order(d.test)[:16], a["left"][:16])  # eval sets keep their order


# -- sources --------------------------------------------------------------------------


def test_data_dir_layouts(sources, tmp_path):
    root = sources["root"]
    cache = {"cache_dir": tmp_path / "cache"}
    # The set's own subdirectory of data_dir, and the per-source flag.
    a = md.load_multi_digits_arrays("multi_mnist", "sener", "test", data_dir=root / "both", **cache)
    b = md.load_multi_digits_arrays("multi_mnist", "sener", "test", mnist_dir=root / "mnist_only", **cache)
    np.testing.assert_array_equal(a["images"], b["images"])
    c = md.load_multi_digits_arrays(
        "multi_fashion_mnist", "sener", "test",
        mnist_dir=root / "mnist_only", fashion_dir=root / "fashion_only", **cache,
    )
    np.testing.assert_array_equal(c["left"], sources["mnist"]["test_labels"])


def test_missing_mnist_names_both_ways(tmp_path):
    with pytest.raises(md.SourceNotFoundError) as err:
        md.load_multi_digits("multi_mnist", "sener", "train", tfds_data_dir=tmp_path / "empty")
    msg = str(err.value)
    assert "MNIST" in msg and "data_dir" in msg and "train-images-idx3-ubyte" in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert "TFDS data set 'mnist'" in msg and "not prepared" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_fashion_names_all_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(_digit_sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no_debian")
    with pytest.raises(md.SourceNotFoundError) as err:
        md.load_multi_digits_arrays("multi_fashion", "pareto", "train", tfds_data_dir=tmp_path / "e")
    msg = str(err.value)
    assert "Fashion-MNIST" in msg and "data_dir" in msg and "train-labels-idx1-ubyte" in msg
    assert "'fashion_mnist'" in msg and "dataset-fashion-mnist" in msg


def test_explicit_dir_lacking_files_is_an_error(sources, tmp_path):
    bad = tmp_path / "partial"
    arrays = sources["mnist"]
    fixtures.write_idx_dataset(bad, arrays)
    (bad / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(md.SourceNotFoundError) as err:
        md.load_multi_digits_arrays("multi_mnist", "sener", "train", data_dir=bad)
    msg = str(err.value)
    assert str(bad) in msg and "t10k-images-idx3-ubyte" in msg and "'mnist'" in msg
    # The mixed set wants mnist/ and fashion_mnist/ below data_dir.
    with pytest.raises(md.SourceNotFoundError, match="fashion_mnist"):
        md.load_multi_digits_arrays(
            "multi_fashion_mnist", "sener", "train", data_dir=sources["root"] / "mnist_only"
        )


def test_tfds_used_when_no_directory(sources, tmp_path, monkeypatch):
    seen = []

    def fake_tfds(kind, tfds_data_dir, download):
        seen.append((kind, download))
        return _digit_sources._Source(kind, f"fake TFDS {kind}", f"fake|{kind}", lambda: sources["mnist"]), ""

    monkeypatch.setattr(_digit_sources, "_tfds_source", fake_tfds)
    a = md.load_multi_digits_arrays("multi_mnist", "sener", "test", cache_dir=tmp_path / "c")
    assert seen == [("mnist", False)]
    np.testing.assert_array_equal(a["left"], sources["mnist"]["test_labels"])
    # An explicit directory wins over TFDS.
    del seen[:]
    md.resolve_sources("multi_mnist", data_dir=sources["root"] / "mnist_only")
    assert seen == []


def test_tfds_unavailable_is_reported_not_raised(tmp_path):
    source, reason = _digit_sources._tfds_source("mnist", str(tmp_path / "empty"), False)
    assert source is None and "not prepared" in reason
    source, reason = _digit_sources._tfds_source("no_such_dataset_xyz", str(tmp_path / "empty"), False)
    assert source is None and "unavailable" in reason


@pytest.mark.skipif(
    not idx.has_idx_dataset(md.DEBIAN_FASHION_MNIST_DIR),
    reason=f"Debian package dataset-fashion-mnist not installed ({md.DEBIAN_FASHION_MNIST_DIR})",
)
def test_debian_fashion_found_without_arguments(tmp_path):
    left, right = md.resolve_sources("multi_fashion")
    assert left is right and str(md.DEBIAN_FASHION_MNIST_DIR) in left.origin
    a = md.load_multi_digits_arrays("multi_fashion", "sener", "test", cache_dir=tmp_path, max_examples=5)
    assert a["images"].shape == (5, 28, 28) and a["images"].max() > 0
    train = md.load_multi_digits_arrays("multi_fashion", "sener", "train", cache_dir=tmp_path)
    val = md.load_multi_digits_arrays("multi_fashion", "sener", "val", cache_dir=tmp_path)
    assert train["images"].shape[0] == 54_000 and val["images"].shape[0] == 6_000


def test_bad_arguments(sources, tmp_path):
    kw = _kw(sources, "multi_mnist", tmp_path)
    with pytest.raises(ValueError, match="protocol"):
        md.load_multi_digits_arrays("multi_mnist", "lin", "train", **kw)
    with pytest.raises(ValueError, match="split"):
        md.load_multi_digits_arrays("multi_mnist", "sener", "dev", **kw)
    with pytest.raises(ValueError, match="name"):
        md.load_multi_digits_arrays("multi_cifar", "sener", "train", **kw)
    with pytest.raises(ValueError, match="val_fraction"):
        md.load_multi_digits_arrays("multi_mnist", "sener", "train", val_fraction=0.0, **kw)
