"""Maps the config names of balancing methods to their classes.

A method module registers its class with `@register("name")`; configs and
`MultiTaskModel(balancer=...)` refer to methods by those names.
"""

from mtl_tf.balancers.base import Balancer

_REGISTRY: dict[str, type[Balancer]] = {}


def register(name):
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"balancer name {name!r} is already registered to {_REGISTRY[name]}")
        _REGISTRY[name] = cls
        cls.method_name = name
        return cls

    return decorate


def available():
    """Sorted names of every registered method."""
    return sorted(_REGISTRY)


def get(identifier, **options) -> Balancer:
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
    try:
        return cls(**options)
    except TypeError as error:
        raise TypeError(f"invalid options {sorted(options)} for method {identifier!r}: {error}") from None
