"""Loss and metric identifiers of `compile` resolved exactly as Keras resolves them.

`MultiTaskModel(losses=..., metrics=...)` and `MultiTaskModel.compile(loss=...,
metrics=...)` take what `keras.Model.compile` takes for one output: a name
(`"mse"`, `"binary_crossentropy"`, `"MeanSquaredError"`), a function, a class
or an object. Each task then behaves as that output of a plain Keras
multi-output model: the same loss values, metric values and log names. The
rules below are Keras 3.15's (`keras/src/trainers/compile_utils.py`,
`get_loss` and `get_metric`, and `keras/src/losses/losses.py`,
`LossFunctionWrapper`); the parity suite `tests/test_keras_parity.py` checks
them against a plain Keras model for every name Keras accepts.

Losses (`as_loss`):

- a `keras.losses.Loss` object is used as given;
- a loss function, or a name that Keras maps to one, becomes a `FunctionLoss`
  named after the identifier (`"mse"` stays `"mse"`; a function gives its
  snake-cased `__name__`). Like Keras' `LossFunctionWrapper`, it first brings
  target and prediction to the same rank when they differ by a trailing axis
  of size 1 (labels `(N,)` against a `(N, 1)` sigmoid head), then applies the
  function; reduction `sum_over_batch_size`, dtype `keras.backend.floatx()`;
- `"crossentropy"` / `"ce"` (any case) is binary, sparse categorical or
  categorical cross-entropy by the shapes of target and prediction
  (`ShapeResolvedCrossentropy`).

Metrics (`task_metric`): a name gives the metric Keras' `keras.metrics.get`
returns, logged under the name as written (`"mae"` logs `{task}_mae`, not
`{task}_mean_absolute_error`); a function is wrapped in
`keras.metrics.MeanMetricWrapper` and logged under its snake-cased
`__name__`; a `Metric` class or object is logged under its `name`. `"accuracy"`
and `"acc"` (any case) are binary, sparse categorical or categorical accuracy
by the shapes of target and prediction (`ShapeResolvedAccuracy`). Names that
repeat get `_1`, `_2`, ... in order, as Keras' logs do.

Shape rule of `"crossentropy"` and `"accuracy"` (Keras'
`is_binary_or_sparse_categorical`): binary when the prediction's last axis
has size 1; else sparse categorical when the target has a lower rank than
the prediction, or a last axis of size 1 against a larger one; else
categorical. Keras applies it once, when its compile containers are built
from the first batch; here it is applied to the static shapes of every
traced step, which are those same shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras

_CROSSENTROPY_NAMES = ("crossentropy", "ce")
_ACCURACY_NAMES = ("accuracy", "acc")


def snake_case(name: str) -> str:
    """Keras' `to_snake_case` (`keras/src/utils/naming.py`): `"MyMetric"` -> `"my_metric"`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def object_name(obj: Any) -> str:
    """Keras' `get_object_name`: an object's `name`, else its snake-cased `__name__` or class name."""
    if hasattr(obj, "name"):
        return obj.name
    if hasattr(obj, "__name__"):
        return snake_case(obj.__name__)
    return snake_case(type(obj).__name__)


def same_rank(x1, x2, expand_rank_1=True):
    """Keras' `squeeze_or_expand_to_same_rank` (`keras/src/losses/loss.py`).

    When the ranks differ by one and the longer tensor ends in an axis of
    size 1, that axis is squeezed away, except that a rank-1 tensor is
    expanded instead (`(N,)` against `(N, 1)` gives two `(N, 1)` tensors).
    """
    rank1, rank2 = len(x1.shape), len(x2.shape)
    if rank1 == rank2 + 1 and x1.shape[-1] == 1:
        if rank2 == 1 and expand_rank_1:
            x2 = keras.ops.expand_dims(x2, axis=-1)
        else:
            x1 = keras.ops.squeeze(x1, axis=-1)
    if rank2 == rank1 + 1 and x2.shape[-1] == 1:
        if rank1 == 1 and expand_rank_1:
            x1 = keras.ops.expand_dims(x1, axis=-1)
        else:
            x2 = keras.ops.squeeze(x2, axis=-1)
    return x1, x2


def binary_or_sparse(y_true, y_pred) -> tuple[bool, bool]:
    """Keras' `is_binary_or_sparse_categorical`: (binary, sparse categorical) from static shapes."""
    true_last, pred_last = y_true.shape[-1], y_pred.shape[-1]
    binary = pred_last == 1
    sparse = len(y_true.shape) < len(y_pred.shape) or (
        true_last == 1 and pred_last is not None and pred_last > 1
    )
    return binary, sparse


@keras.saving.register_keras_serializable(package="mtl_tf")
class FunctionLoss(keras.losses.Loss):
    """A per-example loss function (`"mse"`, `keras.losses.mean_squared_error`) as a `Loss`.

    Keras' own `LossFunctionWrapper`, which `keras.Model.compile` wraps such a
    function in, is not public in Keras 3.15 (`keras.losses` does not export
    it); this class does what it does. `call` brings target and prediction to
    the same rank (`same_rank`), then returns `fn(y_true, y_pred, **kwargs)`.

    Args:
      fn: `fn(y_true, y_pred, **kwargs)` -> per-example losses.
      name: defaults to the snake-cased `fn.__name__` (Keras' compile names
        the loss after a string identifier: `as_loss("mse").name == "mse"`).
      reduction, dtype: as for `keras.losses.Loss`.
      **kwargs: keyword arguments of `fn` (saved with it).

    `fn` is serialised by name, so `.keras` files keep it; configs written
    before the rank handling (keys `name`, `reduction`, `fn`) load unchanged.
    """

    def __init__(
        self, fn: Callable, name: str | None = None, reduction: str = "sum_over_batch_size", dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name or object_name(fn), reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        pairs = keras.tree.map_structure(same_rank, y_true, y_pred)
        y_true = keras.tree.map_structure_up_to(y_true, lambda pair: pair[0], pairs)
        y_pred = keras.tree.map_structure_up_to(y_pred, lambda pair: pair[1], pairs)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "fn": serialize(self.fn), **serialize(self._fn_kwargs)}

    @classmethod
    def from_config(cls, config):
        return cls(**keras.saving.deserialize_keras_object(dict(config)))


def _crossentropy_for(y_true, y_pred):
    binary, sparse = binary_or_sparse(y_true, y_pred)
    if binary:
        return keras.losses.binary_crossentropy
    if sparse:
        return keras.losses.sparse_categorical_crossentropy
    return keras.losses.categorical_crossentropy


@keras.saving.register_keras_serializable(package="mtl_tf")
class ShapeResolvedCrossentropy(FunctionLoss):
    """Keras' `"crossentropy"` / `"ce"`: binary, sparse or categorical cross-entropy by shapes.

    The choice (module docstring) is made on the target and prediction as
    given, before `same_rank`, as Keras makes it; the `fn` attribute is None
    until the first call, then the function chosen.
    """

    likelihood = "classification"  # for methods that read the kind of a loss (uncertainty)

    def __init__(self, name: str = "crossentropy", reduction: str = "sum_over_batch_size", dtype: Any = None) -> None:
        keras.losses.Loss.__init__(self, name=name, reduction=reduction, dtype=dtype)
        self.fn = None
        self._fn_kwargs = {}

    def call(self, y_true, y_pred):
        self.fn = _crossentropy_for(y_true, y_pred)
        return super().call(y_true, y_pred)

    def get_config(self):
        return keras.losses.Loss.get_config(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def as_loss(identifier: Any) -> keras.losses.Loss:
    """The `Loss` that `keras.Model.compile` makes of `identifier` for one output (module docstring).

    Raises:
      ValueError: `identifier` is None or not a Keras loss name, function,
        class, config or object.
    """
    if identifier is None:
        raise ValueError("a task loss is None; expected a Keras loss (a name such as 'mse', a function or an object)")
    if str(identifier).lower() in _CROSSENTROPY_NAMES:
        return ShapeResolvedCrossentropy(name=str(identifier))
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"unknown loss {identifier!r}; expected a Keras loss name, function or object ({error})"
        ) from None
    if isinstance(loss, keras.losses.Loss):
        return loss
    return FunctionLoss(loss, name=identifier if isinstance(identifier, str) else object_name(loss))


@keras.saving.register_keras_serializable(package="mtl_tf")
class ShapeResolvedAccuracy(keras.metrics.MeanMetricWrapper):
    """Keras' `"accuracy"` / `"acc"` metric: binary, sparse or categorical accuracy by shapes.

    Each `update_state` applies the rule of the module docstring to the
    target and prediction it gets, then does what `keras.metrics.BinaryAccuracy`
    (threshold 0.5), `SparseCategoricalAccuracy` or `CategoricalAccuracy`
    does; all three are a mean of per-example matches, so the state is theirs.
    """

    def __init__(self, name: str = "accuracy", dtype: Any = None) -> None:
        super().__init__(fn=keras.metrics.sparse_categorical_accuracy, name=name, dtype=dtype)
        self._direction = "up"

    def update_state(self, y_true, y_pred, sample_weight=None):
        binary, sparse = binary_or_sparse(y_true, y_pred)
        if binary:
            self._fn, self._fn_kwargs = keras.metrics.binary_accuracy, {"threshold": 0.5}
        elif sparse:
            self._fn, self._fn_kwargs = keras.metrics.sparse_categorical_accuracy, {}
        else:
            self._fn, self._fn_kwargs = keras.metrics.categorical_accuracy, {}
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _metric_and_name(identifier):
    """Keras' `get_metric` for one output: (a fresh Metric, the name its log takes)."""
    if identifier is None:
        raise ValueError(
            "a task metric is None; expected a Keras metric (a name such as 'mae', a function or an object)"
        )
    if str(identifier).lower() in _ACCURACY_NAMES:
        return ShapeResolvedAccuracy(name=str(identifier)), str(identifier)
    try:
        metric = keras.metrics.get(identifier)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"unknown metric {identifier!r}; expected a Keras metric name, function or object ({error})"
        ) from None
    name = identifier if isinstance(identifier, str) else object_name(metric)
    if not isinstance(metric, keras.metrics.Metric):
        return keras.metrics.MeanMetricWrapper(metric, name=name), name
    if metric is identifier:
        # Metrics are never shared between tasks: each task gets its own copy.
        metric = type(metric).from_config({**metric.get_config(), "name": name})
    return metric, name


def task_metric(identifier: Any, task: str) -> keras.metrics.Metric:
    """A fresh metric for `task`, named `{task}_{name}` as Keras names an output's metric log.

    Raises:
      ValueError: `identifier` is None or not a Keras metric name, function,
        class, config or object.
    """
    metric, name = _metric_and_name(identifier)
    metric.name = f"{task}_{name}"
    return metric


def task_metrics(identifiers: Mapping[str, Iterable[Any]], task_names: Iterable[str]) -> dict[str, list]:
    """{task: [fresh metrics]} in task order, log names made unique as Keras' `CompileMetrics.result` does."""
    metrics = {t: [task_metric(m, t) for m in identifiers.get(t, ())] for t in task_names}
    seen = {}
    for metric in (m for ms in metrics.values() for m in ms):
        name = metric.name
        if name in seen:
            seen[name] += 1
            metric.name = f"{name}_{seen[name] - 1}"
        else:
            seen[name] = 1
    return metrics
