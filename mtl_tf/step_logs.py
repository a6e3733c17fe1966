"""The logs of a `MultiTaskModel`: what each one is, and the trackers that record them.

`MultiTaskModel.train_step` returns these logs; `test_step` (`evaluate` and
the `val_` logs) the losses and metrics only. Callbacks and the progress bar
see them after every step, the History (and TensorBoard's `epoch_*`) at the
end of each epoch. The logs, all of them here:

  ===================  ===============================================================
  loss                 the sum of the task losses, unweighted (what Keras logs as
                       `loss` for a multi-output model with loss weights 1), the
                       same quantity for every method; NOT the objective the
                       balancer minimises (the task weights play no part in it)
  {task}_loss          the task loss
  {task}_{metric}      each task metric
  {task}_weight        the task weight the method used on the step (alpha for
                       MGDA); in the History: that of the LAST step of the epoch
  {task}_weight_mean   the mean of `{task}_weight` over the epoch's steps so far,
                       skipped steps left out; in the History: the epoch mean
  ...                  method-specific scalars: epoch means for those the method
                       lists in `epoch_mean_logs` (e.g. `{task}_inner_loss`), the
                       step's value for the others
  skipped_update       1 when the batch was not applied, else 0
  labelled_tasks       the number of tasks with labels in the (global) batch
  loss_scale           the loss scale, under a loss-scaling optimizer (mixed_float16)
  skip_cause           why the batch was not applied: 0 applied (or a benign skip),
                       1 a task loss not finite, 2 gradients not finite, 3 a task loss
                       outside the method's range, 4 the update would leave a variable
                       non-finite (`mtl_tf.step_guard`)
  skip_task            the index in `task_names` of the task concerned (-1: none)
  skip_value           cause 3: that task's loss; cause 4: the index of the variable
                       in `mtl_tf.step_guard.guarded_variables(model)`; else 0
  val_monitor          launch runs only (not `fit`): the mean of `val_<key>` over
                       the benchmark's monitor keys, by which the run picks its
                       best epoch (`mtl_tf.training.callbacks.BestCheckpoint`)
  ===================  ===============================================================

Losses and metrics are running means over the epoch, as in Keras (batch losses
weighted by batch size), reset at each epoch, so the History holds epoch
means; so is `{task}_weight_mean` (each applied step counts once). The other
logs are the values of the current step. `evaluate` and the `val_` logs have
`loss`, `{task}_loss` and the metrics only.

`record` updates the loss and metric trackers of a step (train and test);
`task_weight_logs` the task weights and their epoch means; `method_logs` the
method's own logs, as epoch means for those in `Balancer.epoch_mean_logs`.
"""

from __future__ import annotations

import tensorflow as tf


def record(model, y, sample_weight, predictions, global_losses):
    """{`loss`, `{task}_loss`, `{task}_{metric}`} after updating their trackers with one batch."""
    # Batch means weighted by the (local) batch size, as Keras' own loss
    # tracker does, so that a partial last batch counts for its size and
    # the epoch value is the data set's mean loss.
    batch_size = tf.cast(tf.shape(tf.nest.flatten(predictions)[0])[0], tf.float32)
    model.loss_tracker.update_state(tf.reduce_sum(global_losses), sample_weight=batch_size)
    logs = {"loss": model.loss_tracker.result()}
    for i, t in enumerate(model.task_names):
        model.task_loss_trackers[t].update_state(global_losses[i], sample_weight=batch_size)
        logs[f"{t}_loss"] = model.task_loss_trackers[t].result()
        for metric in model.task_metrics[t]:
            metric.update_state(y[t], predictions[t], sample_weight=sample_weight[t])
            logs[metric.name] = metric.result()
    return logs


def task_weight_logs(model, task_weights, kept):
    """{`{task}_weight`, `{task}_weight_mean`} of a training step (`kept`: the step was applied)."""
    logs = {}
    for i, t in enumerate(model.task_names):
        logs[f"{t}_weight"] = task_weights[i]
        # The mean over the applied steps: a skipped step's weights moved nothing (and may be NaN).
        weight = tf.where(kept, tf.cast(task_weights[i], tf.float32), 0.0)
        model.task_weight_trackers[t].update_state(weight, sample_weight=tf.cast(kept, tf.float32))
        logs[f"{t}_weight_mean"] = model.task_weight_trackers[t].result()
    return logs


def method_logs(model, update_logs, predictions):
    """The method's logs of a training step, epoch means for those it lists in `epoch_mean_logs`."""
    logs = dict(update_logs)
    batch_size = tf.cast(tf.shape(tf.nest.flatten(predictions)[0])[0], tf.float32)
    for name, tracker in model.method_log_trackers.items():
        tracker.update_state(update_logs[name], sample_weight=batch_size)
        logs[name] = tracker.result()
    return logs
