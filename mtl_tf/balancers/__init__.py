"""Balancing methods, one module each, looked up by config name through the registry."""

from mtl_tf.balancers import gradnorm, mgda, pareto_mtl, pcgrad, single_step, static, uncertainty, uniform  # noqa: F401  (registration)
from mtl_tf.balancers.base import Balancer, MultiTaskProblem, Update, head_optimizer_like
from mtl_tf.balancers.registry import available, get, option_names, register

__all__ = ["Balancer", "MultiTaskProblem", "Update", "head_optimizer_like", "available", "get", "option_names", "register"]
