"""Reference steps of Gramian gradient methods on the tiny problem, from explicit gradient vectors.

A method's reference (in its own test file) turns the explicit float64 task
gradient vectors [T, n] into a shared direction d from its paper's equations;
`step` then applies d to the shared parameters (pulled back through the linear
encoder by hand when the vectors are the representation gradients dL_t/dZ) and
moves every head by its own unweighted gradient, the step `fit` should take.
"""

import itertools

import numpy as np

from tests.balancers import tiny


def task_vectors(setup, gradient_at="shared_parameters"):
    """[T, n] float64: the flattened shared-parameter gradients (W then b), or the B x h dL_t/dZ."""
    grads = tiny.task_gradients(setup.params, setup)
    if gradient_at == "shared_parameters":
        return np.array([tiny.shared_vector(grads[t]) for t in setup.tasks])
    return np.array([grads[t]["z"].ravel() for t in setup.tasks])


def step(setup, direction, gradient_at="shared_parameters", head_scales=None):
    """Parameters after theta_sh -= lr d and theta^t -= lr s_t grad_t (s_t = 1 unless `head_scales`)."""
    params = setup.params
    grads = tiny.task_gradients(params, setup)
    if gradient_at == "shared_parameters":
        size = params["W"].size
        d_W = direction[:size].reshape(params["W"].shape)
        d_b = direction[size:] if params["b"] is not None else None
    else:
        d_z = direction.reshape(grads[setup.tasks[0]]["z"].shape)
        d_W, d_b = setup.x.T @ d_z, d_z.sum(axis=0)
    new = tiny.shared_step(params, d_W, d_b)
    for i, t in enumerate(setup.tasks):
        s = 1.0 if head_scales is None else head_scales[i]
        tiny.head_step(new, t, s * grads[t]["V"], None if grads[t]["c"] is None else s * grads[t]["c"])
    return new


def conflicting_setup(num_tasks, start=0, gradient_at="shared_parameters", strength=0.05):
    """The first tiny problem (by seed, from `start`) in which some pair of task gradients conflicts."""
    for seed in itertools.count(start):
        setup = tiny.make_setup(num_tasks=num_tasks, seed=seed)
        vectors = task_vectors(setup, gradient_at)
        gram = vectors @ vectors.T
        if np.min(gram) < -strength * np.max(np.diag(gram)):
            return setup


def random_gram(rng, num_tasks, dim=None, conflict=True):
    """A random Gramian of `num_tasks` gradients in R^dim (default 2 T), some of them conflicting."""
    dim = dim or 2 * num_tasks
    vectors = rng.normal(size=(num_tasks, dim)) * rng.uniform(0.2, 3.0, size=(num_tasks, 1))
    if conflict and num_tasks > 1:
        vectors[1] -= 1.5 * vectors[0]
    return vectors @ vectors.T, vectors
