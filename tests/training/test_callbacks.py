"""mtl_tf.training.callbacks: the epoch backup is replaced atomically, restores weights, optimizer state
and epoch, and a crash while writing leaves the previous backup in force (in process; the SIGKILL
versions are in tests/launch/test_resume.py)."""

import json

import keras
import numpy as np
import pytest

from mtl_tf.training import callbacks
from mtl_tf.model import MultiTaskModel


def tiny_model():
    encoder = keras.Sequential([keras.layers.Dense(4, activation="relu")], name="encoder")
    model = MultiTaskModel(encoder, {"a": keras.layers.Dense(3), "b": keras.layers.Dense(1)},
                           {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "b": "mse"}, balancer="mgda_ub")
    model.build((None, 5))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.optimizer.build(model.trainable_variables)
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    return x, {"a": rng.integers(0, 3, 32), "b": rng.normal(size=(32, 1)).astype("float32")}


def snapshot(model):
    return [np.array(v) for v in model.weights] + [np.array(v) for v in model.optimizer.variables]


def test_backup_restores_weights_optimizer_state_and_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x, y = data()
    backup = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[backup])
    assert callbacks.read_state(tmp_path / "backup") == {"epoch": 2, "weights": "epoch-0002.weights.h5"}
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["epoch-0002.weights.h5", "state.json"]
    saved = snapshot(model)

    keras.utils.set_random_seed(1)
    fresh = tiny_model()
    restorer = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    restorer.set_model(fresh)
    restorer.on_train_begin()
    assert fresh._initial_epoch == 2 and restorer.restored_epoch == 2
    assert int(fresh.optimizer.iterations) == 8  # 2 epochs x 4 steps
    for a, b in zip(snapshot(fresh), saved):
        np.testing.assert_array_equal(a, b)


def test_a_crash_while_writing_keeps_the_previous_backup(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    backup = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    backup.set_model(model)
    backup.save(1)
    at_epoch_1 = snapshot(model)
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    def crash(path):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(callbacks, "_fsync_file", crash)
    with pytest.raises(KeyboardInterrupt):
        backup.save(2)
    monkeypatch.undo()
    assert json.loads((tmp_path / "backup" / "state.json").read_text())["epoch"] == 1

    fresh = tiny_model()
    restorer = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    restorer.set_model(fresh)
    restorer.on_train_begin()
    assert fresh._initial_epoch == 1
    for a, b in zip(snapshot(fresh), at_epoch_1):
        np.testing.assert_array_equal(a, b)


def test_advance_dataset_gives_the_order_of_a_later_epoch():
    import tensorflow as tf

    def make():
        return tf.data.Dataset.range(16).shuffle(16, seed=3, reshuffle_each_iteration=True)

    uninterrupted = make()
    orders = [list(uninterrupted.as_numpy_iterator()) for _ in range(3)]
    assert orders[0] != orders[2]
    resumed = make()
    callbacks.advance_dataset(resumed, 2)
    assert list(resumed.as_numpy_iterator()) == orders[2]


def test_unbuilt_model_is_refused(tmp_path):
    model = MultiTaskModel(keras.layers.Dense(2), {"a": keras.layers.Dense(1)}, {"a": "mse"})
    callback = callbacks.AtomicBackupAndRestore(tmp_path)
    callback.set_model(model)
    with pytest.raises(ValueError, match="must be built"):
        callback.on_train_begin()


def test_an_unreadable_state_or_a_truncated_backup_names_the_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    backup = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    backup.set_model(model)
    weights = backup.save(1)
    with open(weights, "r+b") as f:
        f.truncate(200)  # a disk that filled up, a copy that stopped
    restorer = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    restorer.set_model(tiny_model())
    with pytest.raises(ValueError, match=rf"backup weights {weights} \(epoch 1\) cannot be loaded.*remove "
                                         rf"{tmp_path / 'backup'} and {tmp_path / 'train_state.json'}.*--overwrite"):
        restorer.on_train_begin()

    (tmp_path / "train_state.json").write_text('{"history": [{"epoch": 1, "lo')  # cut short
    best = callbacks.BestCheckpoint(tmp_path, ["a_accuracy"])
    best.set_model(model)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'train_state.json'} \(the run's history and best epoch\) is "
                                         r"unreadable: .*--overwrite"):
        best.on_train_begin()
