"""Epoch boundaries for balancers whose rule is stated per epoch (DWA's epoch losses, STCH's warm-up).

A step cannot tell on its own that an epoch ended: Keras' `fit` knows it, the
traced step does not. `EpochSignal` is the Keras callback that tells the
model's balancer, between steps, that an epoch begins: it calls the
balancer's `begin_epoch()` if it has one, which counts epochs in a balancer
variable (`epochs_begun`, in checkpoints and `.keras` files, the same on
every replica). The step then reads that count on the device.

`MultiTaskModel.fit` (and `mtl_tf.training.distribute.multi_worker_fit`) add
it unless the callbacks hold one. A custom training loop must call
`balancer.begin_epoch()` itself at every epoch start: without it an
epoch-based method (`dwa` with `period="epoch"`, `stch` with a warm-up) never
sees an epoch end (DWA keeps weights 1, STCH stays in its warm-up).
"""

from __future__ import annotations

import keras


class EpochSignal(keras.callbacks.Callback):
    """Calls `model.balancer.begin_epoch()` at the start of every epoch (a no-op for other balancers)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        begin = getattr(getattr(self.model, "balancer", None), "begin_epoch", None)
        if callable(begin):
            begin()


def add_epoch_counter(balancer):
    """Creates `balancer.epochs_begun`, the int32 count of epochs begun (0 before any signal)."""
    balancer.epochs_begun = balancer.add_weight(
        name="epochs_begun", shape=(), dtype="int32", initializer="zeros", trainable=False,
        aggregation="only_first_replica",
    )
