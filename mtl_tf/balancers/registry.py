"""Maps the config names of balancing methods to their classes.

A method module registers its class with `@register("name")`; configs and
`MultiTaskModel(balancer=...)` refer to methods by those names.
"""

import inspect
from typing import Any, Callable, TypeVar

import keras

from mtl_tf.balancers.base import Balancer

_REGISTRY: dict[str, type[Balancer]] = {}

_B = TypeVar("_B", bound=type[Balancer])


def register(name: str) -> Callable[[_B], _B]:
    """A class decorator that registers a `Balancer` subclass under `name`.

    Raises ValueError (when the class is decorated) if `name` is already
    registered to another class.
    """

    def decorate(cls: _B) -> _B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"balancer name {name!r} is already registered to {_REGISTRY[name]}")
        _REGISTRY[name] = cls
        cls.method_name = name
        # `.keras` files name the balancer's class; loading needs it registered with Keras.
        return keras.saving.register_keras_serializable(package="mtl_tf")(cls)

    return decorate


def available() -> list[str]:
    """Sorted names of every registered method."""
    return sorted(_REGISTRY)


# Keras layer arguments every balancer also takes (a `.keras` file passes them back).
_LAYER_ARGUMENTS = ("name", "dtype", "trainable")


def option_names(name: str) -> tuple[str, ...]:
    """The options method `name` takes: its constructors' named parameters along the MRO."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown balancing method {name!r}; expected one of {available()}.")
    names = []
    for cls in _REGISTRY[name].__mro__:
        if cls is Balancer or not issubclass(cls, Balancer):
            break
        if "__init__" in vars(cls):
            for param in inspect.signature(cls.__init__).parameters.values():
                if param.name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    names.append(param.name)
    return tuple(dict.fromkeys(names))


def get(identifier: str | dict[str, Any] | Balancer, **options: Any) -> Balancer:
    """A balancer from a name (with options), a {"name": ..., **options} dict, or an instance."""
    if isinstance(identifier, Balancer):
        if options:
            raise ValueError("options cannot be given together with a Balancer instance")
        return identifier
    if isinstance(identifier, dict):
        options = {**{k: v for k, v in identifier.items() if k != "name"}, **options}
        identifier = identifier.get("name")
    if identifier not in _REGISTRY:
        raise ValueError(
            f"unknown balancing method {identifier!r}; expected one of {available()}."
        )
    cls = _REGISTRY[identifier]
    accepted = option_names(identifier)
    unknown = sorted(set(options) - set(accepted) - set(_LAYER_ARGUMENTS))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for balancing method {identifier!r}; "
            f"its options are {list(accepted) or 'none'}."
        )
    try:
        return cls(**options)
    except TypeError as error:
        raise TypeError(f"invalid options {sorted(options)} for method {identifier!r}: {error}") from None
    except ValueError as error:
        # Shared checks (`validate_choice`) name the option, not the method.
        if str(error).startswith(identifier):
            raise
        raise ValueError(f"{identifier}: {error}") from None
