"""MTAN on the SegNet set-ups (`model.name=mtan` in configs/cityscapes_segnet.py and configs/nyuv2.py)."""

import keras
import numpy as np
import pytest

from mtl_tf import benchmarks
from mtl_tf.nets import mtan
from mtl_tf.training import config as config_lib
from mtl_tf.training import trainer
from tests.data import scene_fixtures as sf


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    nyu = tmp_path_factory.mktemp("nyuv2")
    sf.make_mtan(nyu, {"train": 4, "val": 2}, height=32, width=64, num_classes=13)
    city = tmp_path_factory.mktemp("mtan_cityscapes")
    sf.make_mtan(city, {"train": 4, "val": 2}, height=32, width=64, num_classes=7, normals=False, label_folder="label_7")
    return {"configs/nyuv2.py": nyu, "configs/cityscapes_segnet.py": city}


def _config(path, root, **overrides):
    config = config_lib.load(path)
    config_lib.apply_overrides(config, {
        "data.data_dir": str(root), "data.image_size": (32, 64), "batch_size": 2, "data.eval_batch_size": 2,
        "epochs": 1, "schedule.name": "constant", "model.filters": (4, 8, 8), "model.convs_per_block": (1, 1, 2),
        "model.name": "mtan", **overrides,
    })
    return config


@pytest.mark.parametrize("path,tasks", [("configs/nyuv2.py", ("segmentation", "depth", "normal")),
                                        ("configs/cityscapes_segnet.py", ("segmentation", "depth"))])
def test_mtan_is_built_and_trains_with_mgda_ub(roots, tmp_path, path, tasks):
    config = _config(path, roots[path], method="mgda_ub")
    bench = benchmarks.build(config)
    assert isinstance(bench.encoder, mtan.MTANBackbone)
    assert tuple(bench.heads) == tasks and all(isinstance(h, mtan.MTANHead) for h in bench.heads.values())
    x, _ = next(iter(bench.train))
    maps = bench.encoder(x, training=True)
    outputs = {t: bench.heads[t](maps, training=True) for t in tasks}
    assert outputs["depth"].shape == (2, 32, 64, 1) and outputs["segmentation"].shape[:3] == (2, 32, 64)
    if "normal" in tasks:
        np.testing.assert_allclose(np.linalg.norm(outputs["normal"].numpy(), axis=-1), 1.0, rtol=1e-4)
    keras.backend.clear_session()
    results = trainer.train_and_evaluate(config, tmp_path / "run", verbose=0)
    assert set(tasks) <= set(results["tasks"])


def test_unknown_segnet_model_is_refused(roots):
    config = _config("configs/nyuv2.py", roots["configs/nyuv2.py"], **{"model.name": "pspnet"})
    with pytest.raises(ValueError, match="unknown model.name 'pspnet'.*'segnet', 'mtan'"):
        benchmarks.build(config)
