"""Every config field the trainer reads, read and checked once: `TrainSettings`.

`TrainSettings.from_config(config)` reads the fields `mtl_tf.training.trainer`
trains with (listed in `mtl_tf.training.config`) before anything is built or
written: a missing required field or a value that cannot train is a ValueError
naming the field. `check_method` names the method (a balancer of
`mtl_tf.balancers` or a trainer-level baseline, `TRAINER_METHODS`);
`balancer_spec` gives the balancer and its options (`method_options.<method>`
updated with every `balancer.<option>` that is set); the optimizer is one of
`OPTIMIZERS`, the learning-rate schedule one of `SCHEDULES`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math

import keras

from mtl_tf import balancers
from mtl_tf.config_fields import read

logger = logging.getLogger(__name__)

TRAINER_METHODS = ("single_task", "grid")
TRAINED_AS = {"single_task": "uniform", "grid": "static"}  # the balancer of a trainer-level method
SCHEDULES = ("constant", "multistep", "cosine")
OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
}


def check_method(config) -> str:
    """The config's method name, or a ValueError listing every method there is."""
    method = read(config, "method")
    if method in TRAINER_METHODS:
        return method
    if method not in balancers.available():
        raise ValueError(
            f"unknown method {method!r}; expected a balancing method {balancers.available()} "
            f"or a trainer-level baseline {list(TRAINER_METHODS)}"
        )
    return method


def balancer_spec(config) -> tuple[str, dict]:
    """(balancer name, options) for the config's method.

    Options are `method_options.<method>` updated with every `balancer.<option>`
    that is set (not None). An option the method does not take is an error.
    """
    method = check_method(config)
    if method == "grid":
        raise ValueError("method 'grid' is a set of 'static' runs; train it with train_and_evaluate")
    return _balancer(config, method)


def _balancer(config, method: str) -> tuple[str, dict]:
    name = TRAINED_AS.get(method, method)
    defaults = read(config, f"method_options.{name}", {})
    options = dict(defaults.to_dict() if hasattr(defaults, "to_dict") else defaults)
    options.update({k: v for k, v in read(config, "balancer", {}).items() if v is not None})
    if method == "grid":
        options.pop("weights", None)  # every point sets its own
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    accepted = balancers.option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to method {method!r}"
            + (f" (trained as {name!r})" if name != method else "")
            + f"; its options are {list(accepted) or 'none'}. Unset them or pick another method."
        )
    return name, options


def _optimizer(config) -> tuple[str, dict]:
    """(optimizer name, the keyword arguments of `optimizer.*` its class takes, but the learning rate)."""
    section = read(config, "optimizer", {})
    options = {k: v for k, v in section.items() if v is not None}
    name = str(options.pop("name", "sgd")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer.name {name!r}; expected one of {sorted(OPTIMIZERS)}")
    accepted = set(inspect.signature(OPTIMIZERS[name].__init__).parameters)
    skipped = sorted(set(options) - accepted)
    if skipped:  # e.g. `momentum` after switching to Adam on the command line
        logger.warning("optimizer %s does not take %s; ignoring them", name, skipped)
    return name, {k: v for k, v in options.items() if k in accepted and k != "learning_rate"}


def _milestones(value) -> tuple[int, ...]:
    return tuple(sorted(int(m) for m in value))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Every config field the trainer reads, read and checked once (`from_config`).

    A field with a default that a config lacks (the config.json of a run from before the
    field existed) gets the default; a missing required field (benchmark, method, seed,
    epochs, batch_size) or an invalid value is a ValueError naming the field.
    """

    benchmark: str
    method: str  # a balancer, `single_task` or `grid`
    seed: int
    epochs: int
    batch_size: int
    balancer: str  # the balancer trained (`uniform` for single_task, `static` for grid)
    balancer_options: dict
    optimizer: str
    optimizer_options: dict
    learning_rate: float
    schedule: str
    milestones: tuple
    factor: float
    task: str  # single_task.task
    grid_divisions: int
    grid_include_vertices: bool
    grid_total: float
    steps_per_execution: int
    jit_compile: object  # "auto", True or False
    tensorboard_update_freq: int
    patience: int

    @classmethod
    def from_config(cls, config) -> TrainSettings:
        method = check_method(config)
        balancer, balancer_options = _balancer(config, method)
        optimizer, optimizer_options = _optimizer(config)
        schedule = read(config, "schedule.name", "constant", str)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule.name {schedule!r}; expected constant, multistep or cosine")
        task = read(config, "single_task.task", "", str)
        if method == "single_task" and not task:
            raise ValueError(
                "method 'single_task' trains one task per run: set --config.single_task.task to one of the "
                "benchmark's tasks"
            )
        return cls(
            benchmark=read(config, "benchmark", cast=str),
            method=method,
            seed=read(config, "seed", cast=int),
            epochs=read(config, "epochs", cast=int),
            batch_size=read(config, "batch_size", cast=int),
            balancer=balancer,
            balancer_options=balancer_options,
            optimizer=optimizer,
            optimizer_options=optimizer_options,
            learning_rate=read(config, "optimizer.learning_rate", 1e-3, float),
            schedule=schedule,
            milestones=read(config, "schedule.milestones", (), _milestones),
            factor=read(config, "schedule.factor", 0.5, float),
            task=task,
            grid_divisions=read(config, "grid.divisions", 10, int),
            grid_include_vertices=read(config, "grid.include_vertices", False, bool),
            grid_total=read(config, "grid.total", 1.0, float),
            steps_per_execution=read(config, "train.steps_per_execution", 1, int),
            jit_compile=read(config, "train.jit_compile", "auto"),
            tensorboard_update_freq=read(config, "train.tensorboard_update_freq", 100, int),
            patience=read(config, "train.patience", 0, int),
        )._checked()

    def _checked(self) -> TrainSettings:
        """Self, or a ValueError naming the first field whose value cannot train (before anything is built)."""
        limits = (
            ("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
            ("train.steps_per_execution", self.steps_per_execution, 1),
            ("train.tensorboard_update_freq", self.tensorboard_update_freq, 1), ("train.patience", self.patience, 0),
        )
        for field, value, least in limits:
            if value < least:
                raise ValueError(f"config field {field!r} is {value}; expected an integer >= {least} (--config.{field}=...)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"config field 'optimizer.learning_rate' is {self.learning_rate}; expected a positive number "
                "(--config.optimizer.learning_rate=...)"
            )
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"config field 'schedule.factor' is {self.factor}; expected a positive number")
        return self


def as_settings(config_or_settings) -> TrainSettings:
    """`config_or_settings` if it is a `TrainSettings`, else the settings read from that config."""
    if isinstance(config_or_settings, TrainSettings):
        return config_or_settings
    return TrainSettings.from_config(config_or_settings)
