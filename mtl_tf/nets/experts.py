"""Building blocks of the mixture-of-experts architectures (`mtl_tf.nets.mmoe`, `mtl_tf.nets.ple`).

* :class:`MLPExpert`: the experts of Ma et al. (KDD 2018, section 4.1 and
  5.2: "each expert ... a ReLU-activated hidden layer") and Tang et al.
  (RecSys 2020, section 5.1: MLP experts), a stack of ReLU dense layers,
  `[B, d] -> [B, units[-1]]`.
* :class:`SoftmaxGate`: a gating network, `g(x) = softmax(W_g flatten(x))`,
  `[B, ...] -> [B, num_experts]` (Ma et al. eq. 7; Tang et al. eq. 2). The
  papers' gates have no bias; `use_bias=True` is LibMTL's
  `nn.Linear(input_size, num_experts)` (with a bias). The softmax is taken in
  float32 under a mixed-precision policy (logits of float16 would round the
  weights), then cast to the policy's compute dtype.
* :func:`mix`: `sum_i g_i(x) e_i(x)`, the gated combination of expert
  outputs of any (equal) shape.
* :func:`clone_expert`: a fresh copy of an expert template (any Keras layer
  with a `get_config`), so a model's n experts are n layers with their own
  weights, and a `.keras` file stores the template once.

Experts given as templates are cloned through their config: a template whose
initialisers carry a fixed seed gives identical clones (identical experts are
a symmetric start that only the gates can break); leave expert seeds unset
(the default of every net here) unless that is what you want.
"""

from __future__ import annotations

import keras

from mtl_tf.nets import _checks

__all__ = ["MLPExpert", "SoftmaxGate", "clone_expert", "mix"]


@keras.saving.register_keras_serializable(package="mtl_tf")
class MLPExpert(keras.layers.Layer):
    """A ReLU MLP expert: `[B, d] -> [B, units[-1]]` (inputs of higher rank are flattened first).

    Args:
      units: widths of the dense layers, each followed by a ReLU (default
        `(16,)`; Ma et al.'s synthetic experiment uses one hidden layer of 16).

    Parameters: sum over the layers of `in * out + out`.

    Raises:
      ValueError: `units` empty, or an entry that is not an integer >= 1.
    """

    def __init__(self, units=(16,), **kwargs):
        super().__init__(**kwargs)
        self.units = _checks.counts("MLPExpert", "units", units)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy)
        self.dense = [
            keras.layers.Dense(u, activation="relu", name=f"dense_{i}", dtype=self.dtype_policy)
            for i, u in enumerate(self.units)
        ]

    def build(self, input_shape):
        shape = self.flatten.compute_output_shape(tuple(input_shape))
        for layer in self.dense:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs):
        x = self.flatten(inputs)
        for layer in self.dense:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units[-1])

    def get_config(self):
        return {**super().get_config(), "units": list(self.units)}


@keras.saving.register_keras_serializable(package="mtl_tf")
class SoftmaxGate(keras.layers.Layer):
    """A gating network `softmax(W_g flatten(x) [+ b])`: `[B, ...] -> [B, num_experts]`, rows on the simplex.

    Args:
      num_experts: how many experts the gate weighs.
      use_bias: False (default; the papers' `softmax(W_g x)`) or True
        (LibMTL's `nn.Linear` with a bias).
      seed: seed of the kernel initialiser (glorot uniform); None unseeded.

    Parameters: `d * num_experts` (+ `num_experts` with a bias), d the
    flattened input size.
    """

    def __init__(self, num_experts, use_bias=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = _checks.count("SoftmaxGate", "num_experts", num_experts)
        self.use_bias = _checks.flag("SoftmaxGate", "use_bias", use_bias)
        self.seed = _checks.seed("SoftmaxGate", "seed", seed)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy)
        self.logits = keras.layers.Dense(
            self.num_experts, use_bias=self.use_bias, kernel_initializer=keras.initializers.GlorotUniform(seed),
            name="logits", dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.logits.build(self.flatten.compute_output_shape(tuple(input_shape)))
        self.built = True

    def call(self, inputs):
        logits = self.logits(self.flatten(inputs))
        # float32 softmax: float16 logits would round the gate weights.
        return keras.ops.cast(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "use_bias": self.use_bias, "seed": self.seed}


def mix(expert_outputs, gate):
    """sum_i gate[:, i] * expert_outputs[i]: [n] tensors [B, ...] and [B, n] -> [B, ...]."""
    if gate.shape[-1] is not None and gate.shape[-1] != len(expert_outputs):
        raise ValueError(f"the gate weighs {gate.shape[-1]} experts but {len(expert_outputs)} were given")
    total = None
    for i, output in enumerate(expert_outputs):
        weight = keras.ops.cast(gate[:, i], output.dtype)
        weight = keras.ops.reshape(weight, [-1] + [1] * (len(output.shape) - 1))
        term = weight * output
        total = term if total is None else total + term
    return total


def clone_expert(template, name):
    """A new layer with `template`'s config (own, fresh weights), named `name`."""
    if not isinstance(template, keras.layers.Layer):
        raise ValueError(f"an expert must be a Keras layer; got {type(template).__name__}")
    config = template.get_config()
    config["name"] = name
    return type(template).from_config(config)


def serialize_expert(template):
    """The config of an expert template (None stays None), for a `get_config`."""
    return None if template is None else keras.saving.serialize_keras_object(template)


def deserialize_expert(config):
    """Inverse of `serialize_expert`."""
    if config is None or isinstance(config, keras.layers.Layer):
        return config
    return keras.saving.deserialize_keras_object(config)


def check_tasks(tasks, owner):
    """The task names as a tuple of distinct strings (ValueError otherwise)."""
    if isinstance(tasks, str):
        raise ValueError(f"{owner}: tasks must be a list of task names; got the string {tasks!r}")
    tasks = tuple(tasks)
    if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"{owner}: tasks must be a non-empty list of distinct task names; got {list(tasks)}")
    return tasks
