"""Checks of the balancing methods' constructor options.

Each refusal is a ValueError naming the method, the option, the value given
and what is expected, raised at construction (before any data is read), so a
config with a typo fails at once instead of after the data set is built.
Per-task options (a list or a {task: value} dict) are checked entry by entry
here; their length and keys are checked when the task names are known
(`build_for_tasks`).
"""

from __future__ import annotations

import math
import numbers


def check_bool(method, name, value):
    """`value` if it is True or False (a string such as "false" is not), else a ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{method} {name} must be True or False; got {value!r}")
    return value


def _describe(integer, low, high, low_open, high_open):
    what = "an integer" if integer else "a finite number"
    if low == 0 and low_open and high is None:
        return "a positive integer" if integer else "a positive finite number"
    if low is not None and high is not None:
        return f"{what} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{what} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{what} {'<' if high_open else '<='} {high}"
    return what


def check_number(method, name, value, *, low=None, high=None, low_open=False, high_open=False, integer=False,
                 none_ok=False):
    """`value` as a float (an int when `integer`) within the bounds, else a ValueError naming the option.

    Booleans, strings, NaN and infinities are refused; an integer option
    takes an int or a float with an integral value (a JSON config's 3.0).
    `none_ok`: None is accepted and returned (the method's default).
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        expected = _describe(integer, low, high, low_open, high_open) + (" or None" if none_ok else "")
        raise ValueError(f"{method} {name} must be {expected}; got {value!r}")
    return int(value) if integer else float(value)


def check_task_values(method, name, values, check_entry, none_ok=True):
    """A per-task option: None (when `none_ok`), a list/tuple or a {task: value} dict, each entry checked.

    `check_entry(label, entry)` raises (naming `label`) or returns the entry.
    The value is returned as given (entries unconverted), for `as_task_vector`
    at build time.
    """
    if values is None and none_ok:
        return None
    if isinstance(values, dict):
        entries = [(f"{name}[{key!r}]", entry) for key, entry in values.items()]
    elif isinstance(values, (list, tuple)):
        entries = [(f"{name}[{i}]", entry) for i, entry in enumerate(values)]
    else:
        raise ValueError(
            f"{method} {name} must be a list (one entry per task, in head order) or a {{task: value}} dict"
            f"{' or None' if none_ok else ''}; got {values!r}"
        )
    if not entries:
        raise ValueError(f"{method} {name} must not be empty; got {values!r}")
    for label, entry in entries:
        check_entry(label, entry)
    return values
