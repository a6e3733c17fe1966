"""mtl_tf.export: the SavedModel's signature, outputs (softmax / sigmoid / raw) and assets."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import export
from mtl_tf.model import MultiTaskModel


def tiny_model():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(8, activation="relu")], name="encoder")
    heads = {
        "digit": keras.layers.Dense(4, name="digit"),
        "attribute": keras.layers.Dense(1, name="attribute"),
        "depth": keras.layers.Dense(3, name="depth"),
    }
    losses = {
        "digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "attribute": keras.losses.BinaryCrossentropy(from_logits=True),
        "depth": "mse",
    }
    model = MultiTaskModel(encoder, heads, losses, balancer="mgda_ub")
    model.build((None, 5, 5, 2))
    return model


def test_output_kinds_follow_the_losses():
    assert export.output_kind(keras.losses.SparseCategoricalCrossentropy(from_logits=True)) == "softmax"
    assert export.output_kind(keras.losses.CategoricalCrossentropy(from_logits=True)) == "softmax"
    assert export.output_kind(keras.losses.SparseCategoricalCrossentropy(from_logits=False)) == "identity"
    assert export.output_kind(keras.losses.BinaryCrossentropy(from_logits=True)) == "sigmoid"
    assert export.output_kind(keras.losses.MeanAbsoluteError()) == "identity"


def test_saved_model_outputs_equal_the_model_and_carry_assets(tmp_path):
    model = tiny_model()
    metadata = export.export_saved_model(model, tmp_path / "sm", input_shape=(5, 5, 2), config={"method": "mgda_ub", "seed": 4})
    assert metadata["outputs"] == {"digit": "softmax", "attribute": "sigmoid", "depth": "identity"}

    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["image"] and inputs["image"].shape.as_list() == [None, 5, 5, 2]
    assert sorted(signature.structured_outputs) == ["attribute", "depth", "digit"]

    x = np.random.default_rng(0).normal(size=(6, 5, 5, 2)).astype("float32")
    got = signature(image=tf.constant(x))
    raw = {t: np.asarray(v) for t, v in model(x, training=False).items()}
    # Reference activations in numpy.
    exp = np.exp(raw["digit"] - raw["digit"].max(-1, keepdims=True))
    np.testing.assert_allclose(got["digit"].numpy(), exp / exp.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(got["attribute"].numpy(), 1 / (1 + np.exp(-raw["attribute"])), atol=1e-6)
    np.testing.assert_allclose(got["depth"].numpy(), raw["depth"], atol=1e-6)

    assets = tmp_path / "sm" / "assets"
    assert (assets / "task_names.txt").read_text().split() == ["digit", "attribute", "depth"]
    assert json.loads((assets / "config.json").read_text()) == {"method": "mgda_ub", "seed": 4}
    assert json.loads((assets / "outputs.json").read_text())["input"] == {"name": "image", "shape": [None, 5, 5, 2], "dtype": "float32",
                                                                           "pixels": None}  # no pixel map given


def test_export_refuses_a_non_empty_directory_and_unknown_tasks(tmp_path):
    model = tiny_model()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_saved_model(model, tmp_path / "full", input_shape=(5, 5, 2))
    with pytest.raises(ValueError, match=r"tasks \['nope'\]"):
        export.export_saved_model(model, tmp_path / "a", input_shape=(5, 5, 2), task_kinds={"nope": "softmax"})
    with pytest.raises(ValueError, match="expected one of"):
        export.export_saved_model(model, tmp_path / "b", input_shape=(5, 5, 2), task_kinds={"depth": "relu"})


def _dead_pid():
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_export_is_written_aside_and_renamed_so_a_killed_export_blocks_nothing(tmp_path, monkeypatch):
    model = tiny_model()
    # A previous export killed half-way (its process is gone) left its partial directory.
    abandoned = tmp_path / f".sm.{_dead_pid()}.0a1b2c3d.partial"
    (abandoned / "variables").mkdir(parents=True)
    other = tmp_path / ".other.1.0a1b2c3d.partial"  # another output's: not ours to remove
    other.mkdir()

    archive_class = type(keras.export.ExportArchive())  # Keras returns its backend's subclass
    real_write_out = archive_class.write_out

    def dies_half_way(self, filepath, **kwargs):
        real_write_out(self, filepath, **kwargs)
        raise KeyboardInterrupt  # after the SavedModel is written, before it is in place

    monkeypatch.setattr(archive_class, "write_out", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(model, tmp_path / "sm", input_shape=(5, 5, 2))
    assert not (tmp_path / "sm").exists()
    assert not abandoned.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]  # its own partial is removed too

    monkeypatch.setattr(archive_class, "write_out", real_write_out)
    (tmp_path / "sm").mkdir()  # an existing empty directory is fine
    run = {"workdir": "runs/x", "finished": False, "best_epoch": 3, "epochs_trained": 4, "epochs": 10}
    metadata = export.export_saved_model(model, tmp_path / "sm", input_shape=(5, 5, 2), run=run)
    assert metadata["run"] == run
    assert json.loads((tmp_path / "sm" / "assets" / "outputs.json").read_text())["run"] == run
    assert tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"] is not None
