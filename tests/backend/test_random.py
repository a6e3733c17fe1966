"""`mtl_tf.backend.random`: stateless draws keyed by a [2] int32 key, on the current Keras backend."""

import numpy as np
from keras import ops

from mtl_tf.backend import random as backend_random


def _key(a, b):
    return ops.convert_to_tensor(np.asarray([a, b], np.int32))


def test_the_same_key_gives_the_same_words_of_the_asked_shape_and_dtype():
    first = ops.convert_to_numpy(backend_random.uniform_bits([3, 5], _key(7, 2)))
    again = ops.convert_to_numpy(backend_random.uniform_bits([3, 5], _key(7, 2)))
    assert first.shape == (3, 5)
    assert first.dtype == np.uint32
    np.testing.assert_array_equal(first, again)


def test_a_different_key_word_gives_different_words():
    base = ops.convert_to_numpy(backend_random.uniform_bits([64], _key(7, 2)))
    for other in (_key(7, 3), _key(8, 2)):
        words = ops.convert_to_numpy(backend_random.uniform_bits([64], other))
        assert not np.array_equal(base, words)
    # 64 words of 32 bits: repeats would say the stream is not random at all.
    assert len(set(base.tolist())) == 64


def test_unit_uniform_lies_strictly_inside_0_1_on_the_24_bit_grid():
    values = ops.convert_to_numpy(backend_random.unit_uniform([1000], _key(1, 0)))
    assert values.dtype == np.float32 and values.shape == (1000,)
    assert values.min() > 0.0 and values.max() < 1.0
    np.testing.assert_array_equal((values * 2.0**24 - 0.5) % 1.0, 0.0)
    words = ops.convert_to_numpy(backend_random.uniform_bits([1000], _key(1, 0)))
    np.testing.assert_array_equal(values, ((words >> 8).astype(np.float32) + 0.5) * np.float32(2.0**-24))
    again = ops.convert_to_numpy(backend_random.unit_uniform([1000], _key(1, 0)))
    np.testing.assert_array_equal(values, again)


def test_argsort_words_is_the_stable_order_and_puts_marked_entries_last():
    words = np.asarray([[5, 2**32 - 1, 0, 5], [3, 3, 1, 2**31]], np.uint32)
    order = ops.convert_to_numpy(backend_random.argsort_words(ops.convert_to_tensor(words)))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(order, np.argsort(words.astype(np.int64), axis=-1, kind="stable"))
    last = np.asarray([[True, False, False, False], [False, True, False, False]])
    order = ops.convert_to_numpy(backend_random.argsort_words(ops.convert_to_tensor(words), ops.convert_to_tensor(last)))
    np.testing.assert_array_equal(order, [[2, 3, 1, 0], [2, 0, 3, 1]])
