"""The digit benchmarks (mtl_tf.benchmarks.digits), their configs and paper tables (mtl_tf.reports.digits)."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from mtl_tf import benchmarks
from mtl_tf.data import multi_digits
from mtl_tf.nets import lenet
from mtl_tf.reports import digits as digits_report
from mtl_tf.reports import registry
from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.data import fixtures

REAL_FASHION = multi_digits.DEBIAN_FASHION_MNIST_DIR


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("digit_sources")
    mnist = fixtures.make_source(200, 100, seed=1, style="digits")
    fashion = fixtures.make_source(200, 100, seed=2, style="fashion")
    fixtures.write_idx_dataset(root / "mnist", mnist)
    fixtures.write_idx_dataset(root / "fashion_mnist", fashion, gz=False)
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(multi_digits.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))


def small_config(name, variant, data_dir):
    config = config_lib.load(f"configs/{name}.py:{variant}")
    config_lib.apply_overrides(config, {
        "data.pareto_sizes": (128, 32, 32), "data.max_train_examples": 128, "data.max_eval_examples": 32,
        "batch_size": 32, "data.eval_batch_size": 32,
    })
    config_lib.add_data_dir(config, data_dir)
    return config


# -- benchmark builder ------------------------------------------------------------------------


@pytest.mark.parametrize("name", multi_digits.DATASETS)
@pytest.mark.parametrize("protocol", ["sener", "pareto"])
def test_builder_gives_the_protocols_data_and_nets(sources, name, protocol):
    data_dir = sources if name == "multi_fashion_mnist" else sources / ("mnist" if name == "multi_mnist" else "fashion_mnist")
    bench = benchmarks.build(small_config(name, protocol, data_dir))
    assert bench.name == name and bench.task_names == ("left", "right")
    side = 28 if protocol == "sener" else 36
    assert bench.input_shape == (side, side, 1)
    expected = (lenet.MultiLeNetEncoder, lenet.MultiLeNetHead) if protocol == "sener" else (lenet.ParetoLeNetEncoder, lenet.ParetoLeNetHead)
    assert isinstance(bench.encoder, expected[0]) and all(isinstance(h, expected[1]) for h in bench.heads.values())
    assert bench.monitor == ["left_accuracy", "right_accuracy"] and bench.monitor_mode == "max"
    n_val = 20 if protocol == "sener" else 32  # Sener: the 10 % validation items once each
    assert bench.sizes == {"train": 128, "val": min(32, n_val), "test": 32}
    x, y = next(iter(bench.train))
    assert x.shape == (32, side, side, 1) and x.dtype == "float32"
    assert set(y) == {"left", "right"} and all(0 <= int(np.min(v)) and int(np.max(v)) <= 9 for v in y.values())
    logits = bench.heads["left"](bench.encoder(x))
    assert logits.shape == (32, 10)
    assert bench.losses["left"](y["left"], logits).shape == ()


def test_builder_rejects_unknown_protocol_and_model(sources):
    config = small_config("multi_fashion", "pareto", sources / "fashion_mnist")
    config.model.name = "resnet"
    with pytest.raises(ValueError, match="unknown model.name 'resnet'.*pareto_lenet"):
        benchmarks.build(config)
    config.model.name = "auto"
    config.data.protocol = "sabour"
    with pytest.raises(ValueError, match="unknown data.protocol 'sabour'"):
        benchmarks.build(config)


def test_missing_mnist_names_both_ways_to_provide_it(tmp_path):
    config = config_lib.load("configs/multi_mnist.py")
    with pytest.raises(multi_digits.SourceNotFoundError, match="data_dir.*TFDS"):
        benchmarks.build(config)


# -- configs --------------------------------------------------------------------------------


def test_configs_carry_the_papers_hyperparameters():
    fashion = config_lib.load("configs/multi_fashion.py")
    assert (fashion.benchmark, fashion.data.protocol, fashion.model.name) == ("multi_fashion", "pareto", "pareto_lenet")
    assert (fashion.optimizer.name, fashion.optimizer.learning_rate, fashion.optimizer.momentum) == ("sgd", 1e-3, 0.9)
    assert fashion.schedule.name == "multistep" and fashion.schedule.milestones == (15, 30, 45, 60, 75, 90)
    assert fashion.schedule.factor == 0.5
    assert (fashion.batch_size, fashion.epochs, fashion.data.pareto_sizes) == (256, 100, (120_000, 10_000, 10_000))
    mnist = config_lib.load("configs/multi_mnist.py")
    assert (mnist.benchmark, mnist.data.protocol, mnist.model.name) == ("multi_mnist", "sener", "multi_lenet")
    assert (mnist.optimizer.learning_rate, mnist.optimizer.momentum, mnist.schedule.factor) == (0.05, 0.9, 0.85)
    assert mnist.schedule.milestones == (9, 19, 29, 39, 49, 59, 69, 79, 89, 99)
    assert config_lib.load("configs/multi_mnist.py:pareto").data.protocol == "pareto"
    assert config_lib.load("configs/multi_fashion_mnist.py").data.protocol == "pareto"
    smoke = config_lib.load("configs/multi_fashion.py:sener,smoke")
    assert (smoke.data.protocol, smoke.epochs, smoke.data.max_train_examples) == ("sener", 1, 8000)
    for name in ("multi_fashion", "multi_mnist"):
        config = config_lib.load(f"configs/{name}.py")
        assert trainer.balancer_spec(config) == ("uniform", {})
        config.method = "uncertainty"
        assert trainer.balancer_spec(config) == ("uncertainty", {"task_types": "classification"})


def test_configs_default_to_the_official_recipes():
    for spec in ("configs/multi_fashion.py", "configs/multi_fashion_mnist.py", "configs/multi_mnist.py:pareto"):
        config = config_lib.load(spec)
        assert config.data.protocol == "pareto", spec
        assert (config.data.pixel_scale, config.model.initializer) == ("raw", "torch"), spec
    smoke = config_lib.load("configs/multi_fashion.py:smoke")  # a pipeline check keeps the old inputs
    assert (smoke.data.protocol, smoke.data.pixel_scale, smoke.model.initializer) == ("pareto", "unit", "keras")
    for spec in ("configs/multi_mnist.py", "configs/multi_fashion.py:sener"):
        config = config_lib.load(spec)
        assert config.data.protocol == "sener", spec
        # "unit" is Sener's loader normalisation, (x / 255 - 0.1307) / 0.3081.
        assert (config.data.pixel_scale, config.model.initializer, config.model.dropout) == ("unit", "torch", "keras"), spec


def test_builder_applies_pixel_scale_initializer_and_dropout(sources):
    config = small_config("multi_fashion", "pareto", sources / "fashion_mnist")
    bench = benchmarks.build(config)
    assert bench.encoder.initializer == "torch" and all(h.initializer == "torch" for h in bench.heads.values())
    x, _ = next(iter(bench.test))
    assert float(np.max(x)) > 1.5  # raw pixels (the fixture items reach well above 1)
    bench.encoder.build((None, 36, 36, 1))
    assert np.count_nonzero(keras.ops.convert_to_numpy(bench.encoder.conv1.bias)) == 10  # PyTorch's biases
    config.data.pixel_scale = "unit"
    config.model.initializer = "keras"
    bench = benchmarks.build(config)
    x, _ = next(iter(bench.test))
    assert float(np.max(x)) <= 1.0 and bench.encoder.initializer == "keras"
    # A config saved before these fields existed keeps the old behaviour.
    del config.data["pixel_scale"], config.model["initializer"], config.model["dropout"]
    bench = benchmarks.build(config)
    assert float(np.max(next(iter(bench.test))[0])) <= 1.0 and bench.encoder.initializer == "keras"
    sener = small_config("multi_fashion", "sener", sources / "fashion_mnist")
    sener.model.dropout = "official"
    bench = benchmarks.build(sener)
    assert isinstance(bench.encoder.drop2, lenet.UnscaledDropout)
    assert all(isinstance(h.drop, lenet.UnscaledDropout) for h in bench.heads.values())


def test_builder_rejects_mismatched_recipe_fields(sources):
    config = small_config("multi_fashion", "sener", sources / "fashion_mnist")
    config.data.pixel_scale = "raw"
    with pytest.raises(ValueError, match="data.pixel_scale='raw' does not apply to data.protocol='sener'"):
        benchmarks.build(config)
    config = small_config("multi_fashion", "pareto", sources / "fashion_mnist")
    config.model.dropout = "official"
    with pytest.raises(ValueError, match="model.dropout='official' applies to the MultiLeNet only"):
        benchmarks.build(config)
    config.model.dropout = "keras"
    config.model.initializer = "he"
    with pytest.raises(ValueError, match=r"model.initializer='he' is not valid; expected one of \['keras', 'torch'\]"):
        benchmarks.build(config)
    config.model.initializer = "torch"
    config.data.pixel_scale = "gray"
    with pytest.raises(ValueError, match="unknown data.pixel_scale 'gray'"):
        benchmarks.build(config)


def test_config_variants_are_checked():
    with pytest.raises(ValueError, match=r"unknown config variant\(s\) \['fast'\]"):
        config_lib.load("configs/multi_fashion.py:fast")
    with pytest.raises(ValueError, match="one protocol"):
        config_lib.load("configs/multi_fashion.py:sener,pareto")


def test_learning_rate_schedule_of_the_pareto_config():
    config = config_lib.load("configs/multi_fashion.py")
    schedule = trainer.make_learning_rate(config, steps=469)
    # Step s is in epoch s // 469; halved after epochs 15, 30, ..., 90.
    for step, lr in [(0, 1e-3), (15 * 469 - 1, 1e-3), (15 * 469, 5e-4), (30 * 469, 2.5e-4), (99 * 469, 1e-3 / 64)]:
        assert float(schedule(step)) == pytest.approx(lr)


# -- paper tables -----------------------------------------------------------------------------


def test_table_methods_expand_to_runs():
    runs = registry.get("lee_son_table1_multi_fashion").runs(["ordinary", "pareto_mtl_task1", "single_task", "grid4"], [0, 1])
    by_key = {r.key: r for r in runs}
    assert by_key["ordinary-seed1"].overrides == {"method": "static", "balancer.weights": (1.0, 1.0), "seed": 1}
    assert by_key["pareto_mtl_task1-seed0"].overrides["balancer.preference_index"] == 4
    assert by_key["single_task_right-seed0"].overrides["single_task.task"] == "right"
    assert [k for k in by_key if k.startswith("grid") and k.endswith("seed0")] == [
        "grid_w0.75_0.25-seed0", "grid_w0.5_0.5-seed0", "grid_w0.25_0.75-seed0",
    ]
    assert all(r.config == "configs/multi_fashion.py:pareto" for r in runs)
    assert registry.get("sener_table3").runs(["mgda_ub"], [0])[0].config == "configs/multi_mnist.py:sener"


def _result(key, left, right, monitor=None, weights=None):
    seed = int(key.rsplit("-seed", 1)[1])
    return {"run_key": key, "seed": seed, "tasks": {"left": {"accuracy": left}, "right": {"accuracy": right}},
            "monitor": {"value": monitor}, "config": {"balancer": {"weights": weights}}}


def test_render_gives_mean_and_std_beside_the_published_numbers():
    results = [
        _result("single_step-seed0", 0.80, 0.79), _result("single_step-seed1", 0.82, 0.80),
        _result("single_task_left-seed0", 0.90, 0.0), _result("single_task_right-seed0", 0.0, 0.85),
        # Grid: seed 0 picks (0.25, 0.75) by validation, seed 1 picks (0.75, 0.25).
        _result("grid_w0.75_0.25-seed0", 0.70, 0.60, monitor=0.5, weights=[0.75, 0.25]),
        _result("grid_w0.25_0.75-seed0", 0.60, 0.74, monitor=0.6, weights=[0.25, 0.75]),
        _result("grid_w0.75_0.25-seed1", 0.72, 0.62, monitor=0.7, weights=[0.75, 0.25]),
        _result("grid_w0.25_0.75-seed1", 0.62, 0.70, monitor=0.1, weights=[0.25, 0.75]),
        _result("mgda_ub-seed0", 0.75, 0.76),
    ]
    rows = digits_report.aggregate(results)
    assert rows["single_step"][0] == pytest.approx((81.0, np.sqrt(2.0), 2))
    assert rows["single_step"][1] == pytest.approx((79.5, np.sqrt(0.5), 2))
    assert rows["single_task"] == ((90.0, 0.0, 1), (85.0, 0.0, 1))
    assert rows["grid"][0] == pytest.approx((66.0, np.std([60, 72], ddof=1), 2))
    assert rows["grid"][1] == pytest.approx((68.0, np.std([74, 62], ddof=1), 2))
    markdown = registry.get("lee_son_table1_multi_fashion").render(results)
    lines = markdown.splitlines()
    proposed = next(line for line in lines if line.startswith("| Proposed"))
    assert [c.strip() for c in proposed.split("|")[2:7]] == ["82.41", "81.78", "81.00 ± 1.41", "79.50 ± 0.71", "2"]
    assert next(line for line in lines if "`mgda_ub`" in line).split("|")[2:5] == [" — ", " — ", " 75.00 "]
    points = sorted(digits_report.grid_points(results))
    assert points == [([0.25, 0.75], 61.0, 72.0), ([0.75, 0.25], 71.0, 61.0)]
    sener = registry.get("sener_table3").render(results)
    assert any(line.startswith("| Single task") and "97.23" in line and "90.00" in line for line in sener.splitlines())


def test_profile_figure_is_written(tmp_path):
    results = [_result("uniform-seed0", 0.8, 0.7), _result("grid_w0.5_0.5-seed0", 0.6, 0.6, 0.6, [0.5, 0.5])]
    paths = registry.get("sener_table3").figures(results, tmp_path)
    assert paths == [tmp_path / "sener_table3_profile.png"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"real Fashion-MNIST not installed at {REAL_FASHION} "
                    "(Debian package dataset-fashion-mnist)")
def test_smoke_training_on_real_fashion_mnist_beats_chance(tmp_path):
    """One epoch on 8,000 real multi-fashion composites: both tasks far above chance (10 %)."""
    config = config_lib.load("configs/multi_fashion.py:smoke")
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(config, tmp_path / "real", verbose=0)
    assert results["sizes"] == {"train": 8000, "val": 1000, "test": 1000}
    accuracies = [results["tasks"][t]["accuracy"] for t in ("left", "right")]
    assert min(accuracies) > 0.40, accuracies


def test_drop_remainder_drops_the_last_smaller_training_batch(sources):
    # 100 training composites in batches of 32: 3 full batches and one of 4, which drop_remainder drops.
    sizes = {"data.pareto_sizes": (100, 32, 32), "data.max_train_examples": 100}
    counts = {}
    for drop in (False, True):
        config = small_config("multi_fashion", "pareto", sources / "fashion_mnist")
        config_lib.apply_overrides(config, {**sizes, "data.drop_remainder": drop})
        bench = benchmarks.build(config)
        counts[drop] = [int(x.shape[0]) for x, _ in bench.train]
        assert bench.sizes["train"] == 100
    assert counts == {False: [32, 32, 32, 4], True: [32, 32, 32]}


def test_check_nets_refuses_a_bad_architecture_option_naming_the_field_without_data(tmp_path):
    # No data anywhere: check_nets constructs the nets only.
    config = config_lib.load("configs/multi_fashion.py:smoke")
    config_lib.apply_overrides(config, {"model.name": "mmoe", "model.num_experts": 0})
    config_lib.add_data_dir(config, tmp_path / "nothing_here")
    with pytest.raises(ValueError, match=r"^config field 'model.num_experts': MMoE: num_experts must be an integer >= 1; "
                                         r"got 0 \(--config.model.num_experts=...\)$"):
        benchmarks.check(config)
    config_lib.apply_overrides(config, {"model.num_experts": 2})
    benchmarks.check(config)
