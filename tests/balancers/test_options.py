"""Every option of every registered method refuses a wrong-typed value and NaN at construction, naming the option.

A config typo (`--config.balancer.jacobian=bogus`, a NaN from a sweep) must stop before any data is read,
with the method and the option in the message (`mtl_tf.balancers.options`).
"""

import math

import pytest

from mtl_tf import balancers
from mtl_tf.balancers import options

REQUIRED_OPTIONS = {"static": {"weights": [0.25, 0.75]}}

# Options that legitimately accept any value of one of the probes, and why.
ACCEPTS = {
    # (method, option, probe name): reason
}

CASES = [(m, o) for m in balancers.available() for o in balancers.option_names(m)]
PROBES = {"wrong_type": "bogus", "nan": math.nan, "inf": math.inf, "a_list": [object()]}


@pytest.mark.parametrize("probe", sorted(PROBES))
@pytest.mark.parametrize("method,option", CASES, ids=[f"{m}-{o}" for m, o in CASES])
def test_a_bad_option_value_is_refused_naming_the_method_and_the_option(method, option, probe):
    if (method, option, probe) in ACCEPTS:
        pytest.skip(ACCEPTS[(method, option, probe)])
    value = PROBES[probe]
    with pytest.raises((ValueError, TypeError)) as error:
        balancers.get(method, **{**REQUIRED_OPTIONS.get(method, {}), option: value})
    message = str(error.value)
    assert option in message and method in message, message


def test_every_method_has_options_to_check():
    # Guards the parametrisation above against an empty registry / option list.
    assert len(CASES) > 60


@pytest.mark.parametrize(
    "options_given,message",
    [
        ({"jacobian": "bogus"}, r"^mgda jacobian must be True or False; got 'bogus'$"),
        ({"jacobian": 1}, r"mgda jacobian must be True or False; got 1"),
        ({"max_iterations": 0}, r"mgda max_iterations must be an integer >= 1 or None; got 0"),
        ({"max_iterations": 2.5}, r"mgda max_iterations must be an integer >= 1 or None; got 2.5"),
        ({"tolerance": -1e-3}, r"mgda tolerance must be a finite number >= 0 or None; got -0.001"),
        ({"tolerance": math.nan}, r"mgda tolerance must be a finite number >= 0 or None; got nan"),
    ],
)
def test_mgda_options_exact_messages(options_given, message):
    with pytest.raises(ValueError, match=message):
        balancers.get("mgda", **options_given)


def test_good_values_pass_and_are_converted():
    assert balancers.get("mgda", jacobian=True, max_iterations=3.0, tolerance=0).max_iterations == 3
    assert balancers.get("mgda_ub", max_iterations=None, tolerance=None).tolerance is None
    assert balancers.get("pareto_mtl", preferences=[[1, 0], [0, 1]], preference_index=1).preference_index == 1
    assert balancers.get("uncertainty", task_types={"a": "regression"}).task_types == {"a": "regression"}
    assert balancers.get("famo", min_losses=[-1.0, 0.0]).min_losses == [-1.0, 0.0]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"low": 0}, r"m x must be a finite number >= 0; got 'a'"),
        ({"low": 0, "low_open": True}, r"m x must be a positive finite number; got 'a'"),
        ({"low": 0, "high": 1, "low_open": True}, r"m x must be a finite number in \(0, 1\]; got 'a'"),
        ({"low": 1, "integer": True, "none_ok": True}, r"m x must be an integer >= 1 or None; got 'a'"),
    ],
)
def test_check_number_says_what_is_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        options.check_number("m", "x", "a", **kwargs)
    for bad in (True, math.nan, -math.inf, None if not kwargs.get("none_ok") else math.inf):
        with pytest.raises(ValueError, match="m x must be"):
            options.check_number("m", "x", bad, **kwargs)
