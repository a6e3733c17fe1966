"""Aligned-MTL: the task gradients aligned to an orthogonal, equal-norm system.

Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023, section 4 (eq. 7-9, Algorithm 1).

With G the [T, n] matrix of task gradients, G = P Sigma Q^T (thin SVD), the
aligned gradients are G_hat = sigma P Q^T (the closest matrix to G with
orthogonal rows of equal norm, the Procrustes solution, scaled by sigma), and
the shared update is their sum, d = G_hat^T 1. From the Gramian
K = G G^T = P Sigma^2 P^T (eigendecomposition, `tf.linalg.eigh` on T x T):
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

import tensorflow as tf

from mtl_tf.balancers.base import validate_choice
from mtl_tf.balancers.gramian import GramianBalancer
from mtl_tf.balancers.registry import register

SCALE_MODES = ("min", "median", "rmse")
FLOAT32_EPS = 1.1920928955078125e-07


def aligned_weights(gram, scale_mode="min"):
    """c = B 1 of Aligned-MTL from the Gramian ([T, T]) -> [T] float64 (0 for a zero or non-finite Gramian)."""
    gram = tf.cast(gram, tf.float64)
    num = gram.shape[0]
    gram = 0.5 * (gram + tf.transpose(gram))
    finite = tf.reduce_all(tf.math.is_finite(gram))
    gram = tf.where(finite, gram, tf.zeros_like(gram))
    eigenvalues, vectors = tf.linalg.eigh(gram)
    tolerance = tf.reduce_max(eigenvalues) * num * FLOAT32_EPS
    kept = tf.logical_and(eigenvalues > tolerance, eigenvalues > 0)
    inf = tf.constant(float("inf"), tf.float64)
    if scale_mode == "min":
        scale = tf.reduce_min(tf.where(kept, eigenvalues, inf))
    elif scale_mode == "median":
        ranked = tf.sort(tf.where(kept, eigenvalues, inf))  # kept ones first, ascending
        count = tf.reduce_sum(tf.cast(kept, tf.int32))
        scale = tf.gather(ranked, tf.maximum(count - 1, 0) // 2)
    else:
        count = tf.maximum(tf.reduce_sum(tf.cast(kept, tf.float64)), 1.0)
        scale = tf.reduce_sum(tf.where(kept, eigenvalues, tf.zeros_like(eigenvalues))) / count
    safe = tf.where(kept, eigenvalues, tf.ones_like(eigenvalues))
    factors = tf.where(kept, tf.sqrt(tf.where(tf.math.is_finite(scale), scale, 0.0) / safe), tf.zeros_like(eigenvalues))
    balance = tf.matmul(vectors * factors[None, :], vectors, transpose_b=True)
    return tf.reduce_sum(balance, axis=1)


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
        both = tf.logical_and(mask[:, None], mask[None, :])
        gram = tf.where(both, gram, tf.zeros_like(gram))
        coefficients = tf.cast(aligned_weights(gram, self.scale_mode), tf.float32)
        return coefficients, coefficients, {}

    def get_config(self):
        return {**super().get_config(), "scale_mode": self.scale_mode}
