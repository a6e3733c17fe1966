"""PyTorch's default initialisation of convolution and dense layers, for Keras layers.

PyTorch's `nn.Linear` and `nn.Conv2d` initialise themselves in
`reset_parameters`: the weight with `kaiming_uniform_(a=sqrt(5))`, whose
bound `gain * sqrt(3 / fan_in)` with `gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)`
reduces to `1 / sqrt(fan_in)`, and the bias uniformly in the same
`+-1 / sqrt(fan_in)`, where `fan_in` is that of the *weight*
(`in_features` for a dense layer, `in_channels * kernel_h * kernel_w` for a
convolution). Networks whose official code is PyTorch and does not
re-initialise (Sener's MultiLeNet and CelebA ResNet-18, Lin et al.'s Pareto-MTL
LeNet, Sener's pyramid-pooling decoders) start from that, not from Keras'
glorot-uniform kernels and zero biases.

Keras kernels are `[in, out]` (dense) and `[kh, kw, in, out]` (2-D
convolution, channels last), so a kernel's fan-in is the product of every axis
but the last. A bias `[out]` does not carry the fan-in, so its initializer
must be given it: :class:`TorchUniform` takes `fan_in` explicitly, and
:func:`set_layer_initializers` computes it from the input shape a layer is
about to be built with.

A layer used on its own (a task head) cannot be prepared that way by its
owner; :class:`TorchDense` is a `keras.layers.Dense` that reads its fan-in
when it is built.

`INITIALIZERS` are the choices a net's `initializer` option accepts:

* `"torch"`: :class:`TorchUniform` for kernels and biases;
* `"keras"`: Keras' layer defaults, glorot-uniform kernels and zero biases
  (the layer is left as constructed).

Batch-norm layers need nothing: Keras and PyTorch both start with scale 1 and
offset 0.
"""

from __future__ import annotations

import hashlib
import math
import random

import keras

__all__ = [
    "INITIALIZERS",
    "TorchDense",
    "TorchUniform",
    "check_initializer",
    "derive_seed",
    "kernel_fan_in",
    "layer_fan_in",
    "set_layer_initializers",
    "torch_initializers",
]

INITIALIZERS = ("keras", "torch")


def check_initializer(choice, choices=INITIALIZERS, owner="initializer") -> str:
    """Returns `choice` if it is one of `choices`.

    Raises:
      ValueError: naming `owner`, the value and the accepted choices.
    """
    if choice not in choices:
        raise ValueError(f"{owner}={choice!r} is not valid; expected one of {list(choices)}")
    return choice


def derive_seed(seed, role: str):
    """An int seed for `role` (e.g. "bias") derived from `seed`; None stays None.

    Stateless random draws with one seed and different shapes share their
    leading values, so a kernel and its bias must not get the same seed, and
    `seed + 1` would collide with the next layer's `seed + 1`.
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{int(seed)}/{role}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def kernel_fan_in(shape) -> int:
    """Fan-in of a Keras kernel: the product of all axes but the last (`[in, out]`, `[kh, kw, in, out]`).

    Raises:
      ValueError: for a shape of rank < 2 (a bias has no fan-in of its own).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"cannot infer a fan-in from shape {shape}: a bias must be given the fan_in of its layer's kernel"
        )
    return math.prod(shape[:-1])


@keras.saving.register_keras_serializable(package="mtl_tf")
class TorchUniform(keras.initializers.Initializer):
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in)): PyTorch's default for `nn.Linear` / `nn.Conv2d` weights and biases.

    Args:
      fan_in: the fan-in of the layer's kernel. None: inferred from the shape
        being initialised with :func:`kernel_fan_in` (kernels only). A bias
        initializer must be given its kernel's fan-in.
      seed: int, or None for a seed drawn from Python's `random` at
        construction (as Keras' own random initializers do, so
        `keras.utils.set_random_seed` makes it reproducible). The same
        initializer object with the same shape gives the same values.

    Raises:
      ValueError: a non-positive `fan_in`; on call, a shape of rank < 2
        without `fan_in`.

    Source: `torch.nn.Linear.reset_parameters` / `torch.nn.modules.conv._ConvNd.reset_parameters`.
    """

    def __init__(self, fan_in=None, seed=None):
        if fan_in is not None:
            fan_in = int(fan_in)
            if fan_in < 1:
                raise ValueError(f"fan_in must be a positive integer; got {fan_in}")
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int or None; got {seed!r}")
        self.fan_in = fan_in
        self._init_seed = seed
        self.seed = seed if seed is not None else random.randint(1, int(1e9))

    def bound(self, shape) -> float:
        """The half-width `1 / sqrt(fan_in)` used for `shape`."""
        fan_in = self.fan_in if self.fan_in is not None else kernel_fan_in(shape)
        return 1.0 / math.sqrt(fan_in)

    def __call__(self, shape, dtype=None):
        bound = self.bound(shape)
        return keras.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self._init_seed}


def torch_initializers(fan_in: int, seed=None) -> dict:
    """`{"kernel_initializer", "bias_initializer"}` of PyTorch's default for a layer with this kernel fan-in.

    Pass as keyword arguments to `keras.layers.Dense` / `Conv2D` when the
    fan-in is known at construction (e.g. in a functional model).
    """
    return {
        "kernel_initializer": TorchUniform(fan_in, seed=seed),
        "bias_initializer": TorchUniform(fan_in, seed=derive_seed(seed, "bias")),
    }


def layer_fan_in(layer, input_shape) -> int:
    """Fan-in of the kernel `layer` (Dense or a convolution) gets for inputs of `input_shape`.

    Raises:
      TypeError: for another kind of layer.
      ValueError: when the input's feature / channel axis is unknown.
    """
    input_shape = tuple(input_shape)
    if isinstance(layer, keras.layers.Dense):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"{layer.name}: the input's last axis must be known; got shape {input_shape}")
        return int(features)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        channel_axis = 1 if layer.data_format == "channels_first" else -1
        channels = input_shape[channel_axis]
        if channels is None:
            raise ValueError(f"{layer.name}: the input's channel axis must be known; got shape {input_shape}")
        return math.prod(layer.kernel_size) * int(channels) // int(getattr(layer, "groups", 1))
    raise TypeError(f"{getattr(layer, 'name', layer)!r} is a {type(layer).__name__}, not a Dense or convolution layer")


def set_layer_initializers(layer, input_shape, choice: str, seed=None):
    """Gives an unbuilt Dense / convolution `layer` the initializers of `choice` for `input_shape`.

    Call it just before `layer.build(input_shape)`. `"keras"` leaves the
    layer's own initializers (as constructed) untouched; `"torch"` sets
    :class:`TorchUniform` with the fan-in of the layer's kernel on its kernel
    and bias (a layer without bias only uses the former). Returns `layer`.

    Raises:
      ValueError: an unknown `choice`, or `layer` is already built (its
        weights exist and would silently keep the old initialisation).
    """
    check_initializer(choice)
    if choice == "keras":
        return layer
    if layer.built:
        raise ValueError(f"{layer.name} is already built; set its initializers before building it")
    initializers = torch_initializers(layer_fan_in(layer, input_shape), seed)
    layer.kernel_initializer = initializers["kernel_initializer"]
    layer.bias_initializer = initializers["bias_initializer"]
    return layer


@keras.saving.register_keras_serializable(package="mtl_tf")
class TorchDense(keras.layers.Dense):
    """`keras.layers.Dense` initialised like `torch.nn.Linear`: kernel and bias U(+-1/sqrt(in_features)).

    The fan-in is read from the input shape when the layer is built, so the
    layer can be created before its input size is known (e.g. as a task head).

    Args:
      units: output size.
      seed: int or None (see :class:`TorchUniform`); the bias gets a seed
        derived from it.
      **kwargs: other `keras.layers.Dense` arguments, except
        `kernel_initializer` and `bias_initializer`.

    Raises:
      TypeError: `kernel_initializer` or `bias_initializer` given.
    """

    def __init__(self, units, seed=None, **kwargs):
        given = sorted({"kernel_initializer", "bias_initializer"} & set(kwargs))
        if given:
            raise TypeError(f"TorchDense sets its own initializers; do not pass {given}")
        super().__init__(units, **kwargs)
        self.seed = seed

    def build(self, input_shape):
        initializers = torch_initializers(layer_fan_in(self, input_shape), self.seed)
        self.kernel_initializer = initializers["kernel_initializer"]
        self.bias_initializer = initializers["bias_initializer"]
        super().build(input_shape)

    def get_config(self):
        config = super().get_config()
        # Rebuilt from the fan-in at build time, not from the recorded initializers.
        config.pop("kernel_initializer", None)
        config.pop("bias_initializer", None)
        config["seed"] = self.seed
        return config
