"""The method-zoo table: its runs (every method, one equal budget), the rendering by hand, re-rendering finished runs."""

from __future__ import annotations

import json

from mtl_tf import balancers, reports
from mtl_tf.reports import runner, zoo


def _result(method, left, right, weights, best_epoch=7, wall=120.0, epochs=10):
    history = [{"epoch": e + 1, "left_weight": 0.0, "right_weight": 0.0} for e in range(epochs - 1)]
    history.append({"epoch": epochs, "left_weight": weights[0], "right_weight": weights[1]})
    return {
        "method": method, "seed": 0, "best_epoch": best_epoch, "wall_time_s": wall, "epochs_trained": epochs,
        "tasks": {"left": {"accuracy": left}, "right": {"accuracy": right}}, "history": history,
    }


def test_every_registered_method_but_static_at_the_same_budget():
    table = reports.get("method_zoo_multi_fashion")
    methods = set(table.default_methods)
    assert methods == (set(balancers.available()) - {"static"}) | {"ordinary"}
    runs = table.runs(list(table.default_methods), [0])
    assert len(runs) == len(methods)
    assert {r.config for r in runs} == {"configs/multi_fashion.py:pareto"}
    assert all(r.overrides["epochs"] == zoo.ZOO_EPOCHS == 10 and r.overrides["seed"] == 0 for r in runs)
    by_key = {r.key: r.overrides for r in runs}
    assert by_key["ordinary-seed0"]["method"] == "static" and by_key["ordinary-seed0"]["balancer.weights"] == (1.0, 1.0)
    assert by_key["pcgrad-seed0"]["method"] == "pcgrad"


def test_render_by_hand():
    results = [
        {**_result("pcgrad", 0.738, 0.721, (1.1, 1.2), best_epoch=10, wall=200.0), "run_key": "pcgrad-seed0"},
        {**_result("uniform", 0.70, 0.71, (0.5, 0.5), best_epoch=9, wall=130.0), "run_key": "uniform-seed0"},
    ]
    text = zoo.render(results).splitlines()
    assert text[0].startswith("| method | group | task 1 | task 2 | mean |")
    # The papers' methods come before the gradient methods, whatever the order of the results.
    assert text[2] == "| `uniform` | papers' methods | 70.00 | 71.00 | 70.50 | 9 | 1.00 | 13.0 | 1 |"
    assert text[3] == "| `pcgrad` | gradient | 73.80 | 72.10 | 72.95 | 10 | 2.30 | 20.0 | 1 |"


def test_a_method_without_logged_weights_has_no_sum():
    result = _result("uniform", 0.7, 0.7, (0.5, 0.5))
    del result["history"][-1]["right_weight"]
    assert zoo.weight_sum(result) is None
    assert zoo.weight_sum({"history": []}) is None


def test_reproduce_renders_finished_runs_as_the_protocol(tmp_path):
    for method, weights in (("uniform", (0.5, 0.5)), ("famo", (0.4, 0.6))):
        (tmp_path / f"{method}-seed0").mkdir()
        result = _result(method, 0.7, 0.72, weights)
        (tmp_path / f"{method}-seed0" / "results.json").write_text(json.dumps(result))
    outcome = runner.run_table("method_zoo_multi_fashion", root=tmp_path, methods=["uniform", "famo"], seeds=[0],
                               log=lambda *_: None)
    assert outcome["trained"] == [] and len(outcome["skipped"]) == 2
    assert "| `famo` | loss weighting | 70.00 | 72.00 | 71.00 | 7 | 1.00 | 12.0 | 1 |" in outcome["markdown"]
    assert outcome["table_path"].exists()
