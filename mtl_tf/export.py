"""SavedModel export with one named output per task, loadable by TensorFlow alone.

`export_saved_model(model, out_dir, input_shape=..., config=...)` writes a
SavedModel (via `keras.export.ExportArchive`) whose `serving_default`
signature takes one float32 tensor named `image` of shape `[batch, *input_shape]`
and returns a dict with one entry per task, named by the task:

  probabilities  softmax over the last axis, for heads trained with a
                 (sparse) categorical cross-entropy on logits (classification,
                 per-pixel segmentation);
  probabilities  sigmoid, for a binary cross-entropy on logits;
  identity       the head output as it is, for every other loss (regression
                 maps: depth, disparity, normals, instance offsets), and for
                 cross-entropies on probabilities (`from_logits=False`).

Assets (`<out>/assets/`): `task_names.txt` (one task a line, in the model's
order), `outputs.json` ({task: output kind}, the input name, shape and dtype)
and `config.json` (the training config, when given). A consumer needs only
`tf.saved_model.load` (see `launch/predict.py`).

`load_trained_model(workdir)` rebuilds a finished run of `launch/train.py`
(config.json + best.weights.h5) for export, with `mtl_tf.training.trainer.restore_run`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from mtl_tf.training import trainer

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


def export_saved_model(model, out_dir, *, input_shape, config=None, task_kinds=None, pixel_transform=None) -> dict:
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
        archive.write_out(str(out_dir), verbose=False)
    return metadata


def load_trained_model(workdir, *, data_dir=None):
    """(model, config, input_shape) of a run of `launch/train.py`, with its best weights loaded."""
    model, config, input_shape, _ = load_trained_run(workdir, data_dir=data_dir)
    return model, config, input_shape


def load_trained_run(workdir, *, data_dir=None):
    """(model, config, input_shape, pixel_transform) of a run of `launch/train.py`."""
    model, benchmark, config = trainer.restore_run(workdir, data_dir=data_dir)
    return model, config, trainer.input_shape(benchmark), benchmark.pixel_transform
