"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow.

Under Keras' TensorFlow backend everything is imported at once, so `import mtl_tf`
registers every class with Keras' serialisation (`keras.models.load_model` then
finds them). Under another backend only the backend-neutral parts (`mtl_tf.solvers`)
are imported eagerly; the rest, which still needs TensorFlow, is imported on first
use (`mtl_tf.MultiTaskModel`, `mtl_tf.balancers`), so `import mtl_tf` works where
TensorFlow is not installed.
"""

import importlib as _importlib

import keras as _keras

__version__ = "0.2.0"

from mtl_tf import solvers  # noqa: E402

# Public name -> the module that defines it (imported on first use off TensorFlow).
_LAZY = {
    "balancers": "mtl_tf.balancers",
    "LossRangeError": "mtl_tf.balancers.loss_range",
    "MultiTaskModel": "mtl_tf.model",
    "NonFiniteLossError": "mtl_tf.model",
    "NonFiniteLossGuard": "mtl_tf.model",
    "split_model": "mtl_tf.nets.split",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mtl_tf' has no attribute {name!r}")
    value = _importlib.import_module(module)
    value = value if name == "balancers" else getattr(value, name)
    globals()[name] = value
    return value


if _keras.backend.backend() == "tensorflow":
    for _name in _LAZY:
        __getattr__(_name)

__all__ = ["LossRangeError", "MultiTaskModel", "NonFiniteLossError", "NonFiniteLossGuard", "balancers", "solvers", "split_model"]
