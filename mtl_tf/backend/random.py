"""Stateless random draws keyed by an explicit key: the balancers' random choices (graddrop, gradvac, pcgrad, rlw).

A draw here is a pure function of its key (a [2] int32 tensor, e.g.
(seed, step counter)) and its shape: nothing is stateful. What each backend
guarantees:

* the same key gives the same draw, with and without XLA / `jit`, and on every
  replica (each replica computes it from the same key), so a seeded run repeats
  and data-parallel replicas agree;
* different keys give independent draws;
* the draws differ between backends (each uses its own generator), so a run
  repeats on one backend, not across backends.

TensorFlow: `tf.random.stateless_uniform(..., dtype=tf.uint32, alg="philox")`,
raw 32-bit Philox words; the algorithm is named because TensorFlow's default
("auto_select") picks another generator under XLA, and raw words because its
float samplers give other numbers under XLA than without it (the words agree).
These are exactly the calls the balancers made before the move to `keras.ops`,
so their draws on TensorFlow are unchanged. JAX: `jax.random.bits` from the key
`fold_in(key(k0), k1)` (JAX's default generator, threefry, is the same under
`jit` and across shardings). TensorFlow and JAX are imported lazily, inside the
functions, chosen by `keras.backend.backend()`; other backends raise
NotImplementedError. This module imports nothing of mtl_tf.

Functions: `uniform_bits` (uint32 words), `unit_uniform` (float32 U(0, 1)
made from them), `argsort_words` (the stable order of such words, e.g. a random
permutation).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["PHILOX", "argsort_words", "uniform_bits", "unit_uniform"]

# TensorFlow's stateless algorithm, named explicitly: "auto_select" picks another generator under XLA.
PHILOX = "philox"


def _backend() -> str:
    return keras.backend.backend()


def uniform_bits(shape, key):
    """uint32 random words of `shape` from the [2] int32 `key` (see the module docstring for the guarantees)."""
    backend = _backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_uniform(shape, seed=key, minval=None, maxval=None, dtype=tf.uint32, alg=PHILOX)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        key = jnp.asarray(key, jnp.int32)
        stream = jax.random.fold_in(jax.random.key(key[0]), key[1])
        return jax.random.bits(stream, tuple(int(s) for s in shape), jnp.uint32)
    raise NotImplementedError(f"stateless random words are not implemented for the Keras backend {backend!r}")


def unit_uniform(shape, key):
    """U(0, 1) float32 draws of `shape` (never 0 or 1) from the [2] int32 `key`.

    (k + 1/2) / 2^24 with k the top 24 bits of a `uniform_bits` word: every
    value is exact in float32, and the same with and without XLA.
    """
    bits = uniform_bits(shape, key)
    # On TensorFlow these lower to RightShift, Cast, AddV2, Mul: the ops used before.
    return (ops.cast(ops.right_shift(bits, 8), "float32") + 0.5) * 2.0**-24


def argsort_words(words, last=None):
    """int32 indices that sort uint32 `words` along the last axis, stably; entries where `last` is True go last.

    `last` (bool, `words`' shape, or None) marks entries to order after every
    word whatever its value (e.g. a row's own column in a per-row order).
    TensorFlow sorts the words widened to int64 (2^32 where `last`), as before;
    JAX sorts by (`last`, word) lexicographically (int64 needs `jax_enable_x64`).
    """
    backend = _backend()
    if backend == "tensorflow":
        import tensorflow as tf

        wide = tf.cast(words, tf.int64)
        if last is not None:
            wide = tf.where(last, tf.constant(2**32, tf.int64), wide)
        return tf.argsort(wide, axis=-1, stable=True)
    if backend == "jax":
        import jax.numpy as jnp

        words = jnp.asarray(words)
        if last is None:
            order = jnp.argsort(words, axis=-1, stable=True)
        else:
            # lexsort: the last key is the primary one; it is stable.
            order = jnp.lexsort((words, jnp.asarray(last)), axis=-1)
        return order.astype(jnp.int32)
    raise NotImplementedError(f"argsort_words is not implemented for the Keras backend {backend!r}")
