"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016,
section 3: one network (column) per task, and after chosen layers a
cross-stitch unit replaces every task's activation map by a learned linear
combination of all tasks' maps at that layer (eq. 1, two tasks A and B, at
every location (i, j)):

  [x~_A; x~_B] = [[a_AA, a_AB], [a_BA, a_BB]] [x_A; x_B]

The unit's alphas are shared over positions and channels, and learnt by back
propagation (eq. 2). Section 4.2 (and Table 2): initialising the alphas as a
convex combination (a_S, a_D) = (0.9, 0.1) (same task, other task) works
best; section 4.3: the alphas need a learning rate 10^2-10^3 times the
network's to move at all.

:class:`CrossStitch` builds T columns from stage templates (each stage is
cloned once per task, e.g. conv1-pool1, conv2-pool2, fc) and puts a
:class:`CrossStitchUnit` after every stage (the paper's units follow pool1,
pool2, pool5, fc6 and fc7: every stage, the last included;
`stitch_last=False` leaves the last one out, as LibMTL does). It maps x to
`{task: column t's output}`; the task heads of the `MultiTaskModel` read their
own entry.

What the balancing methods see (`mtl_tf.balancers.base`, "Per-task
representations"): shared parameters = every variable of the body, the T
columns and the units. (Every column serves every task through the units, so
there is no finer honest split.) The representation is the dict of the
columns' outputs, which are disjoint tensors: dL_t/dZ is zero outside z_t, so
`mgda_ub` and `gradient_at="representation"` are refused (a ValueError naming
the method); use `mgda` / `gradient_at="shared_parameters"`.

T tasks. Eq. 1 is written for two; here a unit is a T x T matrix, x~_t =
sum_s a_ts x_s, initialised to `alpha_init = (a_S, a_D)`: a_tt = a_S and a_ts =
a_D / (T - 1) for s != t (rows of a convex combination, the paper's (0.9, 0.1)
for T = 2). LibMTL initialises every alpha to 1 and has no unit after the last
stage (its `_transform_resnet_cross`); no official code was released.

Learning rate of the alphas (`alpha_learning_rate_scale` = k): the units store
beta with alpha = sqrt(k) beta, so one plain-SGD step moves alpha k times as
far as an unscaled parameter (the paper's SGD; the model's single optimizer
cannot give one variable its own rate). Under Adam-like optimizers, whose
steps do not scale with the gradient, the factor is sqrt(k) instead. Default 1.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mtl_tf.backend import ops as engine_ops
from mtl_tf.nets import _checks
from mtl_tf.nets import experts as experts_lib

__all__ = ["CrossStitch", "CrossStitchUnit", "cross_stitch"]


def _check_alpha_init(owner, alpha_init):
    """(a_S, a_D) as two finite floats; a NaN or inf would make every activation after the unit non-finite."""
    if isinstance(alpha_init, (str, bytes)) or not hasattr(alpha_init, "__len__") or len(alpha_init) != 2:
        raise ValueError(f"{owner}: alpha_init must be (same-task, other-task) weights, two finite numbers; "
                         f"got {alpha_init!r}")
    return tuple(_checks.number(owner, f"alpha_init[{i}]", a) for i, a in enumerate(alpha_init))


@keras.saving.register_keras_serializable(package="mtl_tf")
class CrossStitchUnit(keras.layers.Layer):
    """A cross-stitch unit for T tasks: T tensors of one shape -> T tensors, x~_t = sum_s alpha[t, s] x_s.

    Args:
      num_tasks: T (at least 2).
      alpha_init: (a_S, a_D): alpha[t, t] = a_S and alpha[t, s] = a_D / (T - 1)
        (default (0.9, 0.1), section 4.2).
      alpha_learning_rate_scale: k > 0; alpha = sqrt(k) * beta with beta the
        variable (see the module doc). Default 1.

    Parameters: T * T.

    Raises:
      ValueError: `num_tasks` not an integer >= 2, `alpha_init` not two
        finite numbers, `alpha_learning_rate_scale` not a finite number > 0.
    """

    def __init__(self, num_tasks, alpha_init=(0.9, 0.1), alpha_learning_rate_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _checks.count("CrossStitchUnit", "num_tasks", num_tasks, low=2)
        self.alpha_init = _check_alpha_init("CrossStitchUnit", alpha_init)
        self.alpha_learning_rate_scale = _checks.number(
            "CrossStitchUnit", "alpha_learning_rate_scale", alpha_learning_rate_scale, low=0, low_open=True
        )
        self._factor = math.sqrt(self.alpha_learning_rate_scale)

    def initial_alpha(self):
        """[T, T] list of the initial alphas."""
        same, other = self.alpha_init
        other = other / (self.num_tasks - 1)
        return [[same if t == s else other for s in range(self.num_tasks)] for t in range(self.num_tasks)]

    def build(self, input_shape):
        initial = np.asarray(self.initial_alpha(), "float32") / self._factor
        self.beta = self.add_weight(
            shape=(self.num_tasks, self.num_tasks), initializer=keras.initializers.Constant(initial),
            name="beta",
        )
        self.built = True

    @property
    def alpha(self):
        """The [T, T] alpha matrix (sqrt(k) * beta)."""
        return self._factor * self.beta

    def call(self, inputs):
        if len(inputs) != self.num_tasks:
            raise ValueError(f"{self.name} mixes {self.num_tasks} tasks; got {len(inputs)} inputs")
        alpha = keras.ops.cast(self.alpha, inputs[0].dtype)
        return [engine_ops.add_n([alpha[t, s] * x for s, x in enumerate(inputs)]) for t in range(self.num_tasks)]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "alpha_init": list(self.alpha_init),
            "alpha_learning_rate_scale": self.alpha_learning_rate_scale,
        }


@keras.saving.register_keras_serializable(package="mtl_tf")
class CrossStitch(keras.layers.Layer):
    """Cross-stitch body: `x -> {task: column output}` (the last stage's output shape).

    Args:
      tasks: the task names, in head order (at least 2).
      stages: Keras layers, the stages of one column in order; each is cloned
        (from its config, own weights) for every task. Default: two dense ReLU
        stages of 16 units.
      alpha_init: (a_S, a_D), default (0.9, 0.1).
      alpha_learning_rate_scale: k, default 1 (see the module doc).
      stitch_last: True (default, the paper: a unit after every stage) or
        False (none after the last stage, LibMTL).

    Parameters: T times one column's, plus T * T per unit.

    Raises:
      ValueError: fewer than 2 or repeated task names, no stages, a stage
        that is not a Keras layer, `alpha_init` not two finite numbers,
        `alpha_learning_rate_scale` not a finite number > 0, `stitch_last`
        not True/False.
    """

    def __init__(self, tasks, stages=None, alpha_init=(0.9, 0.1), alpha_learning_rate_scale=1.0, stitch_last=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.tasks = experts_lib.check_tasks(tasks, "CrossStitch")
        if len(self.tasks) < 2:
            raise ValueError(f"CrossStitch needs at least 2 tasks; got {list(self.tasks)}")
        if stages is None:
            stages = [keras.layers.Dense(16, activation="relu") for _ in range(2)]
        stages = [experts_lib.deserialize_expert(s) for s in stages]
        if not stages:
            raise ValueError("CrossStitch needs at least one stage")
        # Only the templates' configs are kept (a tracked template would add unused weights).
        self._stage_configs = [experts_lib.serialize_expert(s) for s in stages]
        self.alpha_init = _check_alpha_init("CrossStitch", alpha_init)
        self.alpha_learning_rate_scale = _checks.number(
            "CrossStitch", "alpha_learning_rate_scale", alpha_learning_rate_scale, low=0, low_open=True
        )
        self.stitch_last = _checks.flag("CrossStitch", "stitch_last", stitch_last)
        self.columns = {
            t: [experts_lib.clone_expert(s, f"{t}_stage_{i}") for i, s in enumerate(stages)] for t in self.tasks
        }
        num_units = len(stages) if self.stitch_last else len(stages) - 1
        self.units = [
            CrossStitchUnit(len(self.tasks), self.alpha_init, self.alpha_learning_rate_scale, name=f"cross_stitch_{i}",
                            dtype=self.dtype_policy)
            for i in range(num_units)
        ]

    def build(self, input_shape):
        for t in self.tasks:
            shape = tuple(input_shape)
            for i, stage in enumerate(self.columns[t]):
                stage.build(shape)
                shape = tuple(stage.compute_output_shape(shape))
                if i < len(self.units) and not self.units[i].built:
                    self.units[i].build([shape] * len(self.tasks))
        self.built = True

    def call(self, inputs, training=None):
        h = [inputs] * len(self.tasks)
        for i in range(len(self._stage_configs)):
            h = [self.columns[t][i](h[k], training=training) for k, t in enumerate(self.tasks)]
            if i < len(self.units):
                h = self.units[i](h)
        return dict(zip(self.tasks, h))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for stage in self.columns[self.tasks[0]]:
            shape = tuple(stage.compute_output_shape(shape))
        return {t: shape for t in self.tasks}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "stages": list(self._stage_configs),
            "alpha_init": list(self.alpha_init),
            "alpha_learning_rate_scale": self.alpha_learning_rate_scale,
            "stitch_last": self.stitch_last,
        }


def cross_stitch(tasks, *, name="cross_stitch", **kwargs) -> CrossStitch:
    """The cross-stitch body; see :class:`CrossStitch`."""
    return CrossStitch(tasks, name=name, **kwargs)
