"""The few tensor operations of the nets, losses and metrics that `keras.ops` does not offer as TensorFlow does.

Everything else in `mtl_tf.nets`, `mtl_tf.losses` and `mtl_tf.metrics` is
written in `keras.ops` / `keras.layers`; this module is the one seam where an
operation depends on the Keras backend (`keras.backend.backend()`):

* under TensorFlow each function runs exactly the TensorFlow ops the code ran
  before the move to `keras.ops` (TensorFlow is imported lazily, inside), so
  values and speed on TensorFlow do not change; they also accept tensors whose
  height and width are only known at run time (`tf.shape`);
* under any other backend (JAX, ...) the same result is written in `keras.ops`
  for static shapes (JAX traces with static shapes), checked against the
  TensorFlow values by `tests/engines/test_same_values.py` (float32, 1e-5).

Functions:

* :func:`resize_bilinear` -- `tf.image.resize(x, size, "bilinear")`: half-pixel
  centres, no antialiasing (PSP decoder upsampling). `keras.ops.image.resize`
  is the same op on TensorFlow but refuses a run-time `size`.
* :func:`upsample2x_align_corners` -- 2x bilinear upsampling with
  `align_corners=True` (PyTorch's `F.interpolate(..., align_corners=True)`,
  MTAN's decoder), which `keras.ops.image.resize` does not offer; elsewhere it
  is two interpolation matrices applied by `einsum`.
* :func:`add_n` -- the sum of equally shaped tensors: `tf.add_n` (one AddN
  op) on TensorFlow, a left-to-right sum elsewhere (cross-stitch units).
* :func:`l2_normalize` -- `tf.math.l2_normalize`'s formula
  `x * rsqrt(max(sum(x**2), epsilon))`, the same ops on every backend (on
  TensorFlow exactly `tf.math.l2_normalize`'s ops); `keras.ops.normalize`
  places epsilon differently (it bounds the norm, not its square).
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["add_n", "l2_normalize", "resize_bilinear", "upsample2x_align_corners"]


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def add_n(terms):
    """The sum of a list of equally shaped tensors: `tf.add_n` on TensorFlow, a left-to-right sum elsewhere."""
    terms = list(terms)
    if _on_tensorflow():
        import tensorflow as tf

        return tf.add_n(terms)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """`x / sqrt(max(sum(x**2, axis), epsilon))`, as `tf.math.l2_normalize` (same ops, every backend)."""
    x = keras.ops.convert_to_tensor(x)
    square_sum = keras.ops.sum(keras.ops.square(x), axis=axis, keepdims=True)
    epsilon = keras.ops.cast(epsilon, square_sum.dtype)
    return x * keras.ops.rsqrt(keras.ops.maximum(square_sum, epsilon))


def resize_bilinear(x, size):
    """Bilinear resize of `[B, H, W, C]` to `size = (h, w)` (half-pixel centres, no antialias).

    TensorFlow: `tf.image.resize(x, size, method="bilinear")` (float32 result,
    as before; `size` may be a run-time tensor). Other backends:
    `keras.ops.image.resize(x, size, "bilinear")` with a static `size`, cast
    to float32 likewise.
    """
    if _on_tensorflow():
        import tensorflow as tf

        return tf.image.resize(x, size, method="bilinear")
    size = tuple(int(s) for s in size)
    resized = keras.ops.image.resize(x, size, interpolation="bilinear", data_format="channels_last")
    return keras.ops.cast(resized, "float32")


def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] float32 matrix of 1-D linear interpolation with `align_corners=True`.

    Output i samples the input at `i * (size_in - 1) / (size_out - 1)` (0 when
    size_out is 1), computed in float32 as TensorFlow's `ResizeBilinear` does.
    """
    size_in, size_out = int(size_in), int(size_out)
    scale = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0.0)
    source = np.arange(size_out, dtype=np.float32) * scale
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, size_in - 1)
    frac = (source - lower.astype(np.float32)).astype(np.float32)
    matrix = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lower), np.float32(1.0) - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


def upsample2x_align_corners(x):
    """2x bilinear upsampling of `[B, H, W, C]` with `align_corners=True`, returned in `x`'s dtype.

    TensorFlow: `tf.raw_ops.ResizeBilinear(align_corners=True,
    half_pixel_centers=False)` (float32 kernel) cast back to `x.dtype`, as
    before. Other backends: `einsum` with the float32 matrices of
    :func:`align_corners_matrix` (static height and width), cast back.
    """
    if _on_tensorflow():
        import tensorflow as tf

        shape = tf.shape(x)
        size = [2 * shape[1] if x.shape[1] is None else 2 * x.shape[1],
                2 * shape[2] if x.shape[2] is None else 2 * x.shape[2]]
        # The resize kernel computes in float32 whatever the input; the result goes back to the layer's dtype.
        resized = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=True, half_pixel_centers=False)
        return tf.cast(resized, x.dtype)
    height, width = int(x.shape[1]), int(x.shape[2])
    rows = keras.ops.convert_to_tensor(align_corners_matrix(height, 2 * height))
    cols = keras.ops.convert_to_tensor(align_corners_matrix(width, 2 * width))
    values = keras.ops.cast(x, "float32")
    values = keras.ops.einsum("ih,bhwc->biwc", rows, values)
    values = keras.ops.einsum("jw,biwc->bijc", cols, values)
    return keras.ops.cast(values, x.dtype)
