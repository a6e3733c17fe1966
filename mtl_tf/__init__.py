"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow."""

__version__ = "0.2.0"

from mtl_tf import balancers, solvers
from mtl_tf.balancers.loss_range import LossRangeError
from mtl_tf.model import MultiTaskModel, NonFiniteLossError, NonFiniteLossGuard
from mtl_tf.nets.split import split_model

__all__ = ["LossRangeError", "MultiTaskModel", "NonFiniteLossError", "NonFiniteLossGuard", "balancers", "solvers", "split_model"]
