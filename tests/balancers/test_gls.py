"""`gls` (Chennupati et al., CVPR Workshops 2019) against the geometric mean differenced in NumPy.

Reference: the objective is GLS(theta) = (prod_t L_t(theta))^(1/T), written out
on the tiny problem's float64 losses; the expected SGD step is theta - lr *
dGLS/dtheta by central differences (tests/balancers/numeric.py), so it is
independent of the method's chain rule. The logged weights are the paper's
dGLS/dL_t = GLS / (T L_t).
"""

import numpy as np

from tests.balancers import numeric, properties, tiny


def geometric_mean(setup):
    return lambda params: float(np.prod(tiny.losses(params, setup)) ** (1.0 / setup.num_tasks))


def reference(setup, steps):
    """(params, [weights per step]) after `steps` SGD steps on GLS."""
    params, weights = setup.params, []
    for _ in range(steps):
        losses = tiny.losses(params, setup)
        weights.append(np.prod(losses) ** (1.0 / len(losses)) / (len(losses) * losses))
        params = numeric.descend(geometric_mean(setup), params)
    return params, weights


def test_two_unbalanced_tasks_descend_the_geometric_mean_over_two_steps():
    setup = tiny.make_setup(num_tasks=2, seed=3, target_scales=[4.0, 0.25])
    model, logs = tiny.run(setup, "gls", epochs=2)
    params, weights = reference(setup, 2)
    tiny.assert_params_close(model, params)
    for step in range(2):
        np.testing.assert_allclose(tiny.logged_weights(logs[step], setup.tasks), weights[step], rtol=1e-5)
    # The small loss gets the large weight (the point of the method).
    assert weights[0][1] > 10 * weights[0][0]


def test_three_tasks_one_step():
    setup = tiny.make_setup(num_tasks=3, seed=4, target_scales=[1.0, 3.0, 0.5])
    model, logs = tiny.run(setup, "gls")
    params, weights = reference(setup, 1)
    tiny.assert_params_close(model, params)
    np.testing.assert_allclose(tiny.logged_weights(logs[0], setup.tasks), weights[0], rtol=1e-5)


def test_properties():
    setup = tiny.make_setup(num_tasks=3, seed=6, target_scales=[2.0, 1.0, 0.3])
    logs = properties.check_permutation_equivariant(setup, "gls", permutation=[1, 2, 0])
    assert np.all(properties.check_weights(logs, setup.tasks) > 0)
