"""Central finite differences of a scalar function of the tiny problem's parameters (float64).

An independent check of methods whose update is the gradient of one nonlinear
objective of the task losses (GLS, STCH): the expected step is computed from
the paper's objective by differencing it, not from a derivation of its
gradient, so a wrong chain rule in the method cannot hide in the reference.
"""

from __future__ import annotations

import copy

import numpy as np

from tests.balancers import tiny


def _entries(params):
    """(path, array) for every parameter array of the tiny layout, in a fixed order."""
    out = [(("W",), params["W"])]
    if params["b"] is not None:
        out.append((("b",), params["b"]))
    for t in params["V"]:
        out.append((("V", t), params["V"][t]))
        if params["c"][t] is not None:
            out.append((("c", t), params["c"][t]))
    return out


def _get(params, path):
    return params[path[0]] if len(path) == 1 else params[path[0]][path[1]]


def gradient(objective, params, step=1e-6):
    """d objective(params) / d params, same layout as `params` (central differences)."""
    grads = copy.deepcopy(params)
    for path, _ in _entries(params):
        target = _get(grads, path)
        for index in np.ndindex(target.shape):
            shifted = copy.deepcopy(params)
            _get(shifted, path)[index] += step
            up = objective(shifted)
            _get(shifted, path)[index] -= 2 * step
            down = objective(shifted)
            target[index] = (up - down) / (2 * step)
    return grads


def descend(objective, params, lr=tiny.LEARNING_RATE):
    """params - lr * d objective / d params (a copy)."""
    grads = gradient(objective, params)
    new = copy.deepcopy(params)
    for path, value in _entries(params):
        holder = new if len(path) == 1 else new[path[0]]
        holder[path[-1]] = value - lr * _get(grads, path)
    return new
