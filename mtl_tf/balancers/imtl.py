"""IMTL: impartial multi-task learning (IMTL-G, IMTL-L and their hybrid).

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, section 3 (3.1 IMTL-L, 3.2 IMTL-G, 3.3 hybrid, Algorithm 1).

* IMTL-G (`variant="gradient"`): the shared update d = sum_t alpha_t g_t with
  sum_t alpha_t = 1 and equal projections of d onto every unit gradient
  u_t = g_t / ||g_t||. Closed form (eq. 9): with D the rows g_1 - g_t and U the
  rows u_1 - u_t (t = 2..T), alpha_{2:T} = g_1 U^T (D U^T)^{-1},
  alpha_1 = 1 - sum_{t>=2} alpha_t. Every inner product there is one of the
  Gramian K (<g_i, u_j> = K_ij / sqrt(K_jj)), so it is solved from K as the
  linear system the closed form comes from: sum_i alpha_i <g_i, u_t> = lambda for
  every task t, sum_t alpha_t = 1 (one (T+1) x (T+1) solve on the device; the
  same alpha without singling out task 1). alpha may be negative.
* IMTL-L (`variant="loss"`): each task has a learnable scale s_t (initialised
  at 0) and the objective is sum_t e^{s_t} L_t - s_t (eq. 3). The s_t are
  trainable variables of the balancer, stepped by the model's optimizer with
  the network (their gradient e^{s_t} L_t - 1 goes out in `Update.own`), which
  is Algorithm 1's plain gradient step on them.
* Hybrid (`variant="hybrid"`, default, the paper's full method, Algorithm 1):
  the gradients are those of the scaled losses e^{s_t} L_t (the Gramian
  becomes diag(e^s) K diag(e^s)), alpha comes from IMTL-G on them and the shared
  update is sum_t alpha_t e^{s_t} g_t; head t descends the gradient of its
  scaled loss e^{s_t} L_t; s_t steps by e^{s_t} L_t - 1.

Where the gradients are taken: Algorithm 1 computes g_t as the gradient of the
loss with respect to the shared feature z (the MGDA-UB shortcut, one encoder
backward pass) and then updates theta_sh with the gradient of sum_t alpha_t L_t.
So the default here is `gradient_at="representation"`, following the paper;
`gradient_at="shared_parameters"` takes the per-task gradients of all shared
parameters (T encoder backward passes), as LibMTL does without its `rep_grad`.
The two give different alpha: equal projections onto the dL_t/dZ are not
equal projections onto the parameter gradients.

Deviations from the paper and LibMTL (no official code is public):

* A task without labels in the global batch takes no part: alpha is solved on
  the labelled tasks only, its alpha and weight are 0 and its s_t does not move.
* When the system is singular (a labelled task with a zero gradient, or two
  tasks with parallel gradients, where the paper's inverse does not exist and
  LibMTL returns NaN or fails) alpha falls back to the uniform 1/T_labelled.
* The log-scales are bounded, s_t <= 10 (e^{s_t} <= 22,026; `mtl_tf.balancers.log_scales`):
  with a loss of exactly 0 the paper's s_t grows by the learning rate every
  step until e^{s_t} overflows (89 steps at SGD(1.0)). The bound changes
  nothing while a task's loss stays above e^-10 = 4.5e-5 (the paper's fixed
  point is e^{s_t} = 1/L_t); below it the task keeps the weight e^10.
* With `variant="loss"` (IMTL-L alone) the shared parameters and every head
  get the gradient of sum_t e^{s_t} L_t, one backward pass, no per-task
  gradients; `gradient_at` is then unused.

Logs `{task}_weight` = the coefficient of the raw gradient g_t in the shared
update (alpha_t e^{s_t} for the hybrid, alpha_t for IMTL-G, e^{s_t} for
IMTL-L), and `{task}_loss_scale` = e^{s_t} for the variants with scales.
"""

import numpy as np
from keras import ops

from mtl_tf.balancers.base import LossWeightingBalancer, Update, mask_weights, validate_choice
from mtl_tf.balancers.gramian import GramianBalancer, working_dtype
from mtl_tf.balancers.log_scales import LOG_SCALE_BOUND, LogScaleBound
from mtl_tf.balancers.registry import register

VARIANTS = ("hybrid", "gradient", "loss")


def imtl_g_weights(gram, mask):
    """alpha of IMTL-G from the Gramian: sum alpha = 1, equal projections of sum alpha_i g_i on every u_t.

    Args:
      gram: [T, T] Gramian (float32 or float64) of the gradients.
      mask: [T] bool, the tasks taking part (others get alpha = 0).

    Returns:
      [T] alpha (uniform over `mask` when the system is singular or the
      Gramian is not finite), computed and returned in float64 where the
      backend computes it (TensorFlow; JAX with `jax_enable_x64`), else in
      float32 (`working_dtype`).
    """
    work = working_dtype()
    tiny = 1e-300 if work == "float64" else 1e-30  # a floor of the largest pivot, within the dtype's range
    gram = ops.cast(gram, work)
    num = gram.shape[0]
    both = ops.logical_and(mask[:, None], mask[None, :])
    gram = ops.where(both, gram, ops.zeros_like(gram))
    labelled = ops.cast(mask, work)
    finite = ops.all(ops.isfinite(gram))
    gram = ops.where(finite, gram, ops.zeros_like(gram))
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    scale = ops.max(norms)
    # Scale-free: P_it = <g_i, u_t> / max_j ||g_j||.
    safe_norms = ops.where(norms > 0, norms, ops.ones_like(norms))
    projections = gram / safe_norms[None, :] / ops.where(scale > 0, scale, ops.ones_like(scale))
    # Row t (labelled): sum_i alpha_i P_it - lambda = 0; row t (unlabelled): alpha_t = 0;
    # last row: sum_i alpha_i = 1.
    identity = ops.convert_to_tensor(np.eye(num), work)
    rows = ops.where(mask[:, None], ops.transpose(projections), identity)
    top = ops.concatenate([rows, -labelled[:, None]], axis=1)
    bottom = ops.concatenate([labelled[None, :], ops.zeros([1, 1], work)], axis=1)
    system = ops.concatenate([top, bottom], axis=0)
    rhs = ops.convert_to_tensor(np.eye(num + 1)[num], work)  # (0, ..., 0, 1)
    # QR, not LU: TensorFlow's LU and solve raise on an exactly singular matrix; the diagonal of R tells it.
    q, r = ops.qr(system)
    diagonal = ops.diagonal(r)
    pivots = ops.abs(diagonal)
    regular = ops.min(pivots) > 1e-10 * ops.maximum(ops.max(pivots), tiny)
    regular = ops.logical_and(regular, ops.all(ops.logical_or(norms > 0, ops.logical_not(mask))))
    regular = ops.logical_and(regular, ops.logical_and(finite, scale > 0))
    # R with its zero pivots set to 1 (the solve stays finite; `regular` discards its answer then).
    on_diagonal = ops.convert_to_tensor(np.eye(num + 1, dtype=bool))
    safe_r = ops.where(on_diagonal, ops.where(pivots > 0, diagonal, ops.ones_like(pivots))[None, :], r)
    # Q^T rhs, as rhs^T Q (a vector-matrix product).
    solution = ops.solve_triangular(safe_r, ops.matmul(rhs, q), lower=False)
    solution = solution[:num]
    uniform = labelled / ops.maximum(ops.sum(labelled), 1.0)
    alpha = ops.where(regular, solution, uniform)
    alpha = ops.where(ops.all(ops.isfinite(alpha)), alpha, uniform)
    return alpha * labelled


@register("imtl")
class IMTL(GramianBalancer):
    """IMTL: gradient balance (IMTL-G), loss balance (IMTL-L), or both (the hybrid, default).

    Args:
      variant: `"hybrid"` (default, Algorithm 1), `"gradient"` (IMTL-G) or
        `"loss"` (IMTL-L).
      gradient_at: `"representation"` (default, as Algorithm 1: gradients of
        the shared feature z) or `"shared_parameters"` (gradients of all shared
        parameters, T encoder backward passes). Unused by `variant="loss"`.

    Logs `{task}_weight` = the coefficient of g_t in the shared update and, with
    loss scales, `{task}_loss_scale` = e^{s_t}.

    Raises:
      ValueError: an unknown `variant` or `gradient_at`.

    Loss range: non-negative with `variant="hybrid"` (default) and `"loss"`; any real loss with
    `"gradient"` (IMTL-G reads the Gramian only). The scale s_t descends e^{s_t} L_t - s_t, whose
    minimum s_t = -log L_t exists only for L_t > 0: for a negative loss the objective falls as s_t
    grows, so s_t climbs to the bound s_t <= 10 (module docstring) and the task's weight e^10
    dominates the update. A loss of exactly 0 has no minimum either: s_t grows by the learning rate
    every step up to that bound and the task keeps the weight e^10, finite.

    Reference: Liu et al., ICLR 2021, section 3, Algorithm 1.
    """

    loss_range = "non_negative"

    def __init__(self, variant="hybrid", gradient_at="representation", **kwargs):
        super().__init__(gradient_at=gradient_at, **kwargs)
        self.variant = validate_choice("imtl variant", variant, VARIANTS)

    def loss_range_needed(self):
        """Any real loss for IMTL-G alone; non-negative with the loss scales (see the class docstring)."""
        return "any" if self.variant == "gradient" else "non_negative"

    def build_for_tasks(self, task_names, losses=None):
        if self.variant != "gradient":
            self.log_scales = self.add_weight(
                name="log_scales", shape=(len(task_names),), initializer="zeros", trainable=True,
                constraint=LogScaleBound(upper=LOG_SCALE_BOUND),
            )
        super().build_for_tasks(task_names, losses)

    def _scales(self):
        return ops.exp(ops.cast(self.log_scales, "float32"))

    def _scale_logs(self, scales, mask):
        scales = mask_weights(scales, mask)
        return {f"{t}_loss_scale": scales[i] for i, t in enumerate(self.task_names)}

    # IMTL-L alone: the loss-weighting path (one backward pass).
    def objective(self, problem, losses):
        s = ops.cast(self.log_scales, "float32")
        labelled = ops.cast(problem.task_mask, "float32")
        weights = mask_weights(ops.exp(s), problem.task_mask)
        # Losses are replica-scaled; the -s_t term is shared out over the replicas too.
        return ops.sum(weights * losses) - ops.sum(labelled * s) / problem.num_replicas, weights

    def combination(self, gram, losses, mask):
        if self.variant == "hybrid":
            scales = self._scales()
            scaled_gram = gram * scales[:, None] * scales[None, :]
            alpha = ops.cast(imtl_g_weights(scaled_gram, mask), "float32")
            coefficients = alpha * scales
            return coefficients, coefficients, self._scale_logs(scales, mask)
        alpha = ops.cast(imtl_g_weights(gram, mask), "float32")
        return alpha, alpha, {}

    def compute_update(self, problem):
        if self.variant == "loss":
            update = LossWeightingBalancer.compute_update(self, problem)
            update.logs = self._scale_logs(self._scales(), problem.task_mask)
            return update
        update = super().compute_update(problem)
        if self.variant == "gradient":
            return update
        mask = problem.task_mask
        scales = mask_weights(self._scales(), mask)
        heads = {
            t: [None if g is None else g * ops.cast(scales[i], g.dtype) for g in update.heads[t]]
            for i, t in enumerate(self.task_names)
        }
        # d/ds_t of e^{s_t} L_t - s_t on this replica's share (the optimizer sums the replicas), loss-scaled.
        local = problem.losses
        own = mask_weights(scales * local - 1.0 / problem.num_replicas, mask) * problem.loss_scale
        return Update(shared=update.shared, heads=heads, task_weights=update.task_weights, own=[own],
                      logs=update.logs)

    def get_config(self):
        return {**super().get_config(), "variant": self.variant}
