"""launch/export.py then launch/predict.py on the session's smoke run: the SavedModel, loaded in a
fresh process that never imports mtl_tf, predicts what the in-memory model predicts (1e-6)."""

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from mtl_tf import export
from tests.launch.conftest import REPO, run_script

# Runs launch/predict.py as __main__ and then proves mtl_tf was never imported in that process.
PREDICT_WITHOUT_MTL_TF = """
import runpy, sys
sys.argv = ["predict.py", *sys.argv[1:]]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exit:
    if exit.code not in (0, None):
        raise
assert not any(m == "mtl_tf" or m.startswith("mtl_tf.") for m in sys.modules), "predict.py imported mtl_tf"
print("NO_MTL_TF")
"""


@pytest.fixture(scope="module")
def exported(cli_run, fake_fashion_dir, isolated_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "saved_model"
    run_script("export.py", [f"--workdir={cli_run['workdir']}", f"--out={out}", f"--data_dir={fake_fashion_dir}"], isolated_env)
    return out


def run_predict(model_dir, files, env, output_json=None, check=True):
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # mtl_tf is not importable there
    args = [f"--model={model_dir}", *([f"--output_json={output_json}"] if output_json else []), *map(str, files)]
    code = PREDICT_WITHOUT_MTL_TF.format(script=str(REPO / "launch" / "predict.py"))
    completed = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd="/", capture_output=True, text=True, timeout=120)
    if check and completed.returncode != 0:
        raise AssertionError(f"predict failed:\n{completed.stdout}\n{completed.stderr[-3000:]}")
    return completed


def test_saved_model_predictions_equal_the_in_memory_model(exported, cli_run, fake_fashion_dir, isolated_env, tmp_path):
    rng = np.random.default_rng(7)
    batch = rng.random((5, 36, 36, 1)).astype("float32")
    np.save(tmp_path / "batch.npy", batch)
    pixels = (rng.random((36, 36)) * 255).astype("uint8")
    Image.fromarray(pixels).save(tmp_path / "one.png")
    completed = run_predict(exported, [tmp_path / "batch.npy", tmp_path / "one.png"], isolated_env, tmp_path / "pred.json")
    assert "NO_MTL_TF" in completed.stdout
    assert "left: class=" in completed.stdout and "right: class=" in completed.stdout
    predicted = json.loads((tmp_path / "pred.json").read_text())

    keras.backend.clear_session()
    model, _, input_shape = export.load_trained_model(cli_run["workdir"], data_dir=fake_fashion_dir)
    assert input_shape == (36, 36, 1)
    png = (pixels.astype("float32") / 255.0)[None, :, :, None]
    for file, x in ((tmp_path / "batch.npy", batch), (tmp_path / "one.png", png)):
        logits = {t: np.asarray(v, dtype="float64") for t, v in model(x, training=False).items()}
        for task in ("left", "right"):
            expected = np.exp(logits[task] - logits[task].max(-1, keepdims=True))
            expected /= expected.sum(-1, keepdims=True)
            # float32 softmax probabilities (<= 1) of the same float32 graph, computed in another process
            # whose kernels may sum in another order: 8 eps32 ~ 1e-6.
            np.testing.assert_allclose(predicted[str(file)][task], expected, rtol=0, atol=1e-6)
    assert (exported / "assets" / "task_names.txt").read_text().split() == ["left", "right"]
    assert json.loads((exported / "assets" / "config.json").read_text())["method"] == "mgda_ub"


@functools.lru_cache(maxsize=None)
def load_predict_module():
    # Once per process: the script defines absl flags at import.
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_predict", REPO / "launch" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrong_shape_or_dtype_is_a_clear_error(exported, isolated_env, tmp_path):
    predict = load_predict_module()
    np.save(tmp_path / "small.npy", np.zeros((2, 28, 28, 1), "float32"))
    np.save(tmp_path / "ints.npy", np.zeros((36, 36, 1), "int64"))
    Image.fromarray(np.zeros((20, 30), "uint8")).save(tmp_path / "small.png")
    (tmp_path / "notes.txt").write_text("x")
    for file, message in (
        ("small.npy", "shape [2, 28, 28, 1], expected one example [36, 36, 1] or a batch [N, 36, 36, 1]"),
        ("ints.npy", "dtype int64, expected float32"),
        ("small.png", "shape [20, 30, 1], expected one example [36, 36, 1]"),
        ("notes.txt", "unsupported file type '.txt'"),
    ):
        with pytest.raises(predict.InputError) as error:
            predict.read_examples(tmp_path / file, (36, 36, 1), np.float32)
        assert message in str(error.value) and file in str(error.value)
    assert predict.read_examples(tmp_path / "small.npy", (28, 28, 1), np.float32).shape == (2, 28, 28, 1)
    # The command line reports it and exits with 2 (one process, TensorFlow only).
    completed = run_predict(exported, [tmp_path / "small.npy"], isolated_env, check=False)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "small.npy: shape [2, 28, 28, 1], expected one example [36, 36, 1]" in completed.stderr


def test_export_records_the_pixel_map_and_predict_applies_it(exported, tmp_path):
    metadata = json.loads((exported / "assets" / "outputs.json").read_text())
    np.testing.assert_allclose(metadata["input"]["pixels"]["scale"], 1 / 255)  # the smoke variant keeps pixels / 255
    predict = load_predict_module()
    pixels = (np.arange(36 * 36) % 256).astype("uint8").reshape(36, 36)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    raw = predict.read_examples(tmp_path / "p.png", (36, 36, 1), np.float32, {"scale": 1.0, "offset": 0.0})
    np.testing.assert_array_equal(raw[0, :, :, 0], pixels.astype("float32"))  # the pareto recipe: 0..255
    with pytest.raises(predict.InputError, match="not a scaling of 8-bit pixels"):
        predict.read_examples(tmp_path / "p.png", (36, 36, 1), np.float32, None)
    np.save(tmp_path / "x.npy", raw)  # arrays are taken as they are, whatever the map
    np.testing.assert_array_equal(predict.read_examples(tmp_path / "x.npy", (36, 36, 1), np.float32, None), raw)


def test_digit_protocols_pixel_maps():
    from mtl_tf.benchmarks import digits

    p = np.array([0.0, 17.0, 255.0])
    for protocol, scale, expected in (("pareto", "raw", p), ("pareto", "unit", p / 255),
                                      ("sener", "unit", (p / 255 - 0.1307) / 0.3081)):
        a, b = digits.pixel_transform(protocol, scale)
        # One multiply-add against the expected expression's two or three roundings: 8 eps relative.
        np.testing.assert_allclose(a * p + b, expected, rtol=8 * np.finfo(float).eps)


def test_a_large_npy_is_memory_mapped_and_predicted_in_chunks(exported, tmp_path):
    predict = load_predict_module()
    batch = np.random.default_rng(3).random((5, 36, 36, 1)).astype("float32")
    np.save(tmp_path / "five.npy", batch)
    array = predict.read_examples(tmp_path / "five.npy", (36, 36, 1), np.float32)
    assert isinstance(array, np.memmap) and array.shape == (5, 36, 36, 1)  # not read into memory
    _, signature, metadata = predict.load_model(exported)
    chunks = list(predict.predict_in_chunks(signature, metadata, array, batch_size=2))
    assert [start for start, _ in chunks] == [0, 2, 4]
    assert [out["left"].shape[0] for _, out in chunks] == [2, 2, 1]
    whole = predict.predict(signature, metadata, batch)
    for task in ("left", "right"):
        np.testing.assert_allclose(np.concatenate([out[task] for _, out in chunks]), whole[task], atol=1e-6)


def test_an_unfinished_run_is_exported_only_when_allowed_and_says_so(cli_run, fake_fashion_dir, isolated_env, tmp_path):
    import shutil

    run = tmp_path / "unfinished"
    shutil.copytree(cli_run["workdir"], run, ignore=shutil.ignore_patterns(".lock"))
    (run / "results.json").unlink()  # as if killed after epoch 1 of 3
    (run / "backup").mkdir()
    shutil.copy(run / "best.weights.h5", run / "backup" / "epoch-0001.weights.h5")
    (run / "backup" / "state.json").write_text('{"epoch": 1, "weights": "epoch-0001.weights.h5"}')
    (run / "train_state.json").write_text(json.dumps({"history": [{"epoch": 1}], "best_epoch": 1, "best_value": 0.5}))
    config = json.loads((run / "config.json").read_text())
    config["epochs"] = 3
    (run / "config.json").write_text(json.dumps(config))

    assert export.run_status(run) == {"workdir": str(run), "finished": False, "best_epoch": 1, "epochs_trained": 1,
                                      "epochs": 3}
    assert export.run_status(cli_run["workdir"])["finished"] is True
    with pytest.raises(export.UnfinishedRun, match=r"is not finished \(no results.json\): it has trained 1 of 3 epochs, "
                                                   r"and best.weights.h5 is epoch 1.*--allow_unfinished"):
        export.load_trained_run(run)
    completed = run_script("export.py", [f"--workdir={run}", f"--out={tmp_path / 'refused'}"], isolated_env, check=False)
    assert completed.returncode == 2 and "--allow_unfinished" in completed.stderr
    assert "Traceback" not in completed.stderr and not (tmp_path / "refused").exists()

    keras.backend.clear_session()
    model, config, input_shape, pixels = export.load_trained_run(run, data_dir=fake_fashion_dir, allow_unfinished=True)
    export.export_saved_model(model, tmp_path / "allowed", input_shape=input_shape, config=config,
                              pixel_transform=pixels, run=export.run_status(run))
    recorded = json.loads((tmp_path / "allowed" / "assets" / "outputs.json").read_text())["run"]
    assert recorded["finished"] is False and recorded["best_epoch"] == 1 and recorded["epochs_trained"] == 1


def test_predict_without_a_model_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launch" / "predict.py"), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1 and "--model is required" in result.stderr, result.stderr[-500:]


def test_an_empty_npy_and_non_finite_examples_are_refused_naming_the_file_and_the_example(
        exported, isolated_env, tmp_path):
    predict = load_predict_module()
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "truncated.npy", np.zeros((3, 36, 36, 1), "float32"))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "truncated.npy").read_bytes()[:100])
    np.save(tmp_path / "none.npy", np.zeros((0, 36, 36, 1), "float32"))
    batch = np.zeros((5, 36, 36, 1), "float32")
    batch[3, 2, 1, 0] = np.nan
    batch[4, 0, 0, 0] = np.inf
    np.save(tmp_path / "nan.npy", batch)
    inf = np.zeros((2, 36, 36, 1), "float32")
    inf[1, 5, 5, 0] = -np.inf
    np.save(tmp_path / "inf.npy", inf)
    for file, message in (
        ("empty.npy", "empty.npy: the file is empty (0 bytes), not a .npy array"),
        ("truncated.npy", "truncated.npy: not a readable .npy array"),
        ("none.npy", "none.npy: holds no examples (shape [0, 36, 36, 1])"),
        ("nan.npy", "nan.npy: example 3 holds 1 non-finite value(s) (first: nan)"),
        ("inf.npy", "inf.npy: example 1 holds 1 non-finite value(s) (first: -inf)"),
    ):
        with pytest.raises(predict.InputError) as error:
            predict.read_examples(tmp_path / file, (36, 36, 1), np.float32)
        assert str(error.value).startswith(str(tmp_path / message)), str(error.value)
    # Chunked scan of a memory-mapped file: the first bad example in a later chunk is found too.
    with pytest.raises(predict.InputError, match="example 3 holds"):
        predict.check_finite("nan.npy", np.load(tmp_path / "nan.npy", mmap_mode="r"), chunk=2)
    # The command line: one line, exit 2, nothing predicted.
    completed = run_predict(exported, [tmp_path / "empty.npy"], isolated_env, check=False)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'empty.npy'}: the file is empty")
    completed = run_predict(exported, [tmp_path / "nan.npy"], isolated_env, check=False)
    assert completed.returncode == 2 and completed.stdout == "", completed.stderr[-2000:]
    assert f"error: {tmp_path / 'nan.npy'}: example 3 holds 1 non-finite value(s) (first: nan)" in completed.stderr
