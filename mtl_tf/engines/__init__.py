"""What differs between Keras backends; today one: TensorFlow.

`MultiTaskModel`'s training step is written against TensorFlow
(`tf.GradientTape`, `tf.distribute`, `tf.cond`); under another Keras backend
Keras' `fit` would fail deep inside (`'MultiTaskModel' object has no attribute
'distribute_strategy'`), so construction refuses it first. A JAX engine is
planned; until it lands, TensorFlow is the only supported backend.
"""

from __future__ import annotations

import keras

SUPPORTED_BACKENDS = ("tensorflow",)


def require_supported_backend(what: str = "MultiTaskModel") -> str:
    """The Keras backend's name, when `what` can run on it.

    Raises:
      RuntimeError: the backend (`keras.backend.backend()`) is not TensorFlow;
        the message names it and how to switch (`KERAS_BACKEND=tensorflow`).
    """
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"{what} needs the TensorFlow backend of Keras, but Keras runs on {backend!r} "
            f"(keras.backend.backend()); supported: {', '.join(SUPPORTED_BACKENDS)}. Set the environment variable "
            "KERAS_BACKEND=tensorflow before Python starts (or \"backend\": \"tensorflow\" in ~/.keras/keras.json). "
            "JAX support is planned."
        )
    return backend
