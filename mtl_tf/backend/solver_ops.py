"""The few operations of the solvers (`mtl_tf.solvers`) that depend on the Keras backend.

Everything else in the solvers is written in `keras.ops`. These three are not,
because `keras.ops` on TensorFlow adds work the solvers' loops cannot afford:
each `keras.ops.take` adds a negative-index fix (six small ops) to every
gather and each float `keras.ops.argmin` a negative-zero fix (five), and a
Wolfe step has about ten of them, which roughly doubled the time of a solve in
a graph without XLA. So:

* under TensorFlow each function runs exactly the TensorFlow op the solvers ran
  before the move to `keras.ops` (TensorFlow is imported lazily, inside);
* under any other backend the same result is written in `keras.ops`.

Functions: `plain_python` (AutoGraph's `do_not_convert` on TensorFlow, identity
elsewhere), `compiled_on_jax` (`jax.jit` with the given static arguments on JAX,
identity elsewhere: an eager JAX call of a solver would otherwise trace and
compile its loops on every call), `gather` (vector[index] for a scalar integer tensor, as a gather:
XLA needs no compile-time index) and `argmin` (the first index of the smallest
entry along an axis, int32).
"""

from __future__ import annotations

import keras
from keras import ops


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def plain_python(func):
    """`func`, marked for TensorFlow's AutoGraph as needing no conversion; `func` itself elsewhere.

    The solvers have no Python control flow on tensor values, so AutoGraph has
    nothing to convert; telling it so saves seconds on the first trace of every
    compiled step that calls them. On TensorFlow the original stays reachable
    as `__wrapped__`. The backend is read when the decorated module is imported.
    """
    if not _on_tensorflow():
        return func
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(func)


def compiled_on_jax(static_argnames):
    """A decorator: `jax.jit(func, static_argnames=...)` on JAX, `func` itself on every other backend.

    A solver is a pure function of its tensors once its options (method,
    caps, tolerances, dtype) are fixed; those are `static_argnames`. Under
    JAX's eager mode every `while_loop` of an uncompiled solver is traced and
    compiled at each call; compiled once per option set and input shape, a
    solve costs microseconds. Inside an outer `jit` (a JAX training step) it
    is inlined. On TensorFlow the training step is already a graph, so
    nothing changes there. The backend is read when the decorated module is
    imported.
    """

    def decorate(func):
        if keras.backend.backend() != "jax":
            return func
        import functools
        import inspect

        import jax

        names = tuple(static_argnames)
        jitted = jax.jit(func, static_argnames=names)
        signature = inspect.signature(func)

        @functools.wraps(func)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            for name in names:
                try:
                    hash(bound.get(name))
                except TypeError:  # an option given as an array or a tracer: run as written, inside the caller's trace
                    return func(*args, **kwargs)
            return jitted(*args, **kwargs)

        return call

    return decorate


def gather(vector, index):
    """vector[index] (along the first axis) for an integer tensor `index` (a scalar or a vector of indices): `tf.gather` on TensorFlow."""
    if _on_tensorflow():
        import tensorflow as tf

        return tf.gather(vector, index)
    return ops.take(vector, index, axis=0)


def argmin(values, axis=-1):
    """The first index of the smallest entry along `axis`, int32: `tf.argmin` on TensorFlow.

    Elsewhere the first index where `values` equals its minimum (so -0.0 and
    0.0 tie, as in `tf.argmin`; `keras.ops.argmin` ranks -0.0 first).
    """
    if _on_tensorflow():
        import tensorflow as tf

        return tf.argmin(values, axis=axis, output_type=tf.int32)
    hit = ops.cast(ops.equal(values, ops.min(values, axis=axis, keepdims=True)), "int32")
    return ops.cast(ops.argmax(hit, axis=axis), "int32")
