"""Whether the Keras backend computes in float64: the one precision fact the solvers need from it.

TensorFlow (and PyTorch, NumPy) compute in float64 whenever asked. JAX does
only with `jax_enable_x64` set (`jax.config.update("jax_enable_x64", True)` or
`JAX_ENABLE_X64=1` before JAX starts); without it a float64 request silently
becomes float32 (with a warning at most), and TPUs have no float64 at all. The
solvers (`mtl_tf.solvers`) read this to run in float64 where it is real and to
refuse an explicit float64 request where it is not.
"""

from __future__ import annotations

import keras


def float64_available() -> bool:
    """True when the current Keras backend computes float64 as float64 (read at call time).

    TensorFlow, PyTorch, NumPy: True. JAX: `jax.config.jax_enable_x64` (JAX is
    imported here only when it is the backend).
    """
    if keras.backend.backend() == "jax":
        import jax

        return bool(jax.config.jax_enable_x64)
    return True
