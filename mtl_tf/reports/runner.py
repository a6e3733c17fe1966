"""Runs a paper table: trains its missing runs, then renders the table and its figures.

`run_table` is what `launch/reproduce.py` calls. It is generic over
`mtl_tf.reports.PaperTable`: for every `Run` of the table it trains
`<root>/<run.key>` unless that directory already holds a `results.json` (so an
interrupted reproduction resumes where it stopped, and a finished one only
re-renders), then hands the loaded results to the table's `render` and
`figures`, and writes `<root>/<table>.md`.

Runs are trained in this process through `mtl_tf.training.trainer` (`launcher=
"inprocess"`) or each in a fresh `launch/train.py` process (`"subprocess"`).
`"auto"` picks the subprocess whenever the strategy is not `default`, because
TensorFlow allows one `MirroredStrategy` per process.

A run whose config differs from its table's protocol (the table's config file with
the run's own overrides, e.g. after `--config_overrides=epochs=1`) must not pass for
the paper's protocol: each loaded result gets `protocol_overrides` (the fields that
differ, `common.protocol_differences`), and the table's markdown starts with
`common.overrides_note`, which the figures put in their titles too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras

from mtl_tf.reports import common, registry
from mtl_tf.training import config as config_lib
from mtl_tf.training import distribute, trainer

LAUNCHERS = ("auto", "inprocess", "subprocess")
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "launch" / "train.py"


def parse_overrides(items) -> dict:
    """["a.b=1", "c=x"] -> {"a.b": 1, "c": "x"} (values as Python literals, else strings)."""
    overrides = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config override {item!r} is not of the form field.path=value")
        overrides[key.strip()] = config_lib.parse_value(value.strip())
    return overrides


def _flag_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


def train_command(run: registry.Run, workdir: Path, overrides: dict, *, strategy="default", data_dir=None,
                  verbose=2, train_script=TRAIN_SCRIPT) -> list[str]:
    """The `launch/train.py` command line of one run."""
    # Absolute, so the command works from any directory (tables name configs relative to the repository).
    path, sep, variant = run.config.partition(":")
    config = f"{config_lib.resolve_config_path(path)}{sep}{variant}"
    command = [sys.executable, str(train_script), f"--config={config}", f"--workdir={workdir}",
               f"--strategy={strategy}", f"--verbose={verbose}"]
    for key, value in {**run.overrides, **overrides}.items():
        command.append(f"--config.{key}={_flag_value(value)}")
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    return command


class OverrideError(ValueError):
    """A `--config_overrides` field that a table's config does not have."""


def check_overrides(runs, overrides: dict) -> None:
    """An `OverrideError` naming each override field that a run's config lacks, before anything trains."""
    for config_spec in dict.fromkeys(run.config for run in runs):
        config = config_lib.load(config_spec)
        unknown = config_lib.unknown_fields(config, list(overrides))
        if unknown:
            raise OverrideError(
                f"--config_overrides {unknown}: no such field in {config_spec} (a typo?); its top-level fields: "
                f"{sorted(config.keys())}"
            )


def protocol_config(run: registry.Run) -> dict:
    """The config dict a run of the table is meant to have: its config file with the run's own overrides."""
    config = config_lib.load(run.config)
    config_lib.apply_overrides(config, dict(run.overrides))
    return config_lib.config_to_dict(config)


def _train_inprocess(run, workdir, overrides, *, strategy, data_dir, verbose):
    config = config_lib.load(run.config)
    config_lib.apply_overrides(config, {**run.overrides, **overrides})
    if data_dir:
        config_lib.add_data_dir(config, data_dir)
    keras.backend.clear_session()
    trainer.train_and_evaluate(config, workdir, strategy=strategy, verbose=verbose)


def run_table(
    name: str,
    *,
    root,
    methods=None,
    seeds=(0,),
    overrides=None,
    launcher: str = "auto",
    strategy: str = "default",
    data_dir=None,
    verbose=2,
    dry_run: bool = False,
    train_script=TRAIN_SCRIPT,
    log=print,
) -> dict:
    """Trains the missing runs of table `name` under `root`, renders it, draws its figures.

    Returns {"runs": [Run], "trained": [keys], "skipped": [keys], "results":
    [dicts], "markdown": str, "note": str ("" when every run follows the table's
    protocol), "figures": [Path], "table_path": Path}.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; expected one of {list(LAUNCHERS)}")
    table = registry.get(name)
    methods = list(methods) if methods else list(table.default_methods)
    seeds = [int(s) for s in seeds]
    overrides = dict(overrides or {})
    root = Path(root)
    runs = table.runs(methods, seeds)
    keys = [r.key for r in runs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"table {name!r} produced duplicate run keys {duplicates}")
    if not dry_run:
        check_overrides(runs, overrides)
    if launcher == "auto":
        launcher = "inprocess" if strategy == "default" else "subprocess"
    strategy_object = None
    trained, skipped = [], []
    for i, run in enumerate(runs, 1):
        workdir = root / run.key
        if (workdir / "results.json").exists():
            skipped.append(run.key)
            log(f"[{i}/{len(runs)}] {run.key}: finished, skipping")
            continue
        log(f"[{i}/{len(runs)}] {run.key}: training {run.config} {run.overrides}" + (" (dry run)" if dry_run else ""))
        if dry_run:
            continue
        if launcher == "subprocess":
            command = train_command(run, workdir, overrides, strategy=strategy, data_dir=data_dir,
                                    verbose=verbose, train_script=train_script)
            completed = subprocess.run(command)
            if completed.returncode != 0:
                raise RuntimeError(f"run {run.key} failed (exit code {completed.returncode}): {' '.join(command)}")
        else:
            if strategy_object is None:
                strategy_object = distribute.make_strategy(strategy)
            _train_inprocess(run, workdir, overrides, strategy=strategy_object, data_dir=data_dir, verbose=verbose)
        trained.append(run.key)
    results = []
    protocols: dict[tuple, dict] = {}
    for run in runs:
        path = root / run.key / "results.json"
        if path.exists():
            result = {**json.loads(path.read_text()), "run_key": run.key}
            key = (run.config, json.dumps(run.overrides, sort_keys=True, default=repr))
            if key not in protocols:
                protocols[key] = protocol_config(run)
            result[common.PROTOCOL_OVERRIDES] = common.protocol_differences(result.get("config") or {}, protocols[key])
            results.append(result)
    note = common.overrides_note(results)
    markdown = table.render(results)
    if note:
        markdown = f"**{note}**\n\n{markdown}"
    root.mkdir(parents=True, exist_ok=True)
    table_path = root / f"{table.name}.md"
    table_path.write_text(f"# {table.description}\n\n{markdown}\n")
    figures = [Path(p) for p in table.figures(results, root)] if results else []
    return {
        "runs": runs,
        "trained": trained,
        "skipped": skipped,
        "results": results,
        "markdown": markdown,
        "note": note,
        "figures": figures,
        "table_path": table_path,
    }
