"""DWA: dynamic weight average.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, section 3, eq. (7): with K tasks and the average loss L_k(t) of task
k over epoch t,

    w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),
    r_k(t-1) = L_k(t-1) / L_k(t-2),

temperature T = 2, and w_k = 1 for the first two epochs (no ratio yet). A task
whose loss falls slowly gets a larger weight. The step descends
sum_k w_k L_k.

Where an epoch ends (`period`): the paper's ratios are of epoch-average
losses (the official MTAN code and LibMTL average the batch losses of each
epoch). A step cannot see an epoch boundary, so the balancer keeps, as
variables, the running sums and counts of the current epoch's global batch
losses, the means of the last two finished epochs and the number of epochs
begun; `mtl_tf.balancers.epochs.EpochSignal` (a Keras callback) advances that
number at every epoch start, and the first step of a new epoch rolls the
sums over into the history, on the device. `MultiTaskModel.fit` adds that
callback; a custom training loop must call `balancer.begin_epoch()` at every
epoch start, or DWA never sees an epoch end and keeps w = 1 (the sum of the
losses). `period="step"` (not in the
paper) uses single steps as periods instead: r_k from the global losses of the
last two steps, w = 1 for the first two steps; it needs no callback.

Choices and deviations:

* An epoch's average is the plain mean of the global batch losses of its
  steps (as the official code), over the steps in which the task had labels;
  a skipped step (non-finite, no labels) is not counted.
* Labels (rule 3): a task without labels in the batch gets weight 0 and K
  counts the labelled tasks only, so the others get the weights of a model
  without it. A task that had no labels in one of the last two epochs has no
  ratio; r_k = 1 is used for it (as for every task in the first two epochs).
* Resuming from a checkpoint or backup continues the history (it is state);
  the epoch in which training resumes counts as a new epoch.

Logs `{task}_weight` = w_k (they sum to K, not 1).
"""

import math
import numbers

from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, validate_choice
from mtl_tf.balancers.epochs import add_epoch_counter
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.rlw import masked_softmax

PERIODS = ("epoch", "step")


@register("dwa")
class DWA(LossWeightingBalancer):
    """Dynamic weight average: w_k = K softmax(r / T)_k with r_k the ratio of the last two epoch losses.

    Args:
      temperature: T > 0 (default 2, the paper's).
      period: `"epoch"` (default, the paper: epochs as `fit` signals
        them, see the module docstring) or `"step"` (ratios of the last
        two steps' losses).

    Logs `{task}_weight` = w_k (1 for every labelled task until two periods
    have ended; 0 for a task without labels in the batch).

    Raises:
      ValueError: a temperature that is not a positive finite number, or an
        unknown period.

    Loss range: non-negative. r_k = L_k(t-1) / L_k(t-2) is a rate of descent only for losses whose
    best value is 0: for negative losses a falling loss gives r_k > 1 (the weight goes to the task
    that improves fastest, the opposite of the rule) and a sign change a negative ratio, or a huge
    one with the floor below. A loss of exactly 0: the denominator is floored at 1e-12, so a task
    whose mean loss rises from 0 takes nearly all the weight K; a loss staying at 0 has r_k = 0.

    Reference: Liu, Johns & Davison, CVPR 2019, section 3, eq. (7) (dynamic weight average).
    """

    loss_range = "non_negative"

    def __init__(self, temperature=2.0, period="epoch", **kwargs):
        super().__init__(**kwargs)
        ok = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
        if not (ok and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"dwa temperature must be a positive finite number (the paper uses 2); got {temperature!r}")
        self.temperature = float(temperature)
        self.period = validate_choice("dwa period", period, PERIODS)

    def build_for_tasks(self, task_names, losses=None):
        state = {"trainable": False, "aggregation": "only_first_replica", "initializer": "zeros"}
        num_tasks = len(task_names)
        add_epoch_counter(self)
        self.step_counter = self.add_weight(name="step_counter", shape=(), dtype="int32", **state)
        self.current_period = self.add_weight(name="current_period", shape=(), dtype="int32", **state)
        self.period_sums = self.add_weight(name="period_sums", shape=(num_tasks,), **state)
        self.period_counts = self.add_weight(name="period_counts", shape=(num_tasks,), **state)
        # Row 0: the mean loss of the last finished period with labels, row 1: the one before.
        self.loss_history = self.add_weight(name="loss_history", shape=(2, num_tasks), **state)
        self.history_length = self.add_weight(name="history_length", shape=(num_tasks,), **state)
        super().build_for_tasks(task_names, losses)

    def begin_epoch(self):
        """Counts an epoch start (called by `EpochSignal`, between steps)."""
        self.epochs_begun.assign_add(1)

    def _roll_over(self):
        """Moves the finished period's means into the history when a new period has begun."""
        # A copy: the step count as it was before the increment below.
        step = ops.copy(self.step_counter)
        self.step_counter.assign_add(1)
        period = step if self.period == "step" else ops.copy(self.epochs_begun)
        roll = ops.not_equal(period, self.current_period)
        counts = ops.cast(self.period_counts, "float32")
        means = ops.cast(self.period_sums, "float32") / ops.maximum(counts, 1.0)
        # Only tasks with labels in the finished period get a new entry.
        shift = ops.logical_and(roll, counts > 0.0)
        history = ops.cast(self.loss_history, "float32")
        newest = ops.where(shift, means, history[0])
        older = ops.where(shift, history[0], history[1])
        length = ops.where(shift, ops.minimum(self.history_length + 1.0, 2.0), self.history_length.value)
        self.loss_history.assign(ops.stack([newest, older]))
        self.history_length.assign(length)
        self.current_period.assign(period)
        zeros = ops.zeros_like(counts)
        return newest, older, length, ops.where(roll, zeros, self.period_sums.value), ops.where(roll, zeros, counts)

    def objective(self, problem, losses):
        mask = problem.task_mask
        global_losses = problem.all_reduce_sum(losses)
        newest, older, length, sums, counts = self._roll_over()
        ratios = ops.where(length >= 2.0, newest / ops.maximum(older, 1e-12), ops.ones_like(newest))
        labelled = ops.cast(mask, "float32")
        weights = ops.sum(labelled) * masked_softmax(ratios / self.temperature, mask)
        self.period_sums.assign(sums + ops.where(mask, global_losses, ops.zeros_like(global_losses)))
        self.period_counts.assign(counts + labelled)
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "period": self.period}
