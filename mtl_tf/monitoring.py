"""TensorBoard logging of a multi-task run, from callbacks only (never `tf.summary` in the step).

`TensorBoard` is `keras.callbacks.TensorBoard` plus the learning rate in the
every-N-steps (`batch_*`) scalars; Keras writes it only with the epoch scalars.
What is logged, every `update_freq` steps (`batch_<key>`) and every epoch
(`epoch_<key>`, validation under `validation/`): `loss`, `{task}_loss`, each
task metric (`{task}_accuracy`, ...), the task weights `{task}_weight` (alpha
for MGDA) and `learning_rate`. The values come from the logs `train_step`
returns, so nothing is written inside the compiled (possibly XLA) step.
"""

from __future__ import annotations

import keras
import numpy as np


def current_learning_rate(optimizer) -> float | None:
    """The optimizer's learning rate now (a schedule evaluated at its step), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that also writes `batch_learning_rate` every `update_freq` steps."""

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(logs, dict) and self._writes_this_batch():
            learning_rate = current_learning_rate(self.model.optimizer)
            if learning_rate is not None:
                logs = {**logs, "learning_rate": learning_rate}  # a copy: the progress bar keeps its logs
        super().on_train_batch_end(batch, logs)

    def _writes_this_batch(self) -> bool:
        # Keras counts `_global_train_batch` in on_train_batch_begin and records
        # batch scalars when it is a multiple of update_freq.
        if self.update_freq == "epoch":
            return False
        return int(self._global_train_batch) % int(self.update_freq) == 0
