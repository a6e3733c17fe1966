"""Aligned-MTL: the task gradients aligned to an orthogonal, equal-norm system.

Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, section 4 (eq. 7-9, Algorithm 1).

With G the [T, n] matrix of task gradients, G = P Sigma Q^T (thin SVD), the
aligned gradients are G_hat = sigma P Q^T (the closest matrix to G with
orthogonal rows of equal norm, the Procrustes solution, scaled by sigma), and
the shared update is their sum, d = G_hat^T 1. From the Gramian
K = G G^T = P Sigma^2 P^T (eigendecomposition, `keras.ops.eigh` on T x T):
d = sum_t c_t g_t with c = B 1, B = sigma P Sigma^{-1} P^T, so the update is in
the Gramian form (`mtl_tf.balancers.gramian`).

Options:
  scale_mode: the official code's choice of sigma: `"min"` (default, the
    paper: the smallest singular value), `"median"` (the median singular
    value; the lower of the two middle ones for an even rank, as
    `torch.median`), `"rmse"` (sqrt of the mean eigenvalue, the root mean
    square singular value).

As the official code (github.com/SamsungLabs/MTL, `ProcrustesSolver`), the
eigenvalues below max(lambda) * T * eps (eps = float32 machine epsilon,
torch's default) are dropped with their eigenvectors (rank truncation), so
linearly dependent gradients and tasks without labels (whose rows of K are 0)
take no part; sigma is taken over the kept ones.

Deviations from the official code and LibMTL: none in the arithmetic (it is
done in float64 from the global-batch Gramian, on the device); the official
`scale_decoder_grad` option (heads scaled by the weights) is not offered:
heads descend their own unweighted gradients, the official default.
`gradient_at="representation"` is the official `amtlub` variant (Aligned-MTL-UB,
on the gradients of the shared representation).

Logs `{task}_weight` = c_t, the coefficient of g_t in d.
"""

from keras import ops

from mtl_tf.backend import solver_ops
from mtl_tf.balancers.base import validate_choice
from mtl_tf.balancers.gramian import GramianBalancer, working_dtype
from mtl_tf.balancers.registry import register

SCALE_MODES = ("min", "median", "rmse")
FLOAT32_EPS = 1.1920928955078125e-07


def aligned_weights(gram, scale_mode="min"):
    """c = B 1 of Aligned-MTL from the Gramian ([T, T]) -> [T] (0 for a zero or non-finite Gramian).

    Computed in float64 where the backend computes it (TensorFlow; JAX with
    `jax_enable_x64`), else float32 (`working_dtype`); returned in that dtype.
    """
    gram = ops.cast(gram, working_dtype())
    num = gram.shape[0]
    gram = 0.5 * (gram + ops.transpose(gram))
    finite = ops.all(ops.isfinite(gram))
    gram = ops.where(finite, gram, ops.zeros_like(gram))
    eigenvalues, vectors = ops.eigh(gram)
    tolerance = ops.max(eigenvalues) * num * FLOAT32_EPS
    kept = ops.logical_and(eigenvalues > tolerance, eigenvalues > 0)
    inf = float("inf")
    if scale_mode == "min":
        scale = ops.min(ops.where(kept, eigenvalues, inf))
    elif scale_mode == "median":
        ranked = ops.sort(ops.where(kept, eigenvalues, inf))  # kept ones first, ascending
        count = ops.sum(ops.cast(kept, "int32"))
        scale = solver_ops.gather(ranked, ops.maximum(count - 1, 0) // 2)
    else:
        count = ops.maximum(ops.sum(ops.cast(kept, eigenvalues.dtype)), 1.0)
        scale = ops.sum(ops.where(kept, eigenvalues, ops.zeros_like(eigenvalues))) / count
    safe = ops.where(kept, eigenvalues, ops.ones_like(eigenvalues))
    factors = ops.where(kept, ops.sqrt(ops.where(ops.isfinite(scale), scale, 0.0) / safe), ops.zeros_like(eigenvalues))
    balance = ops.matmul(vectors * factors[None, :], ops.transpose(vectors))
    return ops.sum(balance, axis=1)


@register("aligned_mtl")
class AlignedMTL(GramianBalancer):
    """Aligned-MTL: the sum of the task gradients aligned to an orthogonal system of equal norms.

    Args:
      scale_mode: `"min"` (default, the paper), `"median"` or `"rmse"`.
      gradient_at: `"shared_parameters"` (default, Aligned-MTL) or
        `"representation"` (Aligned-MTL-UB).

    Logs `{task}_weight` = the coefficient of g_t in the update.

    Raises:
      ValueError: an unknown `scale_mode` or `gradient_at`.

    Loss range: any real loss. The coefficients come from the Gramian of the task gradients; the
    loss values are never read, so a negative loss or a loss of exactly 0 is like any other.

    Reference: Senushkin et al., CVPR 2023, Algorithm 1.
    """

    loss_range = "any"

    def __init__(self, scale_mode="min", **kwargs):
        super().__init__(**kwargs)
        self.scale_mode = validate_choice("aligned_mtl scale_mode", scale_mode, SCALE_MODES)

    def combination(self, gram, losses, mask):
        both = ops.logical_and(mask[:, None], mask[None, :])
        gram = ops.where(both, gram, ops.zeros_like(gram))
        coefficients = ops.cast(aligned_weights(gram, self.scale_mode), "float32")
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "scale_mode": self.scale_mode}
