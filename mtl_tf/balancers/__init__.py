"""Balancing methods, one module each, looked up by config name through the registry."""

# Importing a method's module registers it; one line each, sorted.
from mtl_tf.balancers import aligned_mtl  # noqa: F401
from mtl_tf.balancers import cagrad  # noqa: F401
from mtl_tf.balancers import db_mtl  # noqa: F401
from mtl_tf.balancers import dualproj  # noqa: F401
from mtl_tf.balancers import dwa  # noqa: F401
from mtl_tf.balancers import fairgrad  # noqa: F401
from mtl_tf.balancers import famo  # noqa: F401
from mtl_tf.balancers import gls  # noqa: F401
from mtl_tf.balancers import graddrop  # noqa: F401
from mtl_tf.balancers import gradvac  # noqa: F401
from mtl_tf.balancers import gradnorm  # noqa: F401
from mtl_tf.balancers import imtl  # noqa: F401
from mtl_tf.balancers import mgda  # noqa: F401
from mtl_tf.balancers import moco  # noqa: F401
from mtl_tf.balancers import nash_mtl  # noqa: F401
from mtl_tf.balancers import pareto_mtl  # noqa: F401
from mtl_tf.balancers import pcgrad  # noqa: F401
from mtl_tf.balancers import rlw  # noqa: F401
from mtl_tf.balancers import single_step  # noqa: F401
from mtl_tf.balancers import static  # noqa: F401
from mtl_tf.balancers import stch  # noqa: F401
from mtl_tf.balancers import uncertainty  # noqa: F401
from mtl_tf.balancers import uniform  # noqa: F401
from mtl_tf.balancers import upgrad  # noqa: F401
from mtl_tf.balancers.base import Balancer, MultiTaskProblem, Update, head_optimizer_like
from mtl_tf.balancers.loss_range import LOSS_RANGES, LossRangeError
from mtl_tf.balancers.registry import available, get, option_names, register

__all__ = ["LOSS_RANGES", "Balancer", "LossRangeError", "MultiTaskProblem", "Update", "head_optimizer_like", "available", "get", "option_names", "register"]
