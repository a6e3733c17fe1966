"""Per-task predictions of an exported SavedModel for image files, with TensorFlow alone.

  python launch/predict.py --model=exported/multi_fashion_mgda_ub a.png b.jpg batch.npy
  python launch/predict.py --model=... --output_json=predictions.json x.npy

Needs only TensorFlow (it does not import mtl_tf): the SavedModel written by
launch/export.py carries its task names and output kinds under assets/.

Inputs: PNG and JPEG files are decoded with the model's number of channels and mapped to
the model's input as its training pipeline did (scale * pixel + offset, recorded by
launch/export.py as `input.pixels` in assets/outputs.json: raw 0..255 for the digit
`pareto` protocol, pixels / 255 or Sener's normalisation otherwise; SavedModels exported
before that record exist get pixels / 255; a model whose inputs are not such a map refuses
image files); they must already have the model's height and width. NPY files hold float32 arrays, one example
([H, W, C]) or a batch ([N, H, W, C]), already scaled; they are memory-mapped and predicted
--batch_size examples at a time, so a file larger than the memory works. Anything else is an
error (exit code 2) that names the file, the expected shape or dtype and what it got; so are an
empty file, an array with no examples, and an example holding a NaN or an infinity (named by
its index: the model would turn it into ordinary-looking predictions).

Printed, per file and example: for probability outputs the arg-max class and its
probability; for raw (regression) outputs the shape, mean, min and max.

TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit) stay out of the terminal unless
TF_CPP_MIN_LOG_LEVEL is set (`TF_CPP_MIN_LOG_LEVEL=0` shows them; launch/_quiet.py).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # launch/_quiet.py
import launch._quiet  # noqa: E402,F401  (first: keeps TensorFlow's start-up notices out of the terminal)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

# Checked in main, not with required=True: an absl requirement is enforced by every
# parse of the process-wide flags, so a process that also runs another script breaks.
_MODEL = flags.DEFINE_string("model", None, "SavedModel directory written by launch/export.py (required).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write every prediction (full arrays) as JSON here.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per model call (large .npy files go in chunks).", lower_bound=1)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class InputError(ValueError):
    """An input file does not match the model's input."""


def load_model(path):
    path = Path(path)
    if not (path / "saved_model.pb").exists():
        raise FileNotFoundError(f"{path} is not a SavedModel directory (no saved_model.pb); write one with launch/export.py")
    metadata_path = path / "assets" / "outputs.json"
    if not metadata_path.exists():
        raise FileNotFoundError(f"{metadata_path} is missing: {path} was not written by launch/export.py")
    metadata = json.loads(metadata_path.read_text())
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[metadata.get("signature", "serving_default")]
    return loaded, signature, metadata


_UNIT_PIXELS = {"scale": 1.0 / 255.0, "offset": 0.0}


def read_examples(file, shape, dtype, pixels=_UNIT_PIXELS):
    """The examples of one file as a [N, *shape] array of `dtype`; `shape` has no batch axis.

    A .npy file is memory-mapped (read-only), not loaded: slice it to read it.
    pixels: {"scale", "offset"} mapping 8-bit image pixels to the model input, or
    None when image files cannot be fed to this model.
    """
    file = Path(file)
    if not file.exists():
        raise FileNotFoundError(f"input file {file} not found")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        if file.stat().st_size == 0:
            raise InputError(f"{file}: the file is empty (0 bytes), not a .npy array; write it with np.save")
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:  # a truncated file: numpy's EOFError names no file
            raise InputError(f"{file}: not a readable .npy array ({error or type(error).__name__})") from error
        if array.dtype != np.dtype(dtype):
            raise InputError(
                f"{file}: dtype {array.dtype}, expected {np.dtype(dtype).name} (values as the model was "
                "trained on, e.g. pixels / 255); convert it with array.astype(np.float32)"
            )
    elif suffix in IMAGE_SUFFIXES:
        channels = shape[-1] if len(shape) == 3 else 0
        if channels not in (1, 3, 4):
            raise InputError(f"{file}: the model's input shape {list(shape)} is not an image [H, W, 1|3|4]; pass .npy files")
        try:
            image = tf.io.decode_image(tf.io.read_file(str(file)), channels=channels, expand_animations=False)
        except tf.errors.InvalidArgumentError as error:
            raise InputError(f"{file}: cannot decode it as an image ({error.message})") from error
        if pixels is None:
            raise InputError(
                f"{file}: this model's training inputs are not a scaling of 8-bit pixels (see the SavedModel's "
                "assets/config.json); pass a .npy array with the preprocessed values instead"
            )
        array = (tf.cast(image, tf.float32) * pixels["scale"] + pixels["offset"]).numpy().astype(dtype)
    else:
        raise InputError(f"{file}: unsupported file type {suffix!r}; expected .png, .jpg, .jpeg or .npy")
    if array.shape == tuple(shape):
        array = array[None]
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape):
        raise InputError(
            f"{file}: shape {list(array.shape)}, expected one example {list(shape)} or a batch "
            f"[N, {', '.join(str(d) for d in shape)}]"
        )
    if array.shape[0] == 0:
        raise InputError(f"{file}: holds no examples (shape {list(array.shape)}); nothing to predict")
    check_finite(file, array)
    return array


def check_finite(file, array, chunk: int = 1024):
    """InputError naming the first example of `array` with a NaN or an infinity.

    The model would map it to ordinary-looking (meaningless) predictions. A
    memory-mapped array is read `chunk` examples at a time.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return
    for start in range(0, array.shape[0], chunk):
        block = np.asarray(array[start:start + chunk])
        finite = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if not finite.all():
            index = int(np.argmin(finite))
            bad = block[index][~np.isfinite(block[index])]
            raise InputError(
                f"{file}: example {start + index} holds {bad.size} non-finite value(s) (first: {bad.flat[0]}); "
                "every input value must be finite: fix or drop that example"
            )


def predict(signature, metadata, array):
    """{task: np.ndarray} for a batch that matches the model's input."""
    outputs = signature(**{metadata["input"]["name"]: tf.constant(np.ascontiguousarray(array))})
    return {t: outputs[t].numpy() for t in metadata["tasks"]}


def predict_in_chunks(signature, metadata, array, batch_size: int):
    """Yields (first index, {task: outputs}) for `array` (e.g. a memory-mapped .npy) `batch_size` examples at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, array.shape[0], batch_size):
        yield start, predict(signature, metadata, array[start:start + batch_size])


def describe(task, kind, value):
    if kind == "identity":
        return f"{task}: shape={list(value.shape)} mean={value.mean():.4f} min={value.min():.4f} max={value.max():.4f}"
    if value.ndim == 1:
        cls = int(np.argmax(value))
        return f"{task}: class={cls} probability={value[cls]:.4f}"
    classes = np.argmax(value, axis=-1)
    return f"{task}: per-position classes, shape={list(classes.shape)}, most frequent={int(np.bincount(classes.ravel()).argmax())}"


def main(argv):
    if not _MODEL.value:
        raise app.UsageError("--model is required: the SavedModel directory written by launch/export.py")
    files = argv[1:]
    if not files:
        raise app.UsageError("give one or more .png/.jpg/.npy files after the flags")
    _, signature, metadata = load_model(_MODEL.value)
    spec = signature.structured_input_signature[1][metadata["input"]["name"]]
    shape, dtype = tuple(spec.shape[1:]), spec.dtype.as_numpy_dtype
    everything = {}
    for file in files:
        try:
            array = read_examples(file, shape, dtype, metadata["input"].get("pixels", _UNIT_PIXELS))
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        collected = {t: [] for t in metadata["tasks"]} if _OUTPUT_JSON.value else None
        for start, outputs in predict_in_chunks(signature, metadata, array, _BATCH_SIZE.value):
            for i in range(next(iter(outputs.values())).shape[0]):
                print(f"{file}[{start + i}]")
                for task in metadata["tasks"]:
                    print("  " + describe(task, metadata["outputs"][task], outputs[task][i]))
            if collected is not None:
                for task, value in outputs.items():
                    collected[task].extend(value.tolist())
        if collected is not None:
            everything[file] = collected
    if _OUTPUT_JSON.value:
        Path(_OUTPUT_JSON.value).write_text(json.dumps(everything))


if __name__ == "__main__":
    app.run(main)
