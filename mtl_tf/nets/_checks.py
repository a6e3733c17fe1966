"""Checks of the nets' constructor options: a ValueError naming the layer, the option, the value and what is expected.

Raised when the layer is constructed, so a bad option (`num_experts=0`, an
`alpha_init` with a NaN) stops before any data is read, instead of failing
inside a Dense layer or as a non-finite loss that seems to blame the data.
"""

from __future__ import annotations

import math
import numbers


def _refuse(owner, name, value, expected):
    raise ValueError(f"{owner}: {name} must be {expected}; got {value!r}")


def _is_integer(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and float(value).is_integer()


def count(owner, name, value, low=1):
    """`value` as an int >= `low` (a float with an integral value, as a JSON config gives, is taken)."""
    if not _is_integer(value) or value < low:
        _refuse(owner, name, value, f"an integer >= {low}")
    return int(value)


def counts(owner, name, values, low=1):
    """A non-empty list of integers >= `low`, as a tuple of ints."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        _refuse(owner, name, values, f"a non-empty list of integers >= {low}")
    values = list(values)
    if not values or not all(_is_integer(v) and v >= low for v in values):
        _refuse(owner, name, values, f"a non-empty list of integers >= {low}")
    return tuple(int(v) for v in values)


def number(owner, name, value, low=None, low_open=False):
    """`value` as a finite float (> or >= `low` when given)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        if low == 0 and low_open:
            _refuse(owner, name, value, "a positive finite number")
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        _refuse(owner, name, value, f"a finite number{bound}")
    return float(value)


def flag(owner, name, value):
    """`value` if it is True or False (a string such as "false" is not)."""
    if not isinstance(value, bool):
        _refuse(owner, name, value, "True or False")
    return value


def seed(owner, name, value):
    """None or an integer seed, as given."""
    if value is not None and not _is_integer(value):
        _refuse(owner, name, value, "an integer or None")
    return value
