"""The multi-task architectures selectable on the digit benchmarks (model.name=cross_stitch|mmoe|cgc|ple)."""

import keras
import numpy as np
import pytest

from mtl_tf import benchmarks
from mtl_tf.data import multi_digits
from mtl_tf.nets import cross_stitch, lenet, mmoe, ple
from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.data import fixtures


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("digit_sources")
    fixtures.write_idx_dataset(root / "fashion_mnist", fixtures.make_source(200, 100, seed=2, style="fashion"), gz=False)
    return root / "fashion_mnist"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(multi_digits.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))


def _config(variant, data_dir, **overrides):
    config = config_lib.load(f"configs/multi_fashion.py:{variant}")
    config_lib.apply_overrides(config, {
        "data.pareto_sizes": (64, 32, 32), "data.max_train_examples": 64, "data.max_eval_examples": 32,
        "batch_size": 32, "data.eval_batch_size": 32, "epochs": 1, **overrides,
    })
    config_lib.add_data_dir(config, data_dir)
    return config


# Hand counts of the Pareto-MTL LeNet (36x36 input): conv1 9*9*1*10 + 10 = 820, conv2 5*5*10*20 + 20 = 5020,
# fc 5*5*20*50 + 50 = 25050, so one encoder is 30890; the MultiLeNet (28x28): 5*5*10 + 10 = 260,
# 5*5*10*20 + 20 = 5020, 4*4*20*50 + 50 = 16050, 21330.
PARETO, MULTI = 30890, 21330
EXPECTED = {
    # (class, protocol, trainable parameters of the body)
    "mmoe": (mmoe.MMoE, "pareto", 3 * PARETO + 2 * (36 * 36 * 3)),
    "cgc": (ple.PLE, "pareto", 3 * PARETO + 2 * (36 * 36 * 2)),
    # ple: level 1 as cgc plus the shared gate over all 3 experts; level 2: 3 MLP experts of 50*50 + 50, gates 50*2.
    "ple": (ple.PLE, "pareto", 3 * PARETO + 2 * (36 * 36 * 2) + 36 * 36 * 3 + 3 * (50 * 50 + 50) + 2 * 50 * 2),
    "cross_stitch": (cross_stitch.CrossStitch, "sener", 2 * MULTI + 3 * 4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builder_gives_the_architecture_on_the_protocols_lenet(sources, name):
    cls, protocol, params = EXPECTED[name]
    bench = benchmarks.build(_config(protocol, sources, **{"model.name": name}))
    assert isinstance(bench.encoder, cls)
    head_cls = lenet.ParetoLeNetHead if protocol == "pareto" else lenet.MultiLeNetHead
    assert all(isinstance(h, head_cls) for h in bench.heads.values())
    x, _ = next(iter(bench.train))
    z = bench.encoder(x)
    assert {t: tuple(v.shape) for t, v in z.items()} == {"left": (32, 50), "right": (32, 50)}
    assert sum(int(np.prod(v.shape)) for v in bench.encoder.trainable_variables) == params
    assert bench.heads["left"](z["left"]).shape == (32, 10)


@pytest.mark.parametrize("name,method", [("cross_stitch", "mgda"), ("mmoe", "pcgrad"), ("ple", "mgda")])
def test_trains_and_evaluates_through_the_trainer(sources, tmp_path, name, method):
    keras.backend.clear_session()
    config = _config("pareto", sources, **{"model.name": name, "method": method})
    results = trainer.train_and_evaluate(config, tmp_path / name, verbose=0)
    assert set(results["tasks"]) == {"left", "right"}
    assert all(np.isfinite(results["tasks"][t]["accuracy"]) for t in ("left", "right"))


def test_mgda_ub_is_refused_with_the_architecture_named(sources, tmp_path):
    keras.backend.clear_session()
    config = _config("pareto", sources, **{"model.name": "cgc", "method": "mgda_ub"})
    with pytest.raises(ValueError, match="'mgda_ub'.*'cgc' \\(PLE\\).*'mgda' instead of 'mgda_ub'"):
        trainer.train_and_evaluate(config, tmp_path / "cgc", verbose=0)


def test_dropout_option_follows_the_backbone(sources):
    config = _config("pareto", sources, **{"model.name": "mmoe", "model.dropout": "official"})
    with pytest.raises(ValueError, match="MultiLeNet only"):
        benchmarks.build(config)
    bench = benchmarks.build(_config("sener", sources, **{"model.name": "cross_stitch", "model.dropout": "official"}))
    assert any(isinstance(layer, lenet.UnscaledDropout) for layer in bench.encoder.columns["left"][1].layers)
