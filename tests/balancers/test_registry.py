"""The balancer registry: every method builds by name; bad names and options get clear errors."""

import math
import re

import numpy as np
import pytest

import mtl_tf
from mtl_tf import balancers
from mtl_tf.balancers import registry
from tests.balancers import tiny

METHODS = {
    "aligned_mtl",
    "cagrad",
    "db_mtl",
    "dualproj",
    "dwa",
    "fairgrad",
    "famo",
    "gls",
    "graddrop",
    "gradvac",
    "gradnorm",
    "imtl",
    "mgda",
    "mgda_ub",
    "moco",
    "nash_mtl",
    "pareto_mtl",
    "pcgrad",
    "rlw",
    "single_step",
    "split_only",
    "static",
    "stch",
    "uncertainty",
    "uniform",
    "upgrad",
}
REQUIRED_OPTIONS = {"static": {"weights": [0.25, 0.75]}}


def test_available_lists_every_method():
    assert set(balancers.available()) == METHODS
    assert balancers.available() == sorted(balancers.available())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_builds(name):
    options = REQUIRED_OPTIONS.get(name, {})
    balancer = balancers.get(name, **options)
    assert isinstance(balancer, balancers.Balancer) and balancer.method_name == name
    assert type(balancers.get({"name": name, **options})) is type(balancer)
    assert balancers.get(balancer) is balancer
    # Every option is written to the config, so `.keras` files keep it.
    config = balancer.get_config()
    assert set(registry.option_names(name)) <= set(config)
    assert type(balancer).from_config(config).get_config() == config
    # Built inside a model, for that model's tasks.
    setup = tiny.make_setup(num_tasks=2)
    model = tiny.build_model(setup, name, options)
    model.build(setup.x.shape)
    assert model.balancer.built and model.balancer.task_names == setup.tasks
    assert model.balancer.method_name == name


def test_unknown_method_lists_the_available_ones():
    for make in (lambda: balancers.get("mgda-ub"),
                 lambda: balancers.get({"name": "mgda-ub"}),
                 lambda: tiny.build_model(tiny.make_setup(), "mgda-ub")):
        with pytest.raises(ValueError) as error:
            make()
        message = str(error.value)
        assert "unknown balancing method 'mgda-ub'" in message
        for name in METHODS:
            assert repr(name) in message


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_options_are_rejected(name):
    options = {**REQUIRED_OPTIONS.get(name, {}), "learning_rat": 0.1}
    with pytest.raises(TypeError) as error:
        balancers.get(name, **options)
    message = str(error.value)
    assert "unknown option(s) ['learning_rat']" in message and repr(name) in message
    for option in registry.option_names(name):
        assert repr(option) in message, f"the error should list the valid option {option!r}: {message}"


def test_split_only_has_no_inner_step_size():
    with pytest.raises(TypeError, match=r"\['inner_learning_rate'\].*'split_only'.*\['head_gradients_at'\]"):
        balancers.get("split_only", inner_learning_rate=0.01)


def test_options_with_an_instance_are_rejected():
    with pytest.raises(ValueError, match="options cannot be given together with a Balancer instance"):
        balancers.get(balancers.get("uniform"), normalization="l2")


# -- static weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [[0.2, 0.3, 0.5], [1.0]], ids=["too_long", "too_short"])
def test_static_weights_of_the_wrong_length(weights):
    setup = tiny.make_setup(num_tasks=2)
    expected = rf"static weights has {len(weights)} entries but the model has 2 tasks \['a', 'b'\]"
    with pytest.raises(ValueError, match=expected):
        tiny.build_model(setup, "static", {"weights": weights}).build(setup.x.shape)
    # The same error reaches a user who calls fit on an unbuilt model.
    with pytest.raises(ValueError, match=expected):
        tiny.fit(tiny.build_model(setup, "static", {"weights": weights}), setup)


def test_static_weights_keyed_by_the_wrong_tasks():
    setup = tiny.make_setup(num_tasks=2)
    model = tiny.build_model(setup, "static", {"weights": {"a": 1.0, "left": 2.0}})
    with pytest.raises(ValueError, match=r"keyed by tasks \['a', 'left'\].*\['a', 'b'\].*missing: \['b'\].*unknown: \['left'\]"):
        model.build(setup.x.shape)


@pytest.mark.parametrize(
    "weights,what",
    [
        ([0.5, -0.1], "weight 1 (0-based) is -0.1"),
        ([math.nan, 1.0], "weight 0 (0-based) is nan"),
        ([1.0, math.inf], "weight 1 (0-based) is inf"),
        ({"a": 1.0, "b": -2.0}, "weight of task 'b' is -2.0"),
        ([1.0, "heavy"], "weight 1 (0-based) is 'heavy'"),
    ],
    ids=["negative", "nan", "inf", "dict_negative", "not_a_number"],
)
def test_static_weights_must_be_finite_and_non_negative(weights, what):
    for make in (lambda: balancers.get("static", weights=weights),
                 lambda: tiny.build_model(tiny.make_setup(), "static", {"weights": weights})):
        with pytest.raises(ValueError, match=re.escape(what) + "; expected a finite, non-negative number"):
            make()


def test_static_needs_weights():
    with pytest.raises(ValueError, match="needs weights: one non-negative number per task"):
        balancers.get("static")
    with pytest.raises(ValueError, match="expected a list with one weight per task"):
        balancers.get("static", weights=0.5)


def test_static_accepts_numpy_weights():
    balancer = balancers.get("static", weights=np.array([0.5, 2.0], np.float32))
    assert balancer.get_config()["weights"] == [0.5, 2.0]


# -- other option values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("mgda", {"normalization": "L2"}, r"normalization='L2' is not valid; expected one of \['l2', 'loss', 'loss\+', 'none'\]"),
        ("mgda_ub", {"head_update": "scaled"}, r"head_update='scaled' is not valid; expected one of \['official', 'paper', 'paper_sequential'\]"),
        ("mgda", {"solver": "fw"}, r"solver='fw' is not valid; expected one of \['frank_wolfe', 'official', 'wolfe'\]"),
        ("single_step", {"head_gradients_at": "new"}, r"head_gradients_at='new' is not valid"),
        ("single_step", {"inner_learning_rate": -0.1}, r"inner_learning_rate must be a positive finite number.*-0.1"),
        ("gradnorm", {"gradient_at": "last_layer"}, r"gradient_at='last_layer' is not valid"),
        ("gradnorm", {"asymmetry": -1.0}, r"asymmetry must be a finite number >= 0.*-1.0"),
        ("gradnorm", {"weight_learning_rate": 0.0}, r"weight_learning_rate must be a positive finite number.*0.0"),
        ("pareto_mtl", {"num_preferences": 1}, r"num_preferences must be an integer >= 2; got 1"),
        ("pareto_mtl", {"init_max_steps": -1}, r"init_max_steps must be an integer >= 0; got -1"),
    ],
)
def test_invalid_option_values_at_construction(name, options, message):
    with pytest.raises(ValueError, match=message):
        balancers.get(name, **options)


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("uncertainty", {"task_types": "gaussian"}, r"task_types='gaussian' is not valid; expected one of \['classification', 'regression'\]"),
        ("uncertainty", {"task_types": ["regression"]}, r"task_types has 1 entries but the model has 2 tasks"),
        ("pareto_mtl", {"preferences": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}, r"preferences must have 2 entries each"),
        ("pareto_mtl", {"preferences": [[1.0, 0.0], [0.0, 0.0]]}, r"preferences must be non-zero vectors"),
        ("pareto_mtl", {"preference_index": 5}, r"preference_index=5 is out of range for 5 preferences"),
    ],
)
def test_invalid_option_values_for_the_model_tasks(name, options, message):
    setup = tiny.make_setup(num_tasks=2)
    with pytest.raises(ValueError, match=message):
        tiny.build_model(setup, name, options).build(setup.x.shape)


def test_model_rejects_unknown_option_by_name():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['normalisation'\] for balancing method 'mgda'"):
        mtl_tf.MultiTaskModel(
            encoder=tiny.Linear(np.ones((3, 2))),
            heads={"a": tiny.Linear(np.ones((2, 1)))},
            losses={"a": "mse"},
            balancer="mgda",
            balancer_options={"normalisation": "l2"},
        )
