"""The paper-table contract and registry (see `mtl_tf.reports`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from mtl_tf import plugins

_TABLES: dict[str, "PaperTable"] = {}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run a table needs.

    Attributes:
      key: a unique, filesystem-safe name; the run's workdir is `<root>/<key>`.
      config: a config path with an optional `:variant`, as `launch/train.py --config` takes it.
      overrides: dotted config fields to set, e.g. `{"method": "mgda_ub", "seed": 1}`.
    """

    key: str
    config: str
    overrides: dict


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """A paper table (and its figures) as runs plus renderers.

    Attributes:
      name: the `--table` name, e.g. "lee_son_table1".
      description: one line naming the paper, table and protocol.
      default_methods: methods run when the user names none.
      runs: `fn(methods, seeds) -> list[Run]`.
      render: `fn(results) -> str`, a markdown table of our mean +- std beside the
        published numbers; `results` are the loaded `results.json` dicts, each with
        an added `"run_key"`.
      figures: `fn(results, out_dir: Path) -> list[Path]`, the PNGs it wrote.
    """

    name: str
    description: str
    default_methods: tuple
    runs: Callable[[list, list], list]
    render: Callable[[list], str]
    figures: Callable[[list, Path], list] = lambda results, out_dir: []


def register(table: PaperTable) -> PaperTable:
    if table.name in _TABLES and _TABLES[table.name] is not table:
        raise ValueError(f"paper table {table.name!r} is registered twice")
    _TABLES[table.name] = table
    return table


def _discover():
    plugins.import_all_modules("mtl_tf.reports")


def available():
    _discover()
    return sorted(_TABLES)


def get(name) -> PaperTable:
    _discover()
    if name not in _TABLES:
        raise ValueError(f"unknown paper table {name!r}; expected one of {sorted(_TABLES)}")
    return _TABLES[name]
