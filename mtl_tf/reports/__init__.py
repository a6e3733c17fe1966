"""Paper tables and figures: which runs a table needs and how to print it.

`launch/reproduce.py --table=NAME` looks a `PaperTable` up here, trains the
runs that have no `results.json` yet (so it resumes), then prints our
mean +- std beside the published numbers and draws the table's figures.
Each module of this package registers its tables; a new table is one module.
"""

from mtl_tf.reports.registry import PaperTable, Run, available, get, register

__all__ = ["PaperTable", "Run", "available", "get", "register"]
