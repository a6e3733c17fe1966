"""mtl_tf: multi-task learning as multi-objective optimisation for Keras 3 / TensorFlow."""
