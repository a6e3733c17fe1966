"""`rlw` (Lin et al., TMLR 2022): random weights, softmax-normalised, reproducible under a seed.

References: (1) the step `fit` takes is one SGD step on sum_t lambda_t L_t with
the logged lambda (NumPy, tiny.weighted_step); (2) the logged lambda are the
softmax of standard-normal draws made from the documented per-task streams
(raw Philox words keyed by seed XOR crc32(task name) and the step, Box-Muller); (3) over many draws the weights have the
distribution the paper defines: for two tasks log(lambda_a / lambda_b) =
d_a - d_b, which is N(0, 2) for normal draws, triangular on [-1, 1] for
uniform draws, U(-1, 1) for Dirichlet(1) draws, and Bernoulli vectors are
uniform over {(1,0), (0,1), (1,1)}.
"""

import zlib

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from mtl_tf import balancers
from tests.balancers import properties, tiny


def normal_draw(seed, task, step):
    """The documented stream: two Philox words keyed by (seed XOR crc32(task), 64 step), Box-Muller."""
    key = zlib.crc32(task.encode()) & 0x7FFFFFFF
    bits = tf.random.stateless_uniform([2], seed=[seed ^ key, step * 64], minval=None, maxval=None,
                                       dtype=tf.uint32, alg="philox").numpy()
    first, second = ((bits >> 8).astype(np.float64) + 0.5) / 2**24
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_three_steps_descend_the_softmax_of_normal_draws(num_tasks):
    setup = tiny.make_setup(num_tasks=num_tasks, seed=20 + num_tasks, target_scales=[1.0, 2.0, 0.5][:num_tasks])
    model, logs = tiny.run(setup, "rlw", {"seed": 7}, epochs=3)
    params = setup.params
    for step in range(3):
        draws = np.array([normal_draw(7, t, step) for t in setup.tasks])
        weights = np.exp(draws) / np.exp(draws).sum()
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights, rtol=1e-5)
        params = tiny.weighted_step(params, setup, weights)
    tiny.assert_params_close(model, params)


def test_a_seed_repeats_its_run_and_another_seed_does_not():
    setup = tiny.make_setup(num_tasks=3, seed=30)
    first, logs = tiny.run(setup, "rlw", {"seed": 11}, epochs=2)
    first = tiny.model_params(first)
    again, again_logs = tiny.run(setup, "rlw", {"seed": 11}, epochs=2)
    # The same compiled steps on the same inputs and seeds: equal bit for bit.
    tiny.assert_params_close(again, first, atol=0, rtol=0)
    other, other_logs = tiny.run(setup, "rlw", {"seed": 12}, epochs=2)
    assert not np.allclose(tiny.logged_weights(other_logs[0], setup.tasks), tiny.logged_weights(logs[0], setup.tasks))


def draws(distribution, count=400):
    balancer = balancers.get("rlw", distribution=distribution, seed=5)
    balancer.build_for_tasks(("a", "b"))
    both = tf.constant([True, True])
    return np.array([balancer.sample_weights(both).numpy() for _ in range(count)], np.float64)


@pytest.mark.parametrize(
    "distribution,log_ratio_cdf",
    [
        ("normal", scipy.stats.norm(scale=np.sqrt(2.0)).cdf),
        ("uniform", scipy.stats.triang(c=0.5, loc=-1.0, scale=2.0).cdf),
        ("dirichlet", scipy.stats.uniform(loc=-1.0, scale=2.0).cdf),
    ],
)
def test_weights_have_the_papers_distribution(distribution, log_ratio_cdf):
    weights = draws(distribution)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    log_ratio = np.log(weights[:, 0] / weights[:, 1])
    assert scipy.stats.kstest(log_ratio, log_ratio_cdf).pvalue > 1e-3


def test_bernoulli_weights_are_uniform_over_the_non_zero_vectors():
    weights = draws("bernoulli", count=300)
    kinds, counts = np.unique(weights, axis=0, return_counts=True)
    assert {tuple(k) for k in kinds} == {(0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}
    assert scipy.stats.chisquare(counts).pvalue > 1e-3


def test_a_draw_does_not_depend_on_the_other_tasks():
    # Each task has its own stream, so leaving a task out renormalises the others' draws.
    balancer = balancers.get("rlw", seed=9)
    balancer.build_for_tasks(("a", "b", "c"))
    full = balancer.sample_weights(tf.constant([True, True, True])).numpy()
    balancer.step_counter.assign(0)
    partial = balancer.sample_weights(tf.constant([True, False, True])).numpy()
    assert partial[1] == 0.0
    np.testing.assert_allclose(partial[[0, 2]], full[[0, 2]] / full[[0, 2]].sum(), rtol=1e-6)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=31)
    logs = properties.check_permutation_equivariant(setup, "rlw", {"seed": 4}, permutation=[2, 0, 1])
    properties.check_weights(logs, setup.tasks, simplex_total=1.0)


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"distribution='gauss' is not valid; expected one of"):
        balancers.get("rlw", distribution="gauss")
    with pytest.raises(ValueError, match="rlw seed must be an integer or None"):
        balancers.get("rlw", seed=1.5)
