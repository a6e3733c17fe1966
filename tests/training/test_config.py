"""Configs (mtl_tf.training.config): the balancer fields, overrides, command-line values."""

import pytest

from mtl_tf import balancers
from mtl_tf.training import config as config_lib


def test_every_balancer_option_is_a_config_field():
    options = config_lib.balancer_option_names()
    assert set(options) == set(balancers.available())
    assert options["mgda_ub"] == ("normalization", "head_update", "solver", "max_iterations", "tolerance")
    assert "weights" in options["static"] and options["uniform"] == ()
    fields = config_lib.base_config().balancer
    assert {o for names in options.values() for o in names} == set(fields.keys())
    assert all(fields[name] is None for name in fields.keys())


def test_apply_overrides_sets_existing_fields_only():
    config = config_lib.base_config()
    config_lib.apply_overrides(config, {"seed": 4, "balancer.weights": [0.2, 0.8], "optimizer.learning_rate": 2,
                                        "benchmark": 7})
    assert config.seed == 4 and config.balancer.weights == [0.2, 0.8]
    assert config.optimizer.learning_rate == 2.0 and config.benchmark == "7"
    with pytest.raises(KeyError, match="no field 'sed'"):
        config_lib.apply_overrides(config, {"sed": 1})
    with pytest.raises(KeyError, match="no field 'optimiser'"):
        config_lib.apply_overrides(config, {"optimiser.momentum": 1})
    assert config_lib.parse_value("(1, 2)") == (1, 2) and config_lib.parse_value("loss+") == "loss+"


def test_unknown_command_line_fields_are_named_before_absl_parses_them():
    config = config_lib.base_config()
    assert config_lib.unknown_fields(config, ["seed", "optimizer.momentum", "balancer.weights"]) == []
    assert config_lib.unknown_fields(config, ["foo", "optimizer.bar", "seed.x"]) == ["foo", "optimizer.bar", "seed.x"]
    argv = ["train.py", "--config", "configs/multi_fashion.py:smoke", "--config.seed=1", "--config.foo=2",
            "--config.optimizer.bar=3", "--workdir=/tmp/x"]
    with pytest.raises(ValueError, match=r"--config.foo, --config.optimizer.bar: no such field in the config "
                                         r"configs/multi_fashion.py:smoke"):
        config_lib.check_override_flags(argv)
    config_lib.check_override_flags(["train.py", "--config=configs/multi_fashion.py:smoke", "--config.seed=1"])
    config_lib.check_override_flags(["train.py", "--config.foo=1"])  # no config file: config_flags reports it


def test_every_config_has_data_drop_remainder_as_the_mirrored_refusal_advises():
    # trainer.check_replica_batches tells the user to set --config.data.drop_remainder=True.
    import pathlib

    for path in sorted(pathlib.Path("configs").glob("*.py")):
        if path.stem in ("__init__", "common"):
            continue
        config = config_lib.load(str(path))
        assert "drop_remainder" in config.data and config.data.drop_remainder is False, path.name
