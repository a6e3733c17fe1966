"""`aligned_mtl` (Senushkin et al., CVPR 2023) against the aligned gradients built from an SVD of the vectors.

Reference: G = P Sigma Q^T (numpy's SVD of the [T, n] task gradient matrix,
singular values above the official rank tolerance), G_hat = sigma P Q^T with
sigma the smallest kept singular value ("min"), the lower median ("median") or
the root mean square ("rmse"); d = G_hat^T 1. The shared parameters step by d,
each head by its own gradient.
"""

import numpy as np
import pytest
import tensorflow as tf

from mtl_tf import balancers
from mtl_tf.balancers.aligned_mtl import aligned_weights
from tests.balancers import gramian_reference as ref
from tests.balancers import tiny


def aligned_direction(vectors, scale_mode="min"):
    P, s, Qt = np.linalg.svd(vectors, full_matrices=False)
    keep = s**2 > (s[0] ** 2) * len(vectors) * np.finfo(np.float32).eps
    P, s, Qt = P[:, keep], s[keep], Qt[keep]
    sigma = {"min": s.min(), "median": np.sort(s)[(len(s) - 1) // 2], "rmse": np.sqrt(np.mean(s**2))}[scale_mode]
    aligned = sigma * P @ Qt
    # The aligned rows are orthogonal with equal norms sigma.
    np.testing.assert_allclose(aligned @ aligned.T, sigma**2 * np.eye(len(s)) if len(s) == len(vectors)
                               else aligned @ aligned.T, atol=1e-9 * sigma**2)
    return aligned.sum(axis=0)


@pytest.mark.parametrize("num_tasks,gradient_at,scale_mode", [
    (2, "shared_parameters", "min"), (3, "shared_parameters", "median"), (3, "representation", "rmse"),
])
def test_step_sums_the_aligned_gradients(num_tasks, gradient_at, scale_mode):
    setup = ref.conflicting_setup(num_tasks, gradient_at=gradient_at)
    vectors = ref.task_vectors(setup, gradient_at)
    expected = aligned_direction(vectors, scale_mode)
    model, logs = tiny.run(setup, "aligned_mtl", {"gradient_at": gradient_at, "scale_mode": scale_mode})
    tiny.assert_params_close(model, ref.step(setup, expected, gradient_at))
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks) @ vectors, expected, rtol=1e-4, atol=1e-5)


def test_dependent_gradients_are_truncated_and_the_median_is_the_lower_one():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 7))
    vectors = np.vstack([base, base[0] + 2 * base[1]])  # rank 3 of 4
    for mode in ("min", "median", "rmse"):
        weights = aligned_weights(tf.constant(vectors @ vectors.T), mode).numpy()
        np.testing.assert_allclose(weights @ vectors, aligned_direction(vectors, mode), rtol=1e-7, atol=1e-9)
    vectors = rng.normal(size=(4, 9))  # rank 4: the median is the 2nd smallest singular value
    weights = aligned_weights(tf.constant(vectors @ vectors.T), "median").numpy()
    s = np.linalg.svd(vectors, compute_uv=False)
    P, _, Qt = np.linalg.svd(vectors, full_matrices=False)
    np.testing.assert_allclose(weights @ vectors, np.sort(s)[1] * (P @ Qt).sum(axis=0), rtol=1e-7)


def test_invalid_scale_mode():
    with pytest.raises(ValueError, match=r"aligned_mtl scale_mode='max' is not valid"):
        balancers.get("aligned_mtl", scale_mode="max")
