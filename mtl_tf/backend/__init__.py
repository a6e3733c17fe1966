"""Single operations whose form differs between Keras backends, for the backend-neutral code.

The nets, losses, metrics and solvers are written in `keras.ops`; the few
operations Keras does not offer in the form they need (an align-corners bilinear
upsampling, TensorFlow's own gather/argmin kernels inside the solver loops, whether
float64 is available, raw Philox draws keyed by a seed (`random`), creating
variables from inside a traced step (`variables`)) are here, one function each, dispatching on
`keras.backend.backend()`. This package imports nothing else of mtl_tf, so any
module may use it; the training-step engines are `mtl_tf.engines`.
"""
