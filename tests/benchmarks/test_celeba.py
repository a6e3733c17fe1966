"""Benchmark "celeba": the contract with all 40 tasks, and training through the trainer on generated data.

The data are a small CelebA directory in the official layout (see
`tests/data/test_celeba.py`). Tracing a ResNet-18 training step is the
expensive part on a CPU (tens of seconds for 40 heads), so the default test
trains 3 attributes at width 2 through `configs/celeba.py` and the trainer;
the 40-task epoch is marked slow.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from mtl_tf import benchmarks
from mtl_tf.data import celeba as celeba_data
from mtl_tf.nets import resnet
from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.data.test_celeba import write_celeba_dir


@pytest.fixture(scope="module")
def celeba_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    labels, _, partition = write_celeba_dir(root)
    return root, labels, partition


def _config(celeba_dir, tmp_path, variant=None, **overrides):
    config = config_lib.load("configs/celeba.py" + (f":{variant}" if variant else ""))
    config_lib.add_data_dir(config, celeba_dir)
    config.data.cache_dir = str(tmp_path / "cache")
    config_lib.apply_overrides(config, overrides)
    return config


def test_config_holds_sener_hyperparameters(tmp_path):
    config = config_lib.load("configs/celeba.py")
    assert config.benchmark == "celeba" and config.batch_size == 256 and config.epochs == 100
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("adam", 5e-4)
    assert list(config.schedule.milestones) == list(range(9, 100, 10)) and config.schedule.factor == 0.85
    assert config.data.image_size == 64 and config.model.width == 64
    assert config.model.initializer == "torch"  # the official PyTorch code keeps PyTorch's defaults
    for method in ("mgda", "mgda_ub"):
        config.method = method
        name, options = trainer.balancer_spec(config)
        assert (name, options["normalization"]) == (method, "loss+")
    config.method = "mgda_ub"
    config.balancer.normalization = "l2"  # the command line wins over the config's default
    assert trainer.balancer_spec(config)[1]["normalization"] == "l2"
    smoke = config_lib.load("configs/celeba.py:smoke")
    assert smoke.epochs == 1 and smoke.data.max_train_examples == 2048 and smoke.model.width == 64
    with pytest.raises(ValueError, match="unknown variant"):
        config_lib.load("configs/celeba.py:tiny")


def test_every_method_is_accepted_by_the_config():
    from mtl_tf import balancers

    config = config_lib.load("configs/celeba.py")
    for method in [*balancers.available(), "single_task"]:
        if method == "static":
            continue  # needs 40 weights from the user
        config.method = method
        trainer.balancer_spec(config)


def test_benchmark_contract_with_40_tasks(celeba_dir, tmp_path):
    root, labels, partition = celeba_dir
    config = _config(root, tmp_path, **{"model.width": 2, "batch_size": 5})
    bench = benchmarks.build(config)
    assert "celeba" in benchmarks.available()
    assert bench.name == "celeba" and bench.task_names == celeba_data.ATTRIBUTES
    assert len(bench.heads) == len(bench.losses) == len(bench.metrics) == 40
    assert bench.monitor == [f"{a}_accuracy" for a in celeba_data.ATTRIBUTES] and bench.monitor_mode == "max"
    assert bench.sizes == {s: int((partition == c).sum()) for s, c in zip(("train", "val", "test"), (0, 1, 2))}
    assert bench.input_shape == (64, 64, 3)
    assert isinstance(bench.encoder, resnet.ResNetEncoder) and bench.encoder.width == 2
    head = bench.heads["Smiling"]
    assert isinstance(head, keras.layers.Dense) and head.units == 2
    loss = bench.losses["Smiling"]
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    # Cross-entropy from logits, checked by hand.
    logits = np.array([[2.0, -1.0], [0.5, 0.5]], "float32")
    expected = np.mean([np.log1p(np.exp(-3.0)), np.log(2.0)])
    assert float(loss(np.array([0, 1]), logits)) == pytest.approx(expected, rel=1e-5)
    x, y = next(iter(bench.train))
    assert x.shape == (5, 64, 64, 3) and set(y) == set(celeba_data.ATTRIBUTES)


def test_attribute_subset(celeba_dir, tmp_path):
    root, labels, partition = celeba_dir
    config = _config(root, tmp_path, **{"model.width": 2, "data.attributes": "Young,Male"})
    bench = benchmarks.build(config)
    assert bench.task_names == ("Male", "Young")  # official order
    _, y = next(iter(bench.val))
    rows = np.flatnonzero(partition == 1)[: len(y["Male"])]
    assert set(y) == {"Male", "Young"}
    np.testing.assert_array_equal(y["Male"].numpy(), labels[rows, celeba_data.ATTRIBUTES.index("Male")] == 1)
    config.data.attributes = "Male,Beard"
    with pytest.raises(ValueError, match=r"\['Beard'\] which are not CelebA attributes"):
        benchmarks.build(config)


def test_model_initializer_reaches_the_nets(celeba_dir, tmp_path):
    from mtl_tf.nets import initializers

    root, _, _ = celeba_dir
    config = _config(root, tmp_path, **{"model.width": 2, "data.attributes": "Male"})
    bench = benchmarks.build(config)
    assert bench.encoder.initializer == "torch" and isinstance(bench.heads["Male"], initializers.TorchDense)
    config.model.initializer = "keras"
    bench = benchmarks.build(config)
    assert bench.encoder.initializer == "keras" and type(bench.heads["Male"]) is keras.layers.Dense
    config.model.initializer = "he"
    with pytest.raises(ValueError, match="model.initializer='he'"):
        benchmarks.build(config)


def _train(config, workdir):
    keras.backend.clear_session()
    return trainer.train_and_evaluate(config, workdir, verbose=0)


def test_one_epoch_of_mgda_ub_through_the_trainer(celeba_dir, tmp_path):
    root, _, partition = celeba_dir
    attributes = ("Male", "Smiling", "Young")
    config = _config(
        root, tmp_path, "smoke",
        **{"method": "mgda_ub", "model.width": 2, "batch_size": 8, "data.eval_batch_size": 8,
           "data.attributes": ",".join(attributes), "data.max_train_examples": 16},
    )
    results = _train(config, tmp_path / "run")
    assert results["method"] == "mgda_ub" and results["epochs_trained"] == 1 and results["best_epoch"] == 1
    assert set(results["tasks"]) == set(attributes)
    for task in attributes:
        assert 0.0 <= results["tasks"][task]["accuracy"] <= 1.0
        assert np.isfinite(results["tasks"][task]["loss"])
    history = results["history"][0]
    weights = [history[f"{t}_weight"] for t in attributes]
    assert all(w >= 0 for w in weights) and sum(weights) == pytest.approx(1.0, abs=1e-4)  # alpha on the simplex
    assert history["skipped_update"] == 0.0
    assert results["sizes"]["train"] == 16 and results["sizes"]["test"] == int((partition == 2).sum())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method_options"]["mgda_ub"]["normalization"] == "loss+"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mgda_ub", "uniform"])
def test_one_epoch_with_all_40_tasks(celeba_dir, tmp_path, method):
    root, _, _ = celeba_dir
    config = _config(root, tmp_path, "smoke", **{"method": method, "model.width": 4, "batch_size": 8})
    results = _train(config, tmp_path / "run")
    assert set(results["tasks"]) == set(celeba_data.ATTRIBUTES)
    weights = [results["history"][0][f"{a}_weight"] for a in celeba_data.ATTRIBUTES]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    assert all(np.isfinite(results["tasks"][a]["loss"]) for a in celeba_data.ATTRIBUTES)
