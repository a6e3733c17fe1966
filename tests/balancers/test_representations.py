"""Which part of the encoder output each head reads (`mtl_tf.balancers.representations`).

A dict keyed by exactly the task names is per-task; a dict sharing no key with them is one representation
every head reads; anything in between is refused at build, before any training, naming the missing and the
extra keys and the heads (it used to fail inside the first Dense layer with a bare `KeyError: -1`).
"""

import re

import keras
import numpy as np
import pytest

import mtl_tf
from mtl_tf.balancers import representations
from mtl_tf.nets import MMoE

X = np.ones((4, 3), np.float32)
Y = {"a": np.zeros((4, 1), np.float32), "b": np.zeros((4, 1), np.float32)}


class DictEncoder(keras.layers.Layer):
    """x -> {key: x W_key} for the given keys."""

    def __init__(self, keys, **kwargs):
        super().__init__(**kwargs)
        self.keys = tuple(keys)

    def build(self, input_shape):
        self.dense = {k: keras.layers.Dense(2, kernel_initializer="ones", name=f"dense_{k}") for k in self.keys}
        for layer in self.dense.values():
            layer.build(input_shape)

    def call(self, inputs):
        return {k: self.dense[k](inputs) for k in self.keys}

    def compute_output_spec(self, inputs):
        return {k: keras.KerasTensor((inputs.shape[0], 2)) for k in self.keys}


class ReadsFeatures(keras.layers.Layer):
    """A head reading a dict of features {"left": [B, 2], "right": [B, 2]}: [B, 1]."""

    def build(self, input_shape):
        self.out = keras.layers.Dense(1, kernel_initializer="ones")
        self.out.build((None, 4))

    def call(self, inputs):
        return self.out(keras.ops.concatenate([inputs["left"], inputs["right"]], axis=-1))


def model(encoder, heads=None):
    heads = heads or {t: keras.layers.Dense(1) for t in ("a", "b")}
    return mtl_tf.MultiTaskModel(encoder, heads, losses={t: "mse" for t in heads}, balancer="uniform")


@pytest.mark.parametrize(
    "keys,missing,extra",
    [(("a", "c"), ["b"], ["c"]), (("a",), ["b"], []), (("a", "b", "shared"), [], ["shared"])],
    ids=["missing_and_extra", "missing", "extra"],
)
def test_a_dict_sharing_some_task_names_is_refused_at_build(keys, missing, extra):
    mtm = model(DictEncoder(keys, name="body"))
    message = re.escape(
        f"encoder 'body' returns a dict with keys {sorted(keys)}, some of them task names: a per-task "
        f"representation must be keyed by exactly the heads' task names ['a', 'b']; missing {missing}, extra {extra}"
    )
    with pytest.raises(ValueError, match=message):
        mtm.build(X.shape)


def test_mmoe_built_for_other_tasks_is_refused_naming_both_lists():
    mtm = model(MMoE(["a", "c"], num_experts=2, name="mmoe"))
    with pytest.raises(
        ValueError,
        match=r"^encoder 'mmoe' was built for tasks \['a', 'c'\] but the heads are \['a', 'b'\]: no representation "
              r"for \['b'\], and \['c'\] have no head\. Build it with the heads' task names, e\.g\. MMoE\(\['a', 'b'\]",
    ):
        mtm.fit(X, Y, epochs=1, verbose=0)


def test_a_dict_of_features_without_task_names_is_read_whole_by_every_head():
    heads = {t: ReadsFeatures(name=f"head_{t}") for t in ("a", "b")}
    mtm = model(DictEncoder(("left", "right")), heads)
    mtm.compile(optimizer=keras.optimizers.SGD(0.0))
    predictions = mtm.predict(X, verbose=0)
    # z_left = z_right = x @ ones(3, 2) = 3; head: ones(4, 1) . [3, 3, 3, 3] + 0 = 12.
    for t in ("a", "b"):
        np.testing.assert_array_equal(predictions[t], np.full((4, 1), 12.0, np.float32))
    mtm.fit(X, Y, epochs=1, verbose=0)


def test_the_rule_itself():
    tasks = ("a", "b")
    assert representations.is_per_task({"b": 1, "a": 2}, tasks)
    assert not representations.is_per_task({"f": 1}, tasks)
    assert not representations.is_per_task([1, 2], tasks)
    assert representations.head_input({"a": 1, "b": 2}, "b", tasks) == 2
    with pytest.raises(ValueError, match=r"^the encoder returns a dict with keys \['a'\].*missing \['b'\], extra \[\]"):
        representations.head_input({"a": 1}, "a", tasks)
