"""A `MultiTaskModel`'s inputs as specs: from the data before `fit`, symbolic for `build`, typed for export.

- `input_specs(x)`: the model input of `fit` / `evaluate` data as KerasTensors
  (batch axis None), when known up front (arrays, tensors, a `tf.data.Dataset`
  of known rank), so the model and its optimizer are built before the step is
  traced (`MultiTaskModel._build_from_inputs`);
- `symbolic_inputs(shape, dtypes)`: KerasTensors for a structure of shapes,
  with the data's dtypes where they match (integer ids, strings), else
  float32 as Keras assumes;
- `serving_signature(model)` / `default_save_signature(model)`: the input
  signature of `MultiTaskModel.export` and of TensorFlow's SavedModel writer:
  a functional encoder's own named inputs and dtypes, else the built shapes
  and data dtypes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def input_specs(x):
    """The model input of `x` as a structure of KerasTensors (batch axis None), when known up front."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        leaves = tf.nest.flatten(spec)
        if not leaves or not all(isinstance(s, tf.TensorSpec) and s.shape.rank for s in leaves):
            return None
        return tf.nest.map_structure(lambda s: keras.KerasTensor((None, *s.shape[1:]), s.dtype.name), spec)
    if x is None or isinstance(x, (keras.utils.PyDataset,)):
        return None
    leaves = tf.nest.flatten(x)
    if not leaves or not all(isinstance(v, (np.ndarray, tf.Tensor)) and len(v.shape) >= 1 for v in leaves):
        return None
    return tf.nest.map_structure(
        lambda v: keras.KerasTensor((None, *v.shape[1:]), keras.backend.standardize_dtype(v.dtype)), x
    )


def symbolic_inputs(input_shape, dtypes=None):
    """A structure of KerasTensors for a structure of shapes (float32 unless `dtypes` matches it)."""
    inputs = keras.tree.map_shape_structure(lambda shape: keras.KerasTensor(tuple(shape)), input_shape)
    if dtypes is not None:
        try:
            inputs = keras.tree.map_structure(lambda t, d: keras.KerasTensor(t.shape, d), inputs, dtypes)
        except (ValueError, TypeError):
            pass  # built for another structure (e.g. loaded): float32 as Keras assumes
    return inputs


def tensor_specs(structure, named):
    return keras.tree.map_structure(
        lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name if named else None), structure
    )


def serving_signature(model):
    """[structure of TensorSpecs]: the encoder's own inputs, else the built shapes and data dtypes."""
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; fit it, call it on a batch or call build(input_shape) before export"
        )
    # A functional encoder knows its inputs' structure, names and dtypes.
    inputs = getattr(model.encoder, "_inputs_struct", None) if isinstance(model.encoder, keras.Model) else None
    if inputs is not None:
        return [tensor_specs(inputs, named=True)]
    shapes = (getattr(model, "_build_shapes_dict", None) or {}).get("input_shape")
    if shapes is None:
        raise ValueError(f"model {model.name!r} has no recorded input shape; give export an input_signature")
    return [tensor_specs(symbolic_inputs(shapes, getattr(model, "_data_dtypes", None)), named=False)]


def default_save_signature(model):
    """The `serving_default` function TensorFlow's SavedModel writer asks a model for (None until it is built)."""
    # Keras' own builds it from the recorded build shapes, as float32 and
    # through a tracked copy of a dict of shapes (which a functional encoder
    # with named inputs warns about). The encoder's own inputs are the exact
    # signature.
    if not model.built:
        return None

    @tf.function(input_signature=serving_signature(model))
    def serving_default(inputs):
        return model(inputs)

    return serving_default
