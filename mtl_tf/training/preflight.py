"""The checks of a run's method and model options that need no data, before anything is built or written.

`TrainSettings` reads every trainer field; this constructs what those fields
name, the way the run will, but without the data set: the balancer
(`mtl_tf.balancers.get` with the config's options) and the benchmark's nets
(`mtl_tf.benchmarks.check`). A bad option (`--config.balancer.c=-1`,
`--config.model.num_experts=0`) is then a one-line ValueError naming the config
field, raised before the data set is built and before `config.json` is
written, so the corrected command runs in the same workdir.
"""

from __future__ import annotations

import re

from mtl_tf import balancers, benchmarks
from mtl_tf.config_fields import read


def _option_field(config, settings, error) -> str | None:
    """The config field of the balancer option `error` names: `balancer.<o>` or `method_options.<method>.<o>`."""
    for option in settings.balancer_options:
        if re.search(rf"\b{re.escape(option)}\b", str(error)):
            if read(config, f"balancer.{option}", None) is not None:
                return f"balancer.{option}"
            return f"method_options.{settings.balancer}.{option}"
    return None


def check_options(config, settings) -> None:
    """ValueError, naming the config field, if the method's or the model's options cannot be constructed.

    `settings` is the config's `mtl_tf.training.trainer.TrainSettings`. A
    `grid` run is not checked here: every point sets its own `static`
    weights, checked when that point starts.
    """
    if settings.method != "grid":
        try:
            balancers.get(settings.balancer, **settings.balancer_options)
        except (TypeError, ValueError) as error:
            field = _option_field(config, settings, error)
            where = f"config field {field!r}" if field else f"the options of method {settings.method!r}"
            hint = f" (--config.{field}=...)" if field else ""
            raise ValueError(f"{where}: {error}{hint}") from None
    benchmarks.check(config)
