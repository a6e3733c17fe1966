"""An independent reference for Euclidean projections onto the probability simplex, and their error bound."""

from __future__ import annotations

import numpy as np


def bisection_projection(v):
    """Float64 projection of float32 `v` onto the simplex by bisection on the threshold (independent of sorting).

    theta solves sum_i max(v_i - theta, 0) = 1 and lies in [max v - 1, max v];
    it is sought as t = theta - max v in [-1, 0], on d_i = v_i - max v (exact
    in float64 for the entries within 1 of the max, the only ones that count).
    """
    d = np.asarray(v, np.float64) - np.float64(np.max(v))
    low, high = -1.0, 0.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if np.sum(np.maximum(d - mid, 0.0)) > 1.0:
            low = mid
        else:
            high = mid
    return np.maximum(d - 0.5 * (low + high), 0.0)


def projection_tolerance(num, dtype=np.float32):
    """The error bound of the shifted sort-based projection of `num` entries computed in `dtype`.

    d_i = v_i - m is exact for the entries within 1 of m (Sterbenz) and
    rounded once (eps/2 |d_i|) otherwise; the cumulative sums of up to `num`
    such d_i (each in [-1, 0], partial sums within [-num, 0]) carry at most
    num^2 eps / 2, theta = (s - 1) / rho one more rounding, and max(d - theta, 0)
    one more: (num^2 + num + 3) eps in all, whatever the scale of v (eps of
    `dtype`). Unshifted sums carry num * eps * |m| instead.
    """
    return (num * num + num + 3) * float(np.finfo(dtype).eps)
