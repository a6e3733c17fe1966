"""Benchmarks: what a config names, wired into data sets, nets, losses and metrics.

Each module registers one or more benchmark builders; `mtl_tf.training.trainer`
looks them up by `config.benchmark`, so adding a benchmark never touches the
trainer.
"""

from mtl_tf.benchmarks.registry import Benchmark, available, build, check, register

__all__ = ["Benchmark", "available", "build", "check", "register"]
