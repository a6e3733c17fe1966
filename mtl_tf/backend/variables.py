"""Creating Keras variables from inside a traced training step: the one variable operation that depends on the backend.

A method whose state has the shapes of the shared variables (`mtl_tf.balancers.tracked`)
normally creates it when the model is built, before any step is traced. When it
is first asked for inside a traced step instead (a model built by the step
itself), TensorFlow needs the creation lifted out of the graph: under
`tf.init_scope()`, and, from a replica context of a `tf.distribute` strategy,
inside a `merge_call` so that the variables are created once, as mirrored
variables. Other backends create every variable before the step is traced, so
there `create()` simply runs.
"""

from __future__ import annotations

import keras


def create_outside_step(create):
    """Runs `create()` (which creates Keras variables) outside the traced step, once for all replicas.

    TensorFlow: under `tf.init_scope()`, inside a `merge_call` when called from
    a replica context (TensorFlow imported lazily, here only). Elsewhere:
    `create()`.
    """
    if keras.backend.backend() != "tensorflow":
        create()
        return
    import tensorflow as tf

    def in_init_scope(*_):
        with tf.init_scope():
            create()

    context = tf.distribute.get_replica_context()
    if context is None:
        in_init_scope()
    else:
        context.merge_call(in_init_scope)
