"""Pareto MTL: one Pareto-optimal model per preference vector.

Lin, Zhen, Li, Zhang & Kwong, "Pareto Multi-Task Learning", NeurIPS 2019.
Given unit preference vectors u_1..u_K and the chosen one u_k, the loss vector L
is kept in the sub-region where u_k is the closest preference, through the
constraints G_j = (u_j - u_k)^T L / ||L|| <= 0 for j != k.

* Initial phase (finding a feasible start, paper section 4.1): while some
  constraint is active (G_j > 0), descend along the min-norm element of the
  active constraint gradients; stop as soon as none is active or after
  `init_max_steps` steps.
* Main phase (section 4.2): the min-norm element of the convex hull of the T
  task gradients and the active constraint gradients; with w = beta_task +
  sum_j beta_j (u_j - u_k), the update is sum_t w_t grad L_t with w rescaled so
  that sum_t |w_t| = T (the official code's normalisation).

Every constraint gradient is a combination of task gradients, so everything is
computed from the T x T Gram matrix of task gradients; the active set is a mask
handed to the min-norm solver, which keeps all shapes static inside the
compiled step. As in the official code the task gradients are taken with
respect to all parameters (shared and heads). The two min-norm problems are
solved in float64: their points are combinations of the T task gradients, so
their Gram matrices are rank-deficient by construction, and there the float32
solver can stop visibly short of the optimum (seen at 0.5% above it).

Preferences: `preferences` as a K x T list, otherwise for T = 2 the official
`num_preferences` points evenly spaced on the quarter circle (angle 0 to pi/2;
default 5, so index 2 is the equal preference), and for T > 2 the T unit
vectors plus the normalised all-ones vector (index T is the equal preference).
`preference_index` defaults to the equal preference.

Min-norm solver (`solver`): `wolfe` (default) solves both min-norm problems
exactly (`mtl_tf.solvers.min_norm_weights`, Wolfe's method); `official` uses
the official code's routine instead (`method="official"`: Sener & Koltun's
`MinNormSolver.find_min_norm_element`, which the official Pareto MTL code
ships unchanged: best pair, projected gradient, two-point rule with the vertex
weights 0.999 / 0.001, stop on an L1 change below 1e-5; here with a real cap
of 250 steps, which the official loop lacks). It is not exact, so the weights
differ from `wolfe`'s where it stops short or clips a vertex. With a single
active constraint in the initial phase both give it weight 1, as the official
code does without calling the solver.
"""

import math

import numpy as np
from keras import ops

from mtl_tf import solvers
from mtl_tf.backend.ops import add_n
from mtl_tf.backend.precision import float64_available
from mtl_tf.balancers.base import (
    Balancer,
    Update,
    global_parameter_gram,
    shared_task_gradients,
    stack_first_axis,
    validate_choice,
    weighted_sum,
    zeros_for_none,
)
from mtl_tf.balancers.options import check_number
from mtl_tf.balancers.registry import register

SOLVERS = ("wolfe", "official")


def default_preferences(num_tasks, num_preferences=5):
    """The official quarter-circle preferences for 2 tasks; corners and centre otherwise."""
    if num_tasks == 2:
        angles = [0.5 * math.pi * i / (num_preferences - 1) for i in range(num_preferences)]
        return [[math.cos(a), math.sin(a)] for a in angles]
    corners = [[1.0 if i == j else 0.0 for j in range(num_tasks)] for i in range(num_tasks)]
    return corners + [[1.0 / math.sqrt(num_tasks)] * num_tasks]



def _check_preferences(preferences):
    """None, or a list of preference vectors of finite numbers (signs, lengths and norms are checked at build)."""
    if preferences is None:
        return None
    if not isinstance(preferences, (list, tuple)) or not preferences or not all(
        isinstance(p, (list, tuple)) for p in preferences
    ):
        raise ValueError(
            f"pareto_mtl preferences must be a non-empty list of preference vectors (one entry per task each) or "
            f"None; got {preferences!r}"
        )
    for i, p in enumerate(preferences):
        for x in p:
            check_number("pareto_mtl", f"preferences[{i}] entry", x)
    return preferences

@register("pareto_mtl")
class ParetoMTL(Balancer):
    """Pareto MTL: the model of one preference vector u_k among u_1..u_K.

    Args:
      preferences: K x T preference vectors (finite, >= 0, not all zero; each
        normalised to unit length), or None for the defaults above.
      num_preferences: K of the default two-task preferences (>= 2; default 5).
      preference_index: k, the preference this model follows (default: the
        equal preference).
      init_max_steps: cap of the initial feasibility phase (>= 0; default 1000).
      solver: `"wolfe"` (default; exact) or `"official"` (the official code's
        min-norm routine), for both min-norm problems.

    Logs `{task}_weight` = w_t (sum |w_t| = T' over the T' labelled tasks) and
    `pareto_init_phase` (1 while in the initial phase).

    Raises:
      ValueError: a preference with a negative entry, a zero preference, a
        preference of the wrong length, an index out of range.

    Loss range: non-negative. The preference vectors are rays in the positive orthant of the loss
    space and each sub-region is the cone of loss vectors closest to one of them; for a loss vector
    with a negative entry the constraint gradients raise losses (measured with a CosineSimilarity
    task: its weight turned negative and its loss climbed). A loss of exactly 0 puts L on a boundary
    ray; L / ||L|| is formed with ||L|| floored at 1e-12, finite.

    Reference: Lin et al., NeurIPS 2019, sections 4.1-4.2 (eqs. 12-16).
    """

    loss_range = "non_negative"

    property_exceptions = {
        "unlabelled_task": (
            "a task without labels gets weight 0 and the step is Pareto MTL's on the labelled tasks with "
            "the preferences restricted to them and renormalised; a model built without the task would "
            "generate other default preferences, so its step differs"
        ),
    }

    def __init__(
        self, preferences=None, num_preferences=5, preference_index=None, init_max_steps=1000, solver="wolfe", **kwargs
    ):
        super().__init__(**kwargs)
        self.solver = validate_choice("solver", solver, SOLVERS)
        self.preferences = _check_preferences(preferences)
        self.num_preferences = check_number("pareto_mtl", "num_preferences", num_preferences, low=2, integer=True)
        self.preference_index = check_number(
            "pareto_mtl", "preference_index", preference_index, low=0, integer=True, none_ok=True
        )
        self.init_max_steps = check_number("pareto_mtl", "init_max_steps", init_max_steps, low=0, integer=True)

    def build_for_tasks(self, task_names, losses=None):
        num_tasks = len(task_names)
        prefs = self.preferences or default_preferences(num_tasks, self.num_preferences)
        if any(len(p) != num_tasks for p in prefs):
            raise ValueError(f"pareto_mtl preferences must have {num_tasks} entries each (tasks {list(task_names)}); got {prefs}")
        for i, p in enumerate(prefs):
            if not all(math.isfinite(float(x)) and float(x) >= 0 for x in p):
                raise ValueError(
                    f"pareto_mtl preference {i} is {list(p)}; expected finite entries >= 0 (a preference "
                    "vector points into the positive orthant of the loss space)"
                )
        norms = [math.sqrt(sum(float(x) ** 2 for x in p)) for p in prefs]
        zero = [i for i, n in enumerate(norms) if n == 0]
        if zero:
            raise ValueError(
                f"pareto_mtl preferences must be non-zero vectors: preference {zero[0]} is "
                f"{list(prefs[zero[0]])} (each is normalised to unit length)"
            )
        self._preferences = [[x / n for x in p] for p, n in zip(prefs, norms)]
        if self.preference_index is None:
            index = (len(prefs) - 1) // 2 if self.preferences is None and num_tasks == 2 else len(prefs) - 1
        else:
            index = int(self.preference_index)
        if not 0 <= index < len(prefs):
            raise ValueError(f"pareto_mtl preference_index={index} is out of range for {len(prefs)} preferences")
        self._index = index
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.init_steps = self.add_weight(name="init_steps", shape=(), initializer="zeros", **state)
        self.feasible = self.add_weight(name="feasible", shape=(), initializer="zeros", **state)
        super().build_for_tasks(task_names, losses)

    def compute_update(self, problem):
        T = self.num_tasks
        mask = problem.task_mask
        labelled = ops.cast(mask, "float32")
        # Restricted to the labelled tasks (rule 3): preferences and losses lose
        # the other coordinates, and the preferences are renormalised there.
        prefs = ops.convert_to_tensor(np.asarray(self._preferences, np.float32)) * labelled
        prefs = prefs / ops.maximum(ops.sqrt(ops.sum(ops.square(prefs), axis=1, keepdims=True)), 1e-12)
        losses, per_task, heads = shared_task_gradients(problem)
        heads = {t: zeros_for_none(heads[t], problem.head_variables[t]) for t in problem.task_names}
        shared_gram = global_parameter_gram(problem, stack_first_axis(per_task))
        head_sq = ops.stack([
            add_n([ops.sum(ops.square(ops.cast(g, "float32"))) for g in problem.all_reduce_sum(heads[t])]
                  or [ops.zeros([])])
            for t in problem.task_names
        ])
        # The true gradients' Gram matrix (the gradients above are of S L_t).
        gram = (shared_gram + ops.diag(head_sq)) / ops.square(problem.loss_scale)

        global_losses = problem.global_losses(losses) * labelled
        directions = prefs - prefs[self._index]  # K x T, row k is zero
        unit_losses = global_losses / ops.maximum(ops.sqrt(ops.sum(ops.square(global_losses))), 1e-12)
        violation = ops.matmul(directions, unit_losses)
        active = violation > 0.0
        feasible_now = ops.logical_not(ops.any(active))

        # Both min-norm problems are solved in float64 where the backend has it
        # (they are tiny), else in float32 (JAX without jax_enable_x64, TPUs):
        # their points are combinations of the T task gradients, so the (T + K)-point
        # Gram matrix is rank-deficient by construction, and in float32 the
        # solver can stop visibly short of the optimum on it.
        work = "float64" if float64_available() else "float32"
        gram64, directions64 = ops.cast(gram, work), ops.cast(directions, work)
        constraint_gram = ops.matmul(ops.matmul(directions64, gram64), ops.transpose(directions64))
        init_beta = ops.cast(solvers.min_norm_weights(constraint_gram, method=self.solver, mask=active), "float32")
        init_weights = ops.matmul(init_beta, directions)

        extended = ops.concatenate([ops.eye(T, dtype=work), directions64], axis=0)
        extended_gram = ops.matmul(ops.matmul(extended, gram64), ops.transpose(extended))
        extended_mask = ops.concatenate([mask, active], axis=0)
        beta = ops.cast(solvers.min_norm_weights(extended_gram, method=self.solver, mask=extended_mask), "float32")
        main_weights = beta[:T] + ops.matmul(beta[T:], directions)
        total = ops.sum(labelled)
        main_weights = main_weights * total / ops.maximum(ops.sum(ops.abs(main_weights)), 1e-12)

        in_init = ops.logical_and(
            ops.logical_and(self.init_steps < self.init_max_steps, ops.equal(self.feasible, 0.0)),
            ops.logical_not(feasible_now),
        )
        weights = ops.stop_gradient(ops.where(in_init, init_weights, main_weights) * labelled)
        self.init_steps.assign_add(ops.cast(in_init, self.init_steps.dtype))
        self.feasible.assign(ops.maximum(self.feasible, ops.cast(feasible_now, self.feasible.dtype)))
        return Update(
            shared=weighted_sum(per_task, weights),
            heads={t: [weights[i] * g for g in heads[t]] for i, t in enumerate(problem.task_names)},
            task_weights=weights,
            logs={"pareto_init_phase": ops.cast(in_init, "float32")},
        )

    def get_config(self):
        return {
            **super().get_config(),
            "preferences": self.preferences,
            "num_preferences": self.num_preferences,
            "preference_index": self.preference_index,
            "init_max_steps": self.init_max_steps,
            "solver": self.solver,
        }
