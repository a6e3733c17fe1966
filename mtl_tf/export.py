"""SavedModel export with one named output per task, loadable by TensorFlow alone.

`export_saved_model(model, out_dir, input_shape=..., config=...)` writes a
SavedModel (via `keras.export.ExportArchive`) whose `serving_default`
signature takes one float32 tensor named `image` of shape `[batch, *input_shape]`
and returns a dict with one entry per task, named by the task:

=============  =============================================================
probabilities  softmax over the last axis, for heads trained with a
               (sparse) categorical cross-entropy on logits (classification,
               per-pixel segmentation);
probabilities  sigmoid, for a binary cross-entropy on logits;
identity       the head output as it is, for every other loss (regression
               maps: depth, disparity, normals, instance offsets), and for
               cross-entropies on probabilities (`from_logits=False`).
=============  =============================================================

Assets (`<out>/assets/`): `task_names.txt` (one task a line, in the model's
order), `outputs.json` ({task: output kind}, the input name, shape and dtype,
and `run`: which run and epoch the weights are, see `run_status`) and
`config.json` (the training config, when given). A consumer needs only
`tf.saved_model.load` (see `launch/predict.py`).

The SavedModel is written to a hidden directory beside `out_dir` and renamed into
place, so an export killed half-way leaves no `out_dir` to block the same command
(the leftover `.<out>.<pid>.<hex>.partial` is removed by the next export once its
process is gone).

`load_trained_run(workdir)` rebuilds a finished run of `launch/train.py`
(config.json + best.weights.h5) for export, with `mtl_tf.training.trainer.restore_run`;
a run without results.json is refused unless `allow_unfinished=True`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import keras
import tensorflow as tf

from mtl_tf.training import workdir as workdir_files
from mtl_tf.training.callbacks import read_state

INPUT_NAME = "image"
SIGNATURE = "serving_default"
TASK_NAMES_ASSET = "task_names.txt"
OUTPUTS_ASSET = "outputs.json"
CONFIG_ASSET = "config.json"

_CATEGORICAL = (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy)
_BINARY = (keras.losses.BinaryCrossentropy, keras.losses.BinaryFocalCrossentropy)


def output_kind(loss) -> str:
    """`softmax`, `sigmoid` or `identity`: what turns a head's output into the exported one."""
    from_logits = bool(loss.get_config().get("from_logits", False)) if hasattr(loss, "get_config") else False
    if isinstance(loss, _CATEGORICAL) and from_logits:
        return "softmax"
    if isinstance(loss, _BINARY) and from_logits:
        return "sigmoid"
    return "identity"


_ACTIVATIONS = {"softmax": lambda x: tf.nn.softmax(x, axis=-1), "sigmoid": tf.sigmoid, "identity": tf.identity}


def export_saved_model(model, out_dir, *, input_shape, config=None, task_kinds=None, pixel_transform=None,
                       run=None) -> dict:
    """Writes the SavedModel of a built `MultiTaskModel` to `out_dir`; returns the metadata.

    Args:
      model: a built `MultiTaskModel` (anything with `task_names`, `task_losses`
        and a call returning {task: output}).
      out_dir: the SavedModel directory (must not exist or be empty).
      input_shape: one example's shape, without the batch axis (e.g. (36, 36, 1)).
      config: the training config (a dict or ConfigDict), stored as an asset.
      task_kinds: optional {task: "softmax"|"sigmoid"|"identity"} overriding
        what the losses imply.
      pixel_transform: (scale, offset) from 8-bit pixels to the model input
        (`Benchmark.pixel_transform`), recorded as `input.pixels` in outputs.json
        for `launch/predict.py`; None records that image files cannot be fed.
      run: what the weights are (`run_status`: workdir, finished, best epoch, ...),
        recorded as `run` in outputs.json.

    Raises:
      FileExistsError: `out_dir` exists and is not empty.
      ValueError: an unbuilt model, or `task_kinds` naming unknown tasks or kinds.
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (e.g. with its trained weights loaded) before export")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new --out directory")
    input_shape = tuple(int(d) for d in input_shape)
    task_names = tuple(model.task_names)
    kinds = {t: output_kind(model.task_losses[t]) for t in task_names}
    unknown = sorted(set(task_kinds or {}) - set(task_names))
    if unknown:
        raise ValueError(f"task_kinds names tasks {unknown} the model does not have; its tasks: {list(task_names)}")
    for task, kind in (task_kinds or {}).items():
        if kind not in _ACTIVATIONS:
            raise ValueError(f"task_kinds[{task!r}]={kind!r}; expected one of {sorted(_ACTIVATIONS)}")
        kinds[task] = kind
    metadata = {
        "tasks": list(task_names),
        "outputs": kinds,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *input_shape],
            "dtype": "float32",
            "pixels": None if pixel_transform is None else {
                "scale": float(pixel_transform[0]), "offset": float(pixel_transform[1])
            },
        },
        "signature": SIGNATURE,
    }
    if run is not None:
        metadata["run"] = dict(run)

    def serve(image):
        outputs = model(image, training=False)
        return {t: _ACTIVATIONS[kinds[t]](tf.cast(outputs[t], tf.float32)) for t in task_names}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)])
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        (staging / TASK_NAMES_ASSET).write_text("".join(f"{t}\n" for t in task_names))
        (staging / OUTPUTS_ASSET).write_text(json.dumps(metadata, indent=1) + "\n")
        assets = [TASK_NAMES_ASSET, OUTPUTS_ASSET]
        if config is not None:
            data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            (staging / CONFIG_ASSET).write_text(json.dumps(data, indent=1, default=repr) + "\n")
            assets.append(CONFIG_ASSET)
        # Asset objects tracked by the saved object are copied into <out>/assets/ by the
        # SavedModel writer. ExportArchive saves its inner trackable (`_tf_trackable`, Keras
        # 3.15), which has no public hook for assets.
        root = getattr(archive, "_tf_trackable", archive)
        root.mtl_tf_assets = [tf.saved_model.Asset(str(staging / name)) for name in assets]
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_partials(out_dir)
        partial = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        try:
            archive.write_out(str(partial), verbose=False)
            if out_dir.exists():
                out_dir.rmdir()  # empty (checked above); rename cannot replace it on every platform
            os.replace(partial, out_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return metadata


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial$")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, under another user
        return True
    return True


def _remove_abandoned_partials(out_dir: Path) -> None:
    """Deletes `.<out>.<pid>.<hex>.partial` directories of exports whose process is gone."""
    if not out_dir.parent.is_dir():
        return
    for path in out_dir.parent.iterdir():
        match = _PARTIAL.match(path.name)
        if match and match["name"] == out_dir.name and path.is_dir() and not _process_exists(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)


class UnfinishedRun(ValueError):
    """The run has no results.json yet: its best weights are those of the epochs trained so far."""


def run_status(workdir) -> dict:
    """What a run directory's best weights are: {"workdir", "finished", "best_epoch", "epochs_trained", "epochs"}.

    `best_epoch` is the (1-based) epoch whose weights best.weights.h5 holds; for an
    unfinished run `epochs_trained` is the last epoch its backup saved.
    """
    workdir = Path(workdir)
    results = workdir_files.load_results(workdir)
    if results is not None:
        if results.get("method") == "grid":
            selected = run_status(results["selected"]["workdir"])
            return {**selected, "workdir": str(workdir), "grid_point": results["selected"]["workdir"]}
        return {"workdir": str(workdir), "finished": True, "best_epoch": results.get("best_epoch"),
                "epochs_trained": results.get("epochs_trained"), "epochs": results.get("config", {}).get("epochs")}
    state_path = workdir / workdir_files.TRAIN_STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    try:
        backup = read_state(workdir / workdir_files.BACKUP)
    except (OSError, ValueError):
        backup = None
    config_path = workdir / workdir_files.CONFIG
    epochs = json.loads(config_path.read_text()).get("epochs") if config_path.exists() else None
    trained = backup["epoch"] if backup else len(state.get("history", []))
    return {"workdir": str(workdir), "finished": False, "best_epoch": state.get("best_epoch"),
            "epochs_trained": trained, "epochs": epochs}


def load_trained_model(workdir, *, data_dir=None, allow_unfinished: bool = False):
    """(model, config, input_shape) of a run of `launch/train.py`, with its best weights loaded."""
    model, config, input_shape, _ = load_trained_run(workdir, data_dir=data_dir, allow_unfinished=allow_unfinished)
    return model, config, input_shape


def load_trained_run(workdir, *, data_dir=None, allow_unfinished: bool = False):
    """(model, config, input_shape, pixel_transform) of a run of `launch/train.py`.

    Raises:
      UnfinishedRun: `workdir` has no results.json and `allow_unfinished` is False.
      FileNotFoundError: `workdir` is not a run directory (no config.json / best.weights.h5).
    """
    status = run_status(workdir)
    if not status["finished"] and not allow_unfinished and (Path(workdir) / workdir_files.CONFIG).exists():
        raise UnfinishedRun(
            f"{workdir} is not finished (no {workdir_files.RESULTS}): it has trained {status['epochs_trained']} of "
            f"{status['epochs']} epochs, and best.weights.h5 is epoch {status['best_epoch']}. Finish it with the same "
            "launch/train.py command, or export these weights anyway with --allow_unfinished (allow_unfinished=True)"
        )
    # Here, not at the top: the trainer needs the launch extra (ml_collections); the rest of export does not.
    from mtl_tf.training import trainer

    model, benchmark, config = trainer.restore_run(workdir, data_dir=data_dir)
    return model, config, trainer.input_shape(benchmark), benchmark.pixel_transform
