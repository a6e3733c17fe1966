"""Table `sener_table1`: runs, aggregation checked by hand, rendering and the Figure 2 radar charts.

Results are written as the trainer writes them (`results.json` with test
accuracies as fractions per attribute), so the report is checked without
training anything.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtl_tf import reports
from mtl_tf.data.celeba import ATTRIBUTES
from mtl_tf.reports import celeba as table
from mtl_tf.reports import runner


def _result(key, seed, accuracies: dict, wall_time_s=3600.0):
    return {
        "run_key": key,
        "method": key.rsplit("-seed", 1)[0],
        "seed": seed,
        "tasks": {a: {"accuracy": acc, "loss": 0.3} for a, acc in accuracies.items()},
        "wall_time_s": wall_time_s,
    }


def _accuracies(rng):
    return {a: float(rng.uniform(0.6, 0.99)) for a in ATTRIBUTES}


def test_registered_and_runs():
    assert "sener_table1" in reports.available()
    paper = reports.get("sener_table1")
    assert paper.default_methods == ("single_task", "uniform", "uncertainty", "gradnorm", "mgda_ub")
    runs = paper.runs(["uniform", "single_task"], [0, 1])
    assert len(runs) == 2 + 2 * 40
    assert len({r.key for r in runs}) == len(runs)
    assert runs[0].key == "uniform-seed0" and runs[0].config == "configs/celeba.py"
    assert runs[0].overrides == {"method": "uniform", "seed": 0}
    single = [r for r in runs if r.key == "single_task_Smiling-seed1"]
    assert single and single[0].overrides == {"method": "single_task", "single_task.task": "Smiling", "seed": 1}
    with pytest.raises(ValueError, match="grid search over 40 tasks is infeasible"):
        paper.runs(["grid"], [0])
    with pytest.raises(ValueError, match="unknown method 'sgd'"):
        paper.runs(["sgd"], [0])


def test_aggregation_by_hand(rng):
    uniform = [_accuracies(rng) for _ in range(2)]
    mgda_ub = _accuracies(rng)
    results = [
        _result("uniform-seed0", 0, uniform[0], wall_time_s=7200.0),
        _result("uniform-seed1", 1, uniform[1], wall_time_s=3600.0),
        _result("mgda_ub-seed0", 0, mgda_ub),
    ]
    single = {a: float(rng.uniform(0.7, 0.99)) for a in ATTRIBUTES[:30]}  # 10 attributes not trained yet
    results += [_result(f"single_task_{a}-seed0", 0, {a: acc, "Young": 0.0}) for a, acc in single.items()]
    rows = table.aggregate(results)

    per_seed = [np.mean([100 * (1 - u[a]) for a in ATTRIBUTES]) for u in uniform]
    mean, std, n = rows["uniform"]["average"]
    assert n == 2 and mean == pytest.approx(np.mean(per_seed)) and std == pytest.approx(np.std(per_seed, ddof=1))
    smiling = [100 * (1 - u["Smiling"]) for u in uniform]
    assert rows["uniform"]["attributes"]["Smiling"][0] == pytest.approx(np.mean(smiling))
    assert rows["uniform"]["hours"][0] == pytest.approx(1.5)
    assert rows["mgda_ub"]["average"] == (pytest.approx(np.mean([100 * (1 - v) for v in mgda_ub.values()])), 0.0, 1)
    # Single task: each run scores only its own attribute (its "Young" entry is ignored).
    assert rows["single_task"]["coverage"] == 30
    assert rows["single_task"]["average"][0] == pytest.approx(np.mean([100 * (1 - v) for v in single.values()]))
    assert rows["single_task"]["attributes"]["Male"][0] == pytest.approx(100 * (1 - single["Male"]))
    assert ATTRIBUTES[-1] == "Young" and rows["single_task"]["attributes"]["Young"] is None
    assert rows["single_task"]["hours"] is None

    easy, hard = table.easy_and_hard(rows)
    assert len(easy) == len(hard) == 20 and set(easy) | set(hard) == set(ATTRIBUTES)
    score = {a: np.mean([r["attributes"][a][0] for r in rows.values() if r["attributes"][a]]) for a in ATTRIBUTES}
    assert max(score[a] for a in easy) <= min(score[a] for a in hard)
    assert [score[a] for a in easy] == sorted(score[a] for a in easy)


def test_render_shows_published_and_ours(rng):
    accuracies = {a: 0.9 for a in ATTRIBUTES}
    accuracies["Smiling"] = 0.5  # average error (39 * 10 + 50) / 40 = 11.0
    results = [
        _result("mgda_ub-seed0", 0, accuracies, wall_time_s=1800.0),
        _result("mgda-seed0", 0, {a: 0.8 for a in ATTRIBUTES}, wall_time_s=18000.0),
    ]
    text = table.render(results)
    assert "| Ours (MGDA-UB) (`mgda_ub`) | 8.25 | 11.00 | 1 | 40/40 |" in text
    assert "| Uniform scaling (`uniform`) | 9.62 | — | 0 | — |" in text
    assert "| Single task (`single_task`) | 8.77 |" in text
    assert "| Ours w/o approx. (MGDA) (`mgda`) | 8.33 | 20.00 | 0.5 | 16.1 |" not in text
    assert "| Ours w/o approx. (MGDA) (`mgda`) | 8.33 | 20.00 | 429.9 | 5.000 |" in text
    assert "| Ours (MGDA-UB) (`mgda_ub`) | 8.25 | 11.00 | 16.1 | 0.500 |" in text
    assert "Training time ratio mgda / mgda_ub: ours 10.0x, published 26.7x." in text
    assert "| Smiling | 50.00 | 20.00 |" in text


def test_figures_are_two_radar_pngs(tmp_path, rng):
    results = [_result("uniform-seed0", 0, _accuracies(rng)), _result("mgda_ub-seed0", 0, _accuracies(rng))]
    paths = table.figures(results, tmp_path)
    assert [p.name for p in paths] == ["sener_table1_radar_easy.png", "sener_table1_radar_hard.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300
    assert table.figures([], tmp_path) == []


def test_reproduce_renders_finished_runs_without_training(tmp_path, rng):
    """The runner finds every run finished, trains nothing and writes the table and Figure 2."""
    for key, seed in (("uniform-seed0", 0), ("uniform-seed1", 1), ("mgda_ub-seed0", 0), ("mgda_ub-seed1", 1)):
        (tmp_path / key).mkdir()
        result = _result(key, seed, _accuracies(rng))
        del result["run_key"]
        (tmp_path / key / "results.json").write_text(json.dumps(result))
    logged = []
    outcome = runner.run_table(
        "sener_table1", root=tmp_path, methods=["uniform", "mgda_ub"], seeds=[0, 1], log=logged.append
    )
    assert outcome["trained"] == [] and len(outcome["skipped"]) == 4
    assert outcome["table_path"].read_text().startswith("# Sener & Koltun, Table 1")
    assert "| Uniform scaling (`uniform`) | 9.62 |" in outcome["markdown"]
    assert sorted(p.name for p in outcome["figures"]) == ["sener_table1_radar_easy.png", "sener_table1_radar_hard.png"]
