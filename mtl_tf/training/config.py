"""Configs: the trainer's fields, loading a config file, command-line overrides.

A config is an `ml_collections.ConfigDict`. `base_config()` holds the fields the trainer
reads, with their defaults; a config file (`configs/*.py`, `get_config(arg=None)`) starts
from it and writes its paper's hyper-parameters out. `load("path/to/config.py:variant")`
is what `--config=` reads; `apply_overrides` sets dotted fields, as `--config.<field>=` does.

Trainer fields (read once, into `mtl_tf.training.trainer.TrainSettings`):

  benchmark, seed, epochs, batch_size    what and how long;
  method                                 a balancer name, `single_task` or `grid`;
  balancer.<option>                      options of the method (None = the method's
                                         default); every option of every
                                         registered balancer exists as a field,
                                         so `--config.balancer.<option>=...` works;
  method_options.<method>.<option>       per-method defaults a config sets (e.g.
                                         Kendall's classification likelihood);
                                         `balancer.<option>` overrides them;
  optimizer.name, optimizer.<kwarg>      a Keras optimizer and its arguments;
  schedule.name                          `constant`, `multistep` (learning rate
                                         times `factor` at each epoch of
                                         `milestones`) or `cosine`;
  single_task.task, grid.*               the two trainer-level baselines;
  train.*                                steps_per_execution, jit_compile,
                                         tensorboard_update_freq, patience (0: off);
  data.*, model.*                        read by the benchmark builder only.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import sys
import uuid
from pathlib import Path

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder

from mtl_tf import balancers
from mtl_tf.training.workdir import json_default

# The checkout: config paths are also looked up relative to it, and its `configs` package
# (configs/common.py) is importable while a config file loads.
REPO_ROOT = Path(__file__).resolve().parents[2]


def balancer_option_names() -> dict[str, tuple[str, ...]]:
    """{method: its constructor options}, for every registered balancer."""
    return {method: balancers.option_names(method) for method in balancers.available()}


def balancer_options_config() -> ml_collections.ConfigDict:
    """A ConfigDict with every balancer option as an empty field (None = the method's default).

    The fields are typed `object`, so a command line like
    `--config.balancer.weights="(0.2, 0.8)"` or `--config.balancer.normalization=loss+`
    parses as a Python literal, falling back to a string.
    """
    fields = sorted({o for options in balancer_option_names().values() for o in options})
    return ml_collections.ConfigDict({name: placeholder(object) for name in fields})


def base_config() -> ml_collections.ConfigDict:
    """The trainer's fields with their defaults; a benchmark config fills in the rest."""
    config = ml_collections.ConfigDict()
    config.benchmark = ""
    config.seed = 0
    config.epochs = 100
    config.batch_size = 256
    config.method = "uniform"
    config.balancer = balancer_options_config()
    config.method_options = ml_collections.ConfigDict()
    config.optimizer = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 1e-3, "momentum": 0.0})
    config.schedule = ml_collections.ConfigDict({"name": "constant", "milestones": (), "factor": 0.5})
    config.single_task = ml_collections.ConfigDict({"task": ""})
    config.grid = ml_collections.ConfigDict({"divisions": 10, "include_vertices": False, "total": 1.0})
    config.train = ml_collections.ConfigDict(
        {
            "steps_per_execution": 1,
            "jit_compile": FieldReference("auto", field_type=object),
            "tensorboard_update_freq": 100,
            "patience": 0,
        }
    )
    config.data = ml_collections.ConfigDict({"data_dir": placeholder(str)})
    config.model = ml_collections.ConfigDict()
    return config


def resolve_config_path(path: str) -> Path:
    """A config file path as given, else relative to the repository root."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate.resolve()
    if not candidate.is_absolute() and (REPO_ROOT / candidate).exists():
        return REPO_ROOT / candidate
    raise FileNotFoundError(f"config file {path!r} not found (looked in {Path.cwd()} and {REPO_ROOT})")


@contextlib.contextmanager
def _checkout_importable():
    # The launch scripts put the checkout on sys.path themselves; `load` may run from anywhere.
    root = str(REPO_ROOT)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if added and root in sys.path:
            sys.path.remove(root)


def load(spec: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:variant]` -> `get_config(variant)`, as `--config=` reads it."""
    path, _, arg = str(spec).partition(":")
    file = resolve_config_path(path)
    module_name = f"_mtl_tf_config_{file.stem}_{uuid.uuid4().hex[:8]}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)
    with _checkout_importable():
        module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {file} has no get_config(arg=None) function")
    return module.get_config(arg) if arg else module.get_config()


def parse_value(text: str):
    """A command-line value: a Python literal when it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """Sets dotted fields (`{"balancer.weights": (1, 1), "seed": 2}`) in place.

    A field must exist already (as with `--config.<field>=`), so a typo is an
    error, not a silently ignored setting.
    """
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node:
                raise KeyError(f"config has no field {'.'.join(parents[: i + 1])!r} (overriding {dotted!r})")
            node = node[part]
        if leaf not in node:
            raise KeyError(
                f"config has no field {dotted!r}; fields here: {sorted(node.keys())}"
            )
        current = node[leaf]
        if isinstance(current, str) and not isinstance(value, str):
            value = str(value)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def unknown_fields(config, dotted_names) -> list[str]:
    """The names among `dotted_names` ("optimizer.momentum", ...) that are not fields of `config`.

    A field under a value that is not a ConfigDict (e.g. `seed.x`) is unknown too.
    """
    unknown = []
    for dotted in dotted_names:
        node = config
        for part in dotted.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                unknown.append(dotted)
                break
            node = node[part]
    return unknown


def _config_flag_arguments(argv, flag: str):
    """(the value of --<flag>, [the dotted fields of every --<flag>.<field>]) on a command line."""
    spec, fields = None, []
    for i, arg in enumerate(argv):
        if arg == f"--{flag}" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith(f"--{flag}="):
            spec = arg.split("=", 1)[1]
        elif arg.startswith(f"--{flag}."):
            fields.append(arg[len(flag) + 3:].split("=", 1)[0])
    return spec, fields


def check_override_flags(argv, flag: str = "config") -> None:
    """A ValueError naming every `--<flag>.<field>=` of `argv` that the `--<flag>=` config file lacks.

    ml_collections' `config_flags` reports such a field as a bare `AttributeError: 'foo'` while it
    parses the command line; the launch scripts call this first. Does nothing without `--<flag>=`.
    """
    spec, fields = _config_flag_arguments(list(argv), flag)
    if spec is None or not fields:
        return
    try:
        config = load(spec)
    except Exception:  # noqa: BLE001 - config_flags loads the same file next and reports its own error
        return
    unknown = unknown_fields(config, fields)
    if unknown:
        names = ", ".join(f"--{flag}.{name}" for name in unknown)
        top = sorted(config.keys())
        raise ValueError(
            f"{names}: no such field in the config {spec} (a typo?). Its top-level fields: {top}; a field must exist "
            "in the config to be set from the command line"
        )


def add_data_dir(config, data_dir) -> None:
    """Points the config's data set at `data_dir` (the launch scripts' --data_dir)."""
    with config.unlocked() if hasattr(config, "unlocked") else contextlib.nullcontext():
        if "data" not in config or config.data is None:
            config.data = ml_collections.ConfigDict()
        config.data.data_dir = str(data_dir)


def config_to_dict(config) -> dict:
    """A JSON-ready dict of a ConfigDict (tuples become lists): what config.json holds."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(data, default=json_default))

