"""The benchmark contract and registry.

A benchmark builder takes the whole experiment config (an
`ml_collections.ConfigDict` with at least `benchmark`, `seed`, `batch_size`,
`data` and `model` fields) and returns a `Benchmark`: the batched `tf.data`
splits and fresh, unbuilt model parts. The trainer (`mtl_tf.training.trainer`) owns
everything else: strategy, optimizer, balancer, callbacks, results.

Builders are registered by module import; `build` imports every module of this
package once, so a new benchmark is one new module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mtl_tf import plugins

_BUILDERS: dict[str, Callable[[Any], "Benchmark"]] = {}
_CHECKS: dict[str, Callable[[Any], None]] = {}


@dataclasses.dataclass
class Benchmark:
    """What a config's benchmark provides to the trainer.

    Attributes:
      name: the registered benchmark name.
      train, val, test: batched `tf.data.Dataset`s yielding `(x, {task: target})`
        with the global batch size `config.batch_size`; `val` may be None when
        the protocol has no validation split.
      encoder: the shared encoder (a Keras layer/model, not built).
      heads: dict task -> head, in task order.
      losses: dict task -> Keras loss.
      metrics: dict task -> list of Keras metrics (objects or names).
      monitor: the logs keys, without the `val_` prefix, whose mean on the
        validation split selects the best epoch (e.g. `["left_accuracy",
        "right_accuracy"]`).
      monitor_mode: "max" or "min".
      sizes: dict split -> number of examples.
      input_shape: the shape of one input example (no batch axis).
      evaluate: optional `fn(model, dataset) -> {task: {metric: value}}` for
        benchmarks whose test metrics are more than `model.evaluate` logs
        (e.g. Delta_m); None means the trainer groups the `evaluate` logs by task.
      pixel_transform: optional (scale, offset) with model input = scale * p + offset
        for 8-bit pixel values p (0..255) of an image file, what the training
        pipeline does; None when that is not an affine map of the pixels (the
        export then tells `launch/predict.py` to refuse image files).
    """

    name: str
    train: Any
    val: Any
    test: Any
    encoder: Any
    heads: dict
    losses: dict
    metrics: dict
    monitor: list
    monitor_mode: str = "max"
    sizes: dict = dataclasses.field(default_factory=dict)
    input_shape: tuple = ()
    evaluate: Callable | None = None
    pixel_transform: tuple | None = None

    @property
    def task_names(self):
        return tuple(self.heads)


def register(*names, check=None):
    """Registers a builder `fn(config) -> Benchmark` under one or more names.

    `check`: optional `fn(config)` that constructs the model parts `builder`
    would (reading the config's `model.*` fields) without loading any data,
    raising ValueError for an option the nets refuse; `check(config)` runs it.
    """

    def decorator(builder):
        for name in names:
            if name in _BUILDERS and _BUILDERS[name] is not builder:
                raise ValueError(f"benchmark {name!r} is registered twice")
            _BUILDERS[name] = builder
            if check is not None:
                _CHECKS[name] = check
        return builder

    return decorator


def _discover():
    plugins.import_all_modules("mtl_tf.benchmarks")


def available():
    """Sorted names of the registered benchmarks."""
    _discover()
    return sorted(_BUILDERS)


def build(config) -> Benchmark:
    """The `Benchmark` named by `config.benchmark`."""
    _discover()
    name = config.benchmark
    if name not in _BUILDERS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[name](config)


def check(config) -> None:
    """Constructs the config's model parts without data (ValueError on a bad `model.*` option).

    A benchmark registered without a `check` is not checked here (its options
    are checked when `build` constructs the nets).
    """
    _discover()
    name = config.benchmark
    if name not in _BUILDERS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(_BUILDERS)}")
    if name in _CHECKS:
        _CHECKS[name](config)
