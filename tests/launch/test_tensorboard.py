"""TensorBoard logs of a smoke run (mtl_tf.training.callbacks via the trainer): per-task losses and metrics,
the task weights (alpha) and the learning rate, every N steps and every epoch, written by callbacks
and not by summary ops inside the compiled train step."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.launch import events
from tests.launch.conftest import TINY

LR = 3e-3  # the smoke config's Adam learning rate


@pytest.fixture(scope="module")
def run(tmp_path_factory, fake_fashion_dir):
    config = config_lib.load("configs/multi_fashion.py:smoke")
    config_lib.apply_overrides(config, {
        **TINY, "method": "mgda_ub", "seed": 1, "epochs": 2, "train.tensorboard_update_freq": 2,
        "schedule.name": "multistep", "schedule.milestones": (1,), "schedule.factor": 0.5,
    })
    config_lib.add_data_dir(config, fake_fashion_dir)
    workdir = tmp_path_factory.mktemp("tensorboard") / "run"
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(config, workdir, verbose=0)
    return {"workdir": workdir, "results": results, "config": config}


def test_every_n_steps_per_task_losses_metrics_alpha_and_learning_rate(run):
    logged = events.scalars(run["workdir"] / "tensorboard" / "train")
    for key in ("loss", "left_loss", "right_loss", "left_accuracy", "right_accuracy", "left_weight", "right_weight",
                "left_weight_mean", "right_weight_mean", "learning_rate"):
        assert [s for s, _ in logged[f"batch_{key}"]] == [2, 4, 6, 8], key  # 2 epochs x 4 steps, every 2nd
    alphas = np.array([[v for _, v in logged[f"batch_{t}_weight"]] for t in ("left", "right")])
    np.testing.assert_allclose(alphas.sum(0), 1.0, atol=1e-6)  # MGDA-UB's alpha is on the simplex
    assert np.all(alphas > 0) and np.max(np.abs(alphas - 0.5)) > 1e-4
    # The rate after s steps (the one step s + 1 uses): halved from the first step of epoch 2 (s >= 4).
    np.testing.assert_allclose([v for _, v in logged["batch_learning_rate"]], [LR, LR / 2, LR / 2, LR / 2], rtol=1e-6)


def test_every_epoch_the_same_scalars_match_the_history(run):
    train = events.scalars(run["workdir"] / "tensorboard" / "train")
    validation = events.scalars(run["workdir"] / "tensorboard" / "validation")
    history = run["results"]["history"]
    for key in ("loss", "left_loss", "right_loss", "left_accuracy", "right_accuracy", "left_weight", "right_weight",
                "left_weight_mean", "right_weight_mean"):
        assert [s for s, _ in train[f"epoch_{key}"]] == [0, 1], key
        np.testing.assert_allclose([v for _, v in train[f"epoch_{key}"]], [h[key] for h in history], rtol=1e-6, err_msg=key)
    for key in ("loss", "left_loss", "left_accuracy", "right_accuracy"):
        np.testing.assert_allclose([v for _, v in validation[f"epoch_{key}"]], [h[f"val_{key}"] for h in history], rtol=1e-6)
    assert "epoch_learning_rate" in train
    assert not [k for k in validation if "weight" in k], sorted(validation)  # evaluate has no task weights


def test_the_compiled_train_step_has_no_summary_ops(run, fake_fashion_dir):
    config = run["config"]
    keras.backend.clear_session()
    benchmark = trainer.build_benchmark(config)
    model = trainer.build_model(config, benchmark)
    batch = next(iter(benchmark.train))
    graph = tf.function(model.train_step).get_concrete_function(batch).graph
    op_types = {op.type for op in graph.get_operations()}
    assert any("Conv2D" in t for t in op_types)  # it is the real step
    assert not [t for t in op_types if "Summary" in t or t.startswith("Write")], sorted(op_types)


def test_every_epoch_is_written_when_update_freq_does_not_divide_the_steps(tmp_path):
    """3 steps per epoch, update_freq 2: Keras 3.15 alone writes epoch 0 only (global step 3 is odd)."""
    from mtl_tf.training.callbacks import TensorBoard

    import mtl_tf

    keras.utils.set_random_seed(0)
    model = mtl_tf.MultiTaskModel(keras.layers.Dense(3), {"a": keras.layers.Dense(1)}, {"a": "mse"})
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)).astype("float32"), {"a": rng.normal(size=(12, 1)).astype("float32")}
    model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y), verbose=0,
              callbacks=[TensorBoard(str(tmp_path), update_freq=2)])
    train = events.scalars(tmp_path / "train")
    validation = events.scalars(tmp_path / "validation")
    assert [s for s, _ in train["epoch_a_loss"]] == [0, 1, 2]
    assert [s for s, _ in validation["epoch_a_loss"]] == [0, 1, 2]
    assert [s for s, _ in train["batch_a_loss"]] == [2, 4, 6, 8]
