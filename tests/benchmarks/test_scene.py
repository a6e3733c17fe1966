"""The scene-understanding benchmarks wired end to end on tiny data written in the official layouts."""

import json
import math

import keras
import numpy as np
import pytest

from mtl_tf import benchmarks
from mtl_tf.benchmarks import scene
from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.data import scene_fixtures as sf

TINY_SEGNET = {"model.filters": (4, 8), "model.convs_per_block": (1, 1)}


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    sf.make_cityscapes(root, {"train": {"aachen": 2, "bochum": 2}, "val": {"frankfurt": 2}}, height=32, width=64)
    return root


@pytest.fixture(scope="module")
def mtan_roots(tmp_path_factory):
    nyu = tmp_path_factory.mktemp("nyuv2")
    sf.make_mtan(nyu, {"train": 4, "val": 2}, height=16, width=32, num_classes=13)
    city = tmp_path_factory.mktemp("mtan_cityscapes")
    sf.make_mtan(city, {"train": 4, "val": 2}, height=16, width=32, num_classes=7, normals=False, label_folder="label_7")
    return {"nyuv2": nyu, "cityscapes": city}


def cityscapes_config(root, **overrides):
    config = config_lib.load("configs/cityscapes.py")
    config_lib.apply_overrides(config, {
        "data.data_dir": str(root), "data.image_size": (32, 64), "batch_size": 2, "data.eval_batch_size": 2,
        "epochs": 1, "model.encoder_width": 4, "model.encoder_blocks": (1, 1, 1, 1), "model.decoder_channels": 8,
        "model.pool_scales": (1, 2),
        "schedule.name": "constant", **overrides,
    })
    return config


def segnet_config(path, root, **overrides):
    config = config_lib.load(path)
    config_lib.apply_overrides(config, {
        "data.data_dir": str(root), "data.image_size": (16, 32), "batch_size": 2, "data.eval_batch_size": 2,
        "epochs": 1, "schedule.name": "constant", **TINY_SEGNET, **overrides,
    })
    return config


def _fit_one_epoch(config):
    keras.utils.set_random_seed(0)
    benchmark = trainer.build_benchmark(config)
    model = trainer.build_model(config, benchmark)
    history = model.fit(benchmark.train, epochs=1, verbose=0).history
    return benchmark, model, history


def test_registered():
    assert {"cityscapes", "cityscapes_segnet", "nyuv2_segnet"} <= set(benchmarks.available())


# -- one epoch of MGDA-UB on each set-up -------------------------------------------------------------


def test_cityscapes_fits_an_epoch_with_mgda_ub(cityscapes_root):
    benchmark, model, history = _fit_one_epoch(cityscapes_config(cityscapes_root, method="mgda_ub"))
    assert benchmark.task_names == ("segmentation", "instance", "disparity")
    assert benchmark.sizes == {"train": 4, "test": 2} and benchmark.input_shape == (32, 64, 3)
    for key in ("loss", "segmentation_loss", "instance_loss", "disparity_loss", "segmentation_miou",
                "instance_offset_l1", "disparity_abs_error"):
        assert math.isfinite(history[key][0]), key
    weights = [history[f"{t}_weight"][0] for t in benchmark.task_names]
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    # Predictions are at the targets' resolution (1/8 of the input).
    x, y = next(iter(benchmark.test))
    out = model(x, training=False)
    assert out["segmentation"].shape == (2, 4, 8, 19) and y["segmentation"].shape == (2, 4, 8)
    assert out["instance"].shape == y["instance"].shape == (2, 4, 8, 2)
    assert out["disparity"].shape == y["disparity"].shape == (2, 4, 8, 1)


def test_nyuv2_fits_an_epoch_with_mgda_ub(mtan_roots):
    benchmark, model, history = _fit_one_epoch(segnet_config("configs/nyuv2.py", mtan_roots["nyuv2"], method="mgda_ub"))
    assert benchmark.task_names == ("segmentation", "depth", "normal")
    for key in ("loss", "segmentation_pixel_accuracy", "depth_rel_error", "normal_angle_median", "normal_within_11.25"):
        assert math.isfinite(history[key][0]), key
    x, _ = next(iter(benchmark.test))
    normals = model(x, training=False)["normal"].numpy()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)  # unit normals


def test_cityscapes_segnet_trains_and_reports_delta_m(mtan_roots, tmp_path):
    """A whole run through the trainer, with Delta_m against single-task results.json files."""
    baseline = {
        "segmentation": {"miou": 0.4, "pixel_accuracy": 0.5, "loss": 1.0},
        "depth": {"abs_error": 2.0, "rel_error": 0.5, "loss": 2.0},
    }
    paths = []
    for task, metrics in baseline.items():
        run = tmp_path / f"single_{task}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"method": "single_task", "tasks": {task: metrics}}))
        paths.append(str(run if task == "depth" else run / "results.json"))  # a run directory or the file
    config = segnet_config("configs/cityscapes_segnet.py", mtan_roots["cityscapes"], method="mgda_ub",
                           **{"evaluation.baseline_results": ",".join(paths)})
    results = trainer.train_and_evaluate(config, tmp_path / "run", verbose=0)
    tasks = results["tasks"]
    seg, depth = tasks["segmentation"], tasks["depth"]
    terms = [
        -(seg["miou"] - 0.4) / 0.4, -(seg["pixel_accuracy"] - 0.5) / 0.5,
        (depth["abs_error"] - 2.0) / 2.0, (depth["rel_error"] - 0.5) / 0.5,
    ]
    summary = tasks[scene.SUMMARY_KEY]
    assert summary["delta_m"] == pytest.approx(100 * np.mean(terms), rel=1e-6)
    assert summary["delta_m_segmentation"] == pytest.approx(100 * np.mean(terms[:2]), rel=1e-6)
    assert summary["delta_m_depth"] == pytest.approx(100 * np.mean(terms[2:]), rel=1e-6)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["tasks"][scene.SUMMARY_KEY] == summary


# -- Delta_m and baselines -------------------------------------------------------------------------


def test_delta_m_summary_worked_example():
    tasks = {"segmentation": {"miou": 0.5, "pixel_accuracy": 0.8, "loss": 3.0}, "depth": {"abs_error": 0.02, "rel_error": 0.3}}
    baseline = {"segmentation": {"miou": 0.4, "pixel_accuracy": 0.8}, "depth": {"abs_error": 0.025, "rel_error": 0.2}}
    # Terms: -(0.5-0.4)/0.4 = -0.25, 0, (0.02-0.025)/0.025 = -0.2, (0.3-0.2)/0.2 = +0.5.
    summary = scene.delta_m_summary(tasks, baseline, scene.DELTA_M_METRICS["cityscapes_segnet"])
    assert summary == pytest.approx({"delta_m": 1.25, "delta_m_segmentation": -12.5, "delta_m_depth": 15.0})
    with pytest.raises(ValueError, match="baseline has no task 'depth'"):
        scene.delta_m_summary(tasks, {"segmentation": baseline["segmentation"]}, scene.DELTA_M_METRICS["cityscapes_segnet"])
    with pytest.raises(ValueError, match="no metric 'rel_error'"):
        scene.delta_m_summary(tasks, {**baseline, "depth": {"abs_error": 0.025}}, scene.DELTA_M_METRICS["cityscapes_segnet"])


def test_load_baseline_averages_runs_and_names_missing_files(tmp_path):
    for i, miou in enumerate((0.4, 0.6)):
        (tmp_path / f"s{i}.json").write_text(json.dumps({"tasks": {"segmentation": {"miou": miou}}}))
    (tmp_path / "d.json").write_text(json.dumps({"tasks": {"depth": {"abs_error": 1.5}, "multi_task": {"delta_m": 3}}}))
    baseline = scene.load_baseline([tmp_path / "s0.json", tmp_path / "s1.json", tmp_path / "d.json"])
    assert baseline == {"segmentation": {"miou": pytest.approx(0.5)}, "depth": {"abs_error": 1.5}}
    assert scene.load_baseline(None) == {} and scene.load_baseline("") == {}
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        scene.load_baseline(f"{tmp_path / 's0.json'},{tmp_path / 'nothere.json'}")
    (tmp_path / "bad.json").write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(ValueError, match="bad.json: no 'tasks'"):
        scene.load_baseline(tmp_path / "bad.json")


def test_metric_directions_agree_with_the_metric_objects(cityscapes_root, mtan_roots):
    built = [
        benchmarks.build(cityscapes_config(cityscapes_root)),
        benchmarks.build(segnet_config("configs/nyuv2.py", mtan_roots["nyuv2"])),
        benchmarks.build(segnet_config("configs/cityscapes_segnet.py", mtan_roots["cityscapes"])),
    ]
    for benchmark in built:
        for task, metrics in benchmark.metrics.items():
            for metric in metrics:
                assert scene.METRIC_DIRECTIONS[metric.name] == metric.higher_is_better, (task, metric.name)
        for task, names in scene.DELTA_M_METRICS[benchmark.name].items():
            assert set(names) <= {m.name for m in benchmark.metrics[task]}


def test_missing_data_dir_and_mismatched_target_size(cityscapes_root):
    config = config_lib.load("configs/nyuv2.py")
    with pytest.raises(ValueError, match="--config.data.data_dir"):
        benchmarks.build(config)
    with pytest.raises(ValueError, match="leave data.target_size unset"):
        benchmarks.build(cityscapes_config(cityscapes_root, **{"data.target_size": (8, 8)}))


def test_model_initializer_reaches_the_nets(cityscapes_root, mtan_roots):
    bench = benchmarks.build(cityscapes_config(cityscapes_root))
    assert bench.encoder.initializer == "torch" and all(h.initializer == "torch" for h in bench.heads.values())
    bench = benchmarks.build(cityscapes_config(cityscapes_root, **{"model.initializer": "keras"}))
    assert bench.encoder.initializer == "keras" and all(h.initializer == "keras" for h in bench.heads.values())
    with pytest.raises(ValueError, match=r"model.initializer='mtan' is not valid; expected one of \['keras', 'torch'\]"):
        benchmarks.build(cityscapes_config(cityscapes_root, **{"model.initializer": "mtan"}))
    for choice in ("mtan", "torch", "keras"):
        bench = benchmarks.build(segnet_config("configs/nyuv2.py", mtan_roots["nyuv2"], **{"model.initializer": choice}))
        assert bench.encoder.initializer == choice and all(h.initializer == choice for h in bench.heads.values())
    with pytest.raises(ValueError, match=r"model.initializer='xavier' is not valid; expected one of \['mtan', 'torch', 'keras'\]"):
        benchmarks.build(segnet_config("configs/nyuv2.py", mtan_roots["nyuv2"], **{"model.initializer": "xavier"}))


# -- configs -----------------------------------------------------------------------------------


def test_configs_carry_the_papers_settings():
    sener = config_lib.load("configs/cityscapes.py")
    assert (sener.benchmark, sener.batch_size, sener.epochs) == ("cityscapes", 8, 100)
    assert (sener.optimizer.name, sener.optimizer.learning_rate) == ("adam", 5e-4)
    assert sener.schedule.milestones == tuple(range(9, 100, 10)) and sener.schedule.factor == 0.85
    assert sener.data.image_size == (256, 512) and sener.model.output_stride == 8
    for path, benchmark, batch, size in (
        ("configs/cityscapes_segnet.py", "cityscapes_segnet", 8, (128, 256)),
        ("configs/nyuv2.py", "nyuv2_segnet", 2, (288, 384)),
    ):
        config = config_lib.load(path)
        assert (config.benchmark, config.batch_size, config.epochs, config.data.image_size) == (benchmark, batch, 200, size)
        assert (config.optimizer.name, config.optimizer.learning_rate) == ("adam", 1e-4)
        assert (config.schedule.milestones, config.schedule.factor) == ((100,), 0.5)
        assert config.model.filters == (64, 128, 256, 512, 512)
        # MTAN's code re-initialises its convolutions (xavier normal, zero bias) over PyTorch's defaults.
        assert config.model.initializer == "mtan"
    assert sener.model.initializer == "torch"  # Sener's decoders keep PyTorch's defaults
    for path in ("configs/cityscapes.py", "configs/cityscapes_segnet.py", "configs/nyuv2.py"):
        smoke = config_lib.load(f"{path}:smoke")
        assert smoke.epochs == 1 and smoke.data.max_train_examples
        with pytest.raises(ValueError, match="variant"):
            config_lib.load(f"{path}:paper")
        for method in ("uncertainty",):  # per-task options match the tasks
            config = config_lib.load(path)
            config.method = method
            assert len(trainer.balancer_spec(config)[1]["task_types"]) == len(scene.DELTA_M_METRICS[config.benchmark])
