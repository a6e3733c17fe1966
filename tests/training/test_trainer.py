"""The trainer's pure parts (mtl_tf.training.trainer): options, methods, schedules, optimizers, log grouping."""

import re

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer


def test_balancer_spec_merges_method_defaults_and_overrides():
    config = config_lib.base_config()
    config.method = "mgda_ub"
    config.method_options = ml_collections.ConfigDict({"mgda_ub": {"normalization": "l2"}, "uncertainty": {"task_types": "classification"}})
    assert trainer.balancer_spec(config) == ("mgda_ub", {"normalization": "l2"})
    config.balancer.normalization = "loss+"
    config.balancer.head_update = "official"
    assert trainer.balancer_spec(config) == ("mgda_ub", {"normalization": "loss+", "head_update": "official"})
    config.method = "static"
    with pytest.raises(ValueError, match=r"\['head_update', 'normalization'\] do not apply to method 'static'"):
        trainer.balancer_spec(config)
    config = config_lib.base_config()
    config.method = "single_task"
    assert trainer.balancer_spec(config) == ("uniform", {})
    config.method = "grid"
    with pytest.raises(ValueError, match="set of 'static' runs"):
        trainer.balancer_spec(config)


def test_multistep_schedule_changes_rate_at_the_first_step_of_the_milestone_epoch():
    config = config_lib.base_config()
    config.optimizer.learning_rate = 1.0
    config.schedule = ml_collections.ConfigDict({"name": "multistep", "milestones": (1, 2), "factor": 0.5})
    optimizer = trainer.make_optimizer(config, steps=3)
    variable = tf.Variable(0.0)
    moves = []
    for _ in range(7):
        before = float(variable.numpy())
        optimizer.apply([tf.constant(1.0)], [variable])
        moves.append(before - float(variable.numpy()))
    # Epoch 0: steps 0-2 at 1.0; epoch 1: steps 3-5 at 0.5; epoch 2: 0.25.
    np.testing.assert_allclose(moves, [1, 1, 1, 0.5, 0.5, 0.5, 0.25])


def test_optimizer_from_config():
    config = config_lib.base_config()
    config.optimizer = ml_collections.ConfigDict({"name": "adam", "learning_rate": 0.01, "momentum": 0.9})
    optimizer = trainer.make_optimizer(config, steps=10)
    assert optimizer.__class__.__name__ == "Adam" and float(optimizer.learning_rate) == pytest.approx(0.01)
    config.optimizer.name = "lbfgs"
    with pytest.raises(ValueError, match="unknown optimizer.name 'lbfgs'"):
        trainer.make_optimizer(config, steps=10)


def test_group_by_task_takes_the_longest_task_prefix():
    logs = {"loss": 3.0, "seg_accuracy": 0.5, "seg_depth_loss": 1.0, "seg_loss": 2.0, "val_seg_accuracy": 0.4}
    grouped = trainer.group_by_task(logs, ("seg", "seg_depth"))
    assert grouped == {"seg": {"accuracy": 0.5, "loss": 2.0}, "seg_depth": {"loss": 1.0}}
    assert trainer.group_by_task(logs, ("seg", "seg_depth"), prefix="val_") == {"seg": {"accuracy": 0.4}, "seg_depth": {}}


def test_unknown_method_lists_every_method():
    config = config_lib.base_config()
    config.method = "mgda-ub"
    with pytest.raises(ValueError, match=r"unknown method 'mgda-ub'; expected a balancing method \[.*'mgda_ub'.*\] "
                                         r"or a trainer-level baseline \['single_task', 'grid'\]"):
        trainer.check_method(config)


def test_settings_are_read_once_and_a_bad_field_is_named():
    config = config_lib.base_config()
    config.method = "single_task"
    config.single_task.task = "left"
    settings = trainer.TrainSettings.from_config(config)
    assert (settings.balancer, settings.balancer_options, settings.task) == ("uniform", {}, "left")
    assert (settings.optimizer, settings.optimizer_options, settings.learning_rate) == ("sgd", {"momentum": 0.0}, 1e-3)
    # A config saved before a field existed gets the field's default.
    del config.train["patience"], config["grid"]
    settings = trainer.TrainSettings.from_config(config)
    assert settings.patience == 0 and settings.grid_divisions == 10
    saved = ml_collections.ConfigDict({**config_lib.config_to_dict(config), "epochs": "ten"})  # as from a config.json
    with pytest.raises(ValueError, match="config field 'epochs' has an invalid value 'ten'"):
        trainer.TrainSettings.from_config(saved)
    config.single_task.task = ""
    with pytest.raises(ValueError, match="set --config.single_task.task"):
        trainer.TrainSettings.from_config(config)
    config.method = "grid"
    config.balancer.normalization = "l2"
    with pytest.raises(ValueError, match=r"\['normalization'\] do not apply to method 'grid' \(trained as 'static'\)"):
        trainer.TrainSettings.from_config(config)
    config.balancer.normalization = None
    del config["seed"]
    with pytest.raises(ValueError, match="config field 'seed' is missing"):
        trainer.TrainSettings.from_config(config)


@pytest.mark.parametrize("field, value, message", [
    ("optimizer.learning_rate", 0.0, "'optimizer.learning_rate' is 0.0; expected a positive number"),
    ("optimizer.learning_rate", -0.1, "'optimizer.learning_rate' is -0.1; expected a positive number"),
    ("epochs", 0, "'epochs' is 0; expected an integer >= 1"),
    ("batch_size", 0, "'batch_size' is 0; expected an integer >= 1"),
    ("train.steps_per_execution", 0, "'train.steps_per_execution' is 0; expected an integer >= 1"),
])
def test_values_that_cannot_train_are_refused_naming_the_field(field, value, message):
    config = config_lib.base_config()
    config_lib.apply_overrides(config, {field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.TrainSettings.from_config(config)


def test_train_and_evaluate_refuses_before_writing_anything(tmp_path):
    config = config_lib.base_config()
    config.epochs = 0
    with pytest.raises(ValueError, match="'epochs' is 0"):
        trainer.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing file, not a directory"):
        trainer.train_and_evaluate(config_lib.base_config(), tmp_path / "file")


def test_batches_the_replicas_cannot_split_are_refused_naming_batch_size_and_replicas():
    sizes = {"train": 256, "val": 64, "test": 64}
    trainer.check_replica_batches(2, 64, sizes)  # every batch splits
    trainer.check_replica_batches(1, 63, {"train": 255})  # one replica: anything goes
    with pytest.raises(trainer.RunRefused, match="'batch_size' is 63, which does not split over the strategy's 2 replicas"):
        trainer.check_replica_batches(2, 63, sizes)
    with pytest.raises(ValueError, match="'data.eval_batch_size' is 33, .* 2 replicas; use a multiple of 2"):
        trainer.check_replica_batches(2, 64, sizes, eval_batch_size=33)
    with pytest.raises(ValueError, match=r"the train split has 257 examples: its last batch holds 1 \(batch size 64\), "
                                         r"fewer than the strategy's 2 replicas.*drop_remainder=True"):
        trainer.check_replica_batches(2, 64, {**sizes, "train": 257})
    trainer.check_replica_batches(2, 64, {**sizes, "train": 257}, drop_remainder=True)  # the last batch is dropped
    with pytest.raises(ValueError, match=r"the test split has 67 examples: its last batch holds 3 \(batch size 64\), "
                                         r"fewer than the strategy's 4 replicas"):
        trainer.check_replica_batches(4, 64, {**sizes, "test": 67})


def test_banner_and_what_an_interrupted_run_saved(tmp_path):
    config = config_lib.base_config()
    config_lib.apply_overrides(config, {"benchmark": "multi_fashion", "method": "mgda_ub", "epochs": 30})
    settings = trainer.TrainSettings.from_config(config)
    start = trainer.banner(settings, tmp_path / "run")
    assert "mgda_ub on multi_fashion, seed 0, 30 epochs of batch 256" in start
    assert f"workdir:     {tmp_path / 'run'}" in start
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in start and "starting at epoch 1" in start
    resumed = trainer.banner(settings, tmp_path / "run", restored_epoch=7, state={"best_epoch": 5, "best_value": 0.8125})
    assert f"resuming after epoch 7 of 30 (restored from {tmp_path / 'run' / 'backup'}); best so far: epoch 5, " \
           "val_monitor 0.8125" in resumed

    run = tmp_path / "run"
    run.mkdir()
    assert trainer.describe_saved(run) == f"no epoch of {run} had finished, nothing is saved."
    (run / "backup").mkdir()
    (run / "backup" / "epoch-0003.weights.h5").write_text("x")
    (run / "backup" / "state.json").write_text('{"epoch": 3, "weights": "epoch-0003.weights.h5"}')
    assert trainer.describe_saved(run) == f"epoch 3 is saved in {run / 'backup'}."
