"""Reading one config field: the single rule for a field that is missing or None.

The trainer (`mtl_tf.training.trainer.TrainSettings`) and every benchmark builder
(`DigitsSettings`, `CelebASettings`, ... in `mtl_tf.benchmarks`) read their fields once,
into a small dataclass, through `read`. A config saved before a field existed (the
config.json of an older run) lacks it, and a placeholder field holds None: both give the
field's default, so old runs keep the behaviour they were trained with.
"""

from __future__ import annotations

REQUIRED = object()  # `read`'s default for a field without one


def _child(node, name):
    try:
        return node[name] if name in node else None
    except TypeError:  # not a mapping
        return getattr(node, name, None)


def read(config, dotted: str, default=REQUIRED, cast=None):
    """The field `dotted` ("data.seed") of `config`, passed through `cast` when given.

    A field that is missing or None gives `default` (not cast). Raises ValueError naming
    the field when a field without a default is missing, or when `cast` refuses the value.
    """
    node = config
    for part in dotted.split("."):
        node = None if node is None else _child(node, part)
    if node is None:
        if default is REQUIRED:
            raise ValueError(f"config field {dotted!r} is missing; set it in the config or with --config.{dotted}=...")
        return default
    if cast is None:
        return node
    try:
        return cast(node)
    except (TypeError, ValueError) as error:
        raise ValueError(f"config field {dotted!r} has an invalid value {node!r}: {error}") from None
