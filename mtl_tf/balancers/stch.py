"""STCH: smooth Tchebycheff scalarization.

Lin, Zhang, Yang, Liu, Wang & Zhang (X. Lin et al.), "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", ICML 2024, section 3: the
Tchebycheff scalarization max_i lambda_i (f_i - z*_i) smoothed with
parameter mu > 0,

    g_mu(x | lambda) = mu log sum_i exp(lambda_i (f_i(x) - z*_i) / mu),

with preferences lambda and the ideal point z*. It descends, smoothly, the
objective that is currently worst relative to its preference; as mu -> 0 it
becomes the Tchebycheff max, for large mu a linear scalarization.

For multi-task learning the authors' code (Xi-L/STCH, STCH_MTL, a LibMTL
weighting; also in LibMTL as `STCH`) does more than the formula, and this
module follows it:

* Warm-up: for the first epochs the network descends sum_t log L_t (with
  `log_losses=False`: sum_t L_t) and, during the last warm-up epoch, averages
  each task's batch losses into a nadir point N_t.
* Afterwards f_t = log(L_t / N_t) (with `log_losses=False`: L_t / N_t), the
  ideal point is z* = 0 in that normalised space, and the objective is
  K mu log sum_t exp(lambda_t f_t / mu), K the number of tasks (the official
  code's factor, which keeps the step size of the warm-up's sum of K terms).
* Official defaults: mu = 1, uniform preferences lambda_t = 1, warm-up
  `STCH_warmup_epoch=4`, which is the index of the epoch that collects the
  nadir point: 5 epochs without STCH. Here `warmup_epochs=5` counts those 5
  epochs (the nadir point comes from the 5th); `warmup_epochs=0` starts STCH at
  once with N_t = 1.

Epochs: the warm-up is counted in epochs, which a step cannot see; the
`mtl_tf.balancers.epochs.EpochSignal` callback tells the balancer where each
begins (`MultiTaskModel.fit` adds it; a custom training loop must call
`balancer.begin_epoch()` at every epoch start, or with warm-up epochs STCH
never leaves the warm-up). The nadir point and the epoch count are balancer variables.

Choices and deviations:

* Deviations from the paper (all the official code's): the log of the losses,
  the nadir normalisation, z* = 0 in the normalised space rather than the
  ideal point of the objectives, the warm-up and the factor K. Preferences
  are not normalised to the simplex: lambda and mu enter only as lambda / mu,
  so the paper's uniform lambda_t = 1/K with mu is lambda_t = 1 with mu K.
* The log-sum-exp is evaluated stably (max subtracted), as the official code;
  the losses are floored at 1e-20 before the log (the official code adds it).
* Labels (rule 3): a task without labels in the batch is left out of the sum
  and of K, so the others get the step of a model without it. A task without
  labels in the whole nadir epoch keeps N_t = 1.
* All weights come from the global-batch losses and multiply the local ones
  (stop-gradient), which is the gradient of the objective on the global batch
  (rule 4).

Logs `{task}_weight` = dJ/dL_t, the weight of grad L_t in the update:
K softmax(lambda f / mu)_t lambda_t / L_t after the warm-up (divided by N_t
instead of L_t with `log_losses=False`), 1 / L_t (or 1) during it.
"""

import math
import numbers

import numpy as np
from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, as_task_vector
from mtl_tf.balancers.epochs import add_epoch_counter
from mtl_tf.balancers.options import check_number, check_task_values
from mtl_tf.balancers.registry import register
from mtl_tf.balancers.rlw import masked_softmax

LOSS_FLOOR = 1e-20


@register("stch")
class STCH(LossWeightingBalancer):
    """Smooth Tchebycheff scalarization of the (log, nadir-normalised) task losses, after a warm-up.

    Args:
      mu: the smoothing parameter mu > 0 (default 1.0, the official MTL code's).
      preferences: None (default: lambda_t = 1 for every task) or positive
        numbers, a list in head order or a dict by task.
      warmup_epochs: epochs of the linear warm-up whose last one gives the
        nadir point (default 5, the official code's STCH_warmup_epoch=4); 0
        starts STCH at once without normalisation. Epochs as `fit` signals them.
      log_losses: True (default, the official code) scalarises log(L_t / N_t);
        False scalarises L_t / N_t (the paper's f_t = L_t).

    Logs `{task}_weight` = the weight of grad L_t in the update.

    Raises:
      ValueError: mu not a positive finite number, warmup_epochs not an
        integer >= 0, preferences not positive finite numbers or of the wrong
        length / keys.

    Loss range: non-negative. With `log_losses=True` (default) it scalarises log(L_t / N_t); with
    False, L_t / N_t against the ideal point 0, which must lie below every loss (Tchebycheff needs
    z* <= f); a negative nadir N_t flips a task's objective. A negative loss is floored at 1e-20
    (the official code's), so its warm-up weight 1 / L_t is 1e20. A loss of exactly 0 is floored
    likewise: after the warm-up its log is -46 and its weight near 0; during the warm-up its weight
    is 1 / max(L_t, 1e-20), 1e20 at 0 and huge near it (measured: an MSE task starting at 0 reached
    234 on the third step of SGD(1e-3)).

    Reference: X. Lin et al., ICML 2024, section 3 (smooth Tchebycheff
    scalarization); the authors' code Xi-L/STCH (STCH_MTL).
    """

    loss_range = "non_negative"

    def __init__(self, mu=1.0, preferences=None, warmup_epochs=5, log_losses=True, **kwargs):
        super().__init__(**kwargs)
        ok = isinstance(mu, numbers.Real) and not isinstance(mu, bool) and math.isfinite(mu) and mu > 0
        if not ok:
            raise ValueError(f"stch mu must be a positive finite number; got {mu!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0:
            raise ValueError(f"stch warmup_epochs must be an integer >= 0; got {warmup_epochs!r}")
        if not isinstance(log_losses, bool):
            raise ValueError(f"stch log_losses must be True or False; got {log_losses!r}")
        self.mu = float(mu)
        self.preferences = check_task_values(
            "stch", "preferences", preferences,
            # The sign is checked at build, where the message can name the task.
            lambda label, value: check_number("stch", label, value),
        )
        self.warmup_epochs = int(warmup_epochs)
        self.log_losses = log_losses

    def build_for_tasks(self, task_names, losses=None):
        if self.preferences is None:
            preferences = [1.0] * len(task_names)
        else:
            preferences = as_task_vector("stch preferences", self.preferences, task_names)
            for t, value in zip(task_names, preferences):
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                if not (ok and value > 0):
                    raise ValueError(f"stch preference of task {t!r} is {value!r}; expected a positive finite number")
        self._preferences = [float(p) for p in preferences]
        state = {"trainable": False, "aggregation": "only_first_replica", "initializer": "zeros"}
        add_epoch_counter(self)
        self.nadir_sums = self.add_weight(name="nadir_sums", shape=(len(task_names),), **state)
        self.nadir_counts = self.add_weight(name="nadir_counts", shape=(len(task_names),), **state)
        super().build_for_tasks(task_names, losses)

    def begin_epoch(self):
        """Counts an epoch start (called by `EpochSignal`, between steps)."""
        self.epochs_begun.assign_add(1)

    def nadir_point(self):
        """[T] N_t: the nadir epoch's mean losses (1 for a task without labels then, or without warm-up)."""
        counts = ops.cast(self.nadir_counts, "float32")
        return ops.where(counts > 0.0, self.nadir_sums / ops.maximum(counts, 1.0), ops.ones_like(counts))

    def objective(self, problem, losses):
        mask = problem.task_mask
        labelled = ops.cast(mask, "float32")
        global_losses = ops.where(mask, problem.all_reduce_sum(losses), ops.ones_like(losses))
        global_losses = ops.maximum(global_losses, LOSS_FLOOR)
        # Epoch 1 also before any signal, so a run without EpochSignal stays in epoch 1.
        epoch = ops.maximum(ops.copy(self.epochs_begun), 1)
        if self.warmup_epochs > 0:
            collecting = ops.equal(epoch, self.warmup_epochs)
            self.nadir_sums.assign_add(ops.where(collecting, labelled * global_losses, ops.zeros_like(labelled)))
            self.nadir_counts.assign_add(ops.where(collecting, labelled, ops.zeros_like(labelled)))
        warm = epoch <= self.warmup_epochs

        nadir = self.nadir_point()
        normalised = global_losses / nadir
        values = ops.log(ops.maximum(normalised, LOSS_FLOOR)) if self.log_losses else normalised
        # d f_t / d L_t
        slopes = 1.0 / global_losses if self.log_losses else 1.0 / nadir
        preferences = ops.convert_to_tensor(np.asarray(self._preferences, np.float32))
        smooth_max = masked_softmax(preferences * values / self.mu, mask)
        stch_weights = ops.sum(labelled) * smooth_max * preferences * slopes
        warmup_weights = labelled * (1.0 / global_losses if self.log_losses else ops.ones_like(global_losses))
        weights = ops.stop_gradient(ops.where(warm, warmup_weights, stch_weights))
        return ops.sum(weights * losses), weights

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "preferences": self.preferences,
            "warmup_epochs": self.warmup_epochs,
            "log_losses": self.log_losses,
        }
