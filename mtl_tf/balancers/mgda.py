"""MGDA and MGDA-UB.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018.

* `mgda` (section 3.1-3.2, Algorithm 2): per-task gradients with respect to all
  shared parameters theta_sh, alpha = the min-norm point of their convex hull,
  shared update sum_t alpha_t grad_sh L_t. T backward passes through the encoder,
  each with the output gradient dL_t/dZ (the chain rule: grad_sh L_t =
  (dZ/dtheta_sh)^T dL_t/dZ), or one pass vectorised over the tasks
  (`MultiTaskProblem.encoder_backward_stacked`; `tf.vectorized_map` on
  TensorFlow) with `jacobian=True`: the same arithmetic as a batch of
  T backward passes, faster where the T passes alone do not fill the device,
  at T times the memory of one backward pass.
* `mgda_ub` (section 3.3): the same with gradients with respect to the shared
  representation Z = g(x; theta_sh). One forward pass, T backward passes through
  the heads only, one backward pass through the encoder with the combined
  output gradient sum_t alpha_t dL_t/dZ.

Both differentiate the encoder and the heads separately, and every head reads
its own identity copy of Z, so one backward pass through all heads gives every
dL_t/dZ and every head gradient (`MultiTaskProblem.representation_gradients`);
no gradient call walks the encoder's operations more often than the method
needs. The arithmetic of a step is the same as with one persistent tape over
the whole forward pass; what shrinks is the time to trace the step, which with
one tape grows as T times the encoder (each of the T gradient calls walks it).

Options:
  normalization: `none`, `l2`, `loss`, `loss+` (the official code's
    `normalization_type`); it changes alpha only, the update uses the raw losses.
  head_update: `paper` (default; Algorithm 2 lines 1-3: each head descends its
    own unscaled loss gradient, and alpha and the shared gradient are taken at
    the heads before that step), `paper_sequential` (Algorithm 2 in its order,
    see below) or `official` (the official training loop back-propagates
    sum_t alpha_t L_t through everything, so head t gets alpha_t times its
    gradient).
  solver, max_iterations, tolerance: passed to `mtl_tf.solvers.min_norm_weights`.
    The default solver reaches the exact min-norm point; `solver="frank_wolfe"` is
    the paper's plain Frank-Wolfe; `solver="official"` is the official code's
    `MinNormSolver.find_min_norm_element` (best pair, projected gradient,
    vertex weights 0.999 / 0.001, L1 stop; see `mtl_tf.solvers`).

`head_update="paper_sequential"` follows the order of Algorithm 2: lines 1-3
first move every head, theta^t <- theta^t - eta grad_{theta^t} L_t(theta_sh,
theta^t); lines 4-5 then solve for alpha and step the shared parameters with
sum_t alpha_t grad_sh L_t(theta_sh, theta^t) at the moved heads. The model's
optimizer applies every gradient in one step, so the moved heads are computed
here as the plain-SGD look-ahead theta^t - lr g_t (lr the optimizer's current
learning rate, g_t the global-batch gradient of L_t with respect to theta^t),
and the heads are run again statelessly at those values on identity copies of
Z (`MultiTaskProblem.heads_with`; same dropout masks, no state moves) to get
dL_t/dZ there and the losses there (read by the `loss` and `loss+`
normalisations). alpha and the shared update come from those gradients as in
the other modes (`mgda`: their encoder gradients). The heads' own update is
still g_t at the old point, unscaled by alpha, as Algorithm 2 line 2 says.
This is exact for plain SGD (no momentum, weight decay or clipping), the
paper's optimizer; with any other optimizer (momentum, Adam, ...) the heads
move by that optimizer's step while the shared gradient is taken at their
plain-SGD look-ahead. It costs one more backward pass through the heads.

Deviations from the official code: the default solver is exact and runs on
the device inside the compiled step (the official one loops on the host); the
two-task closed form clips to [0, 1] as the paper says (the code clips to
[0.001, 0.999]; `solver="official"` keeps the code's solver and its rule); under
data parallelism alpha comes from the Gram matrix of the global batch, so every
replica applies the same update.
"""

import keras
from keras import ops

from mtl_tf import solvers
from mtl_tf.backend.ops import add_n
from mtl_tf.balancers.base import (
    Balancer,
    Update,
    global_parameter_gram,
    gram_matrix,
    is_per_task,
    stack_first_axis,
    validate_choice,
    weighted_sum,
    zeros_for_none,
)
from mtl_tf.balancers.options import check_bool, check_number
from mtl_tf.balancers.registry import register

HEAD_UPDATES = ("paper", "official", "paper_sequential")


class _MinNormBalancer(Balancer):
    simplex_weights = True

    def __init__(
        self,
        normalization="none",
        head_update="paper",
        solver=None,
        max_iterations=None,
        tolerance=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.normalization = validate_choice("normalization", normalization, solvers.NORMALIZATIONS)
        self.head_update = validate_choice("head_update", head_update, HEAD_UPDATES)
        self.solver = None if solver is None else validate_choice("solver", solver, solvers.METHODS)
        method = self.method_name
        self.max_iterations = check_number(method, "max_iterations", max_iterations, low=1, integer=True, none_ok=True)
        self.tolerance = check_number(method, "tolerance", tolerance, low=0, none_ok=True)

    def loss_range_needed(self):
        """Non-negative with a loss normalisation (it divides by |L_t|), else any (see the class docstrings)."""
        return "non_negative" if self.normalization in ("loss", "loss+") else "any"

    def task_weights(self, problem, gram, global_losses):
        """alpha for a global float32 Gram matrix of the (loss-scaled) task gradients.

        The Gram matrix is brought back to the true gradients' (divided by S^2)
        and the solver sees only the tasks labelled in the global batch; the
        others get alpha_t = 0.
        """
        options = {"max_iterations": self.max_iterations, "tolerance": self.tolerance}
        if self.solver is not None:
            options["method"] = self.solver
        gram = gram / ops.square(problem.loss_scale)
        normalised = solvers.normalize_gram(gram, global_losses, self.normalization)
        return ops.stop_gradient(solvers.min_norm_weights(normalised, mask=problem.task_mask, **options))

    def after_head_step(self, problem, z, own_gradients):
        """(losses, [T] dL_t/dZ) at the heads after their own SGD step (`paper_sequential`).

        own_gradients: {task: gradients of S L_t (this replica) w.r.t. the
        head's variables}, from the real pass. The returned gradients are of
        S L_t and the losses unscaled, as `representation_gradients` gives them.
        """
        tasks = problem.task_names
        own = {t: zeros_for_none(own_gradients[t], problem.head_variables[t]) for t in tasks}
        # The optimizer applies the replicas' summed head gradients divided by
        # S: the look-ahead must use that same global, true gradient.
        own = problem.unscale(problem.all_reduce_sum(own))
        lr = problem.learning_rate
        moved = {
            t: [v.value - ops.cast(lr, v.dtype) * ops.cast(g, v.dtype) for v, g in zip(problem.head_variables[t], own[t])]
            for t in tasks
        }

        def heads_after_their_step(copies):
            # Head t reads its own copy of Z, so the gradient at copy t is dL_t/dZ.
            _, losses = problem.heads_with(dict(zip(tasks, copies)), head_values=moved)
            return add_n([problem.scale(loss) for loss in losses]), losses

        (_, losses), grads = problem.value_and_gradients(heads_after_their_step, [z for _ in tasks])
        return losses, list(grads)

    def head_gradients(self, own_gradients, alpha):
        if self.head_update in ("paper", "paper_sequential"):
            return own_gradients
        return {
            t: [None if g is None else ops.cast(alpha[i], g.dtype) * g for g in grads]
            for i, (t, grads) in enumerate(own_gradients.items())
        }

    def get_config(self):
        return {
            **super().get_config(),
            "normalization": self.normalization,
            "head_update": self.head_update,
            "solver": self.solver,
            "max_iterations": self.max_iterations,
            "tolerance": self.tolerance,
        }


@register("mgda")
class MGDA(_MinNormBalancer):
    """Exact MGDA: the min-norm combination of the task gradients w.r.t. all shared parameters.

    Costs T backward passes through the encoder per step (or one vectorised
    pass with `jacobian=True`).

    Args:
      normalization: `"none"` (default), `"l2"`, `"loss"` or `"loss+"`: how each
        task gradient is scaled before the min-norm problem (the official
        code's `normalization_type`); alpha only, the update uses the raw losses.
      head_update: `"paper"` (default: Algorithm 2, each head descends its own
        unscaled gradient), `"paper_sequential"` (Algorithm 2's order: alpha and
        the shared gradient at the heads' SGD look-ahead) or `"official"` (the
        official loop: head t gets alpha_t times its gradient).
      solver: None (default `"wolfe"`, the exact min-norm point), `"frank_wolfe"`
        (the paper's Algorithm 2 solver) or `"official"` (the official routine).
      max_iterations, tolerance: the solver's cap and stopping tolerance (None:
        the solver's defaults, see `mtl_tf.solvers.min_norm_weights`).
      jacobian: False (default: T backward passes) or True (one pass
        vectorised over the tasks, `encoder_backward_stacked`; T times the memory).

    Logs `{task}_weight` = alpha_t (on the simplex; 0 for a task without
    labels in the batch).

    Raises:
      ValueError: an unknown normalization, head update or solver; jacobian
        not True/False; max_iterations not an integer >= 1; tolerance not a
        finite number >= 0 (None is the solver's default for both).

    Loss range: any real loss with `normalization="none"` (default) or `"l2"`: alpha comes from the
    Gramian alone. Non-negative with `"loss"` or `"loss+"`, which divide each gradient by |L_t| (the
    official code by L_t): a scale relative to the loss's distance from 0, its best value, which a
    negative loss does not measure. A loss of exactly 0 leaves its gradient unscaled there
    (`mtl_tf.solvers.normalize_gram`).

    Reference: Sener & Koltun, NeurIPS 2018, sections 3.1-3.2, Algorithm 2.
    """

    loss_range = "any"

    def __init__(self, jacobian=False, **kwargs):
        super().__init__(**kwargs)
        self.jacobian = check_bool("mgda", "jacobian", jacobian)

    def compute_update(self, problem):
        shared_vars = problem.shared_variables
        # g_t = grad_sh L_t = J^T dL_t/dZ (J = dZ/dtheta_sh): the heads are
        # differentiated once for every task, then the encoder once per task.
        z = problem.encode(passes=self.num_tasks)
        losses, representation_grads, heads = problem.representation_gradients(z)
        if self.head_update == "paper_sequential":
            losses, representation_grads = self.after_head_step(problem, z, heads)

        if self.jacobian:
            # One vectorised pass (pfor over tasks): every entry is [T, *variable.shape].
            stacked_dz = keras.tree.map_structure(lambda *g: ops.stack(g), *representation_grads)
            stacked = problem.encoder_backward_stacked(stacked_dz)
            per_task = [[s[t] for s in stacked] for t in range(self.num_tasks)]
        else:
            per_task = [zeros_for_none(problem.encoder_backward(dz), shared_vars) for dz in representation_grads]
            stacked = stack_first_axis(per_task)
        problem.release_encoder()
        gram = global_parameter_gram(problem, stacked)
        alpha = self.task_weights(problem, gram, problem.global_losses(losses))
        return Update(
            shared=weighted_sum(per_task, alpha),
            heads=self.head_gradients(heads, alpha),
            task_weights=alpha,
        )

    def get_config(self):
        return {**super().get_config(), "jacobian": self.jacobian}


@register("mgda_ub")
class MGDAUB(_MinNormBalancer):
    """MGDA-UB: the min-norm problem on the gradients w.r.t. the shared representation Z.

    One forward pass, one backward pass through the heads for every dL_t/dZ,
    one backward pass through the encoder with sum_t alpha_t dL_t/dZ.

    Args:
      normalization: `"none"` (default), `"l2"`, `"loss"` or `"loss+"`: how each
        task gradient is scaled before the min-norm problem (the official
        code's `normalization_type`); alpha only, the update uses the raw losses.
      head_update: `"paper"` (default: Algorithm 2, each head descends its own
        unscaled gradient), `"paper_sequential"` (Algorithm 2's order: alpha and
        the shared gradient at the heads' SGD look-ahead) or `"official"` (the
        official loop: head t gets alpha_t times its gradient).
      solver: None (default `"wolfe"`, the exact min-norm point), `"frank_wolfe"`
        (the paper's Algorithm 2 solver) or `"official"` (the official routine).
      max_iterations, tolerance: the solver's cap and stopping tolerance (None:
        the solver's defaults, see `mtl_tf.solvers.min_norm_weights`).

    Logs `{task}_weight` = alpha_t (on the simplex; 0 for a task without
    labels in the batch).

    Raises:
      ValueError: an unknown normalization, head update or solver;
        max_iterations not an integer >= 1; tolerance not a finite number >= 0
        (None is the solver's default for both).

    Loss range: any real loss with `normalization="none"` (default) or `"l2"`: alpha comes from the
    Gramian alone. Non-negative with `"loss"` or `"loss+"`, which divide each gradient by |L_t| (the
    official code by L_t): a scale relative to the loss's distance from 0, its best value, which a
    negative loss does not measure. A loss of exactly 0 leaves its gradient unscaled there
    (`mtl_tf.solvers.normalize_gram`).

    Reference: Sener & Koltun, NeurIPS 2018, section 3.3 (eq. 7, Theorem 1).
    """

    loss_range = "any"

    def compute_update(self, problem):
        # The engine differentiates the encoder and the heads separately, so
        # the T per-task gradients dL_t/dZ come from one backward pass through
        # the heads, and the encoder is differentiated exactly once.
        z = problem.encode()
        if is_per_task(z, problem.task_names):
            # Every head update reads a Gramian of dL_t/dZ, which is diagonal here
            # (the look-ahead of `paper_sequential` would miss the refusal of `gram_matrix`).
            raise ValueError(problem._representation_gram_refusal())
        losses, representation_grads, heads = problem.representation_gradients(z)
        if self.head_update == "paper_sequential":
            losses, representation_grads = self.after_head_step(problem, z, heads)
        # Z is split across replicas by example, so the global Gram matrix is the
        # sum of the replicas' Gram matrices.
        gram = problem.all_reduce_sum(gram_matrix(representation_grads))
        alpha = self.task_weights(problem, gram, problem.global_losses(losses))
        flat = [keras.tree.flatten(g) for g in representation_grads]
        combined = keras.tree.pack_sequence_as(z, weighted_sum(flat, alpha))
        shared = problem.encoder_backward(combined)
        return Update(shared=shared, heads=self.head_gradients(heads, alpha), task_weights=alpha)
