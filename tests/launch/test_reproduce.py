"""launch/reproduce.py: trains a table's runs once, then only re-renders; generic over PaperTable."""

import json

import numpy as np
import pytest

from mtl_tf import reports
from mtl_tf.reports import registry, runner
from tests.launch.conftest import TINY, run_script


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, fake_fashion_dir, isolated_env):
    root = tmp_path_factory.mktemp("table1")
    args = [
        "--table=lee_son_table1_multi_fashion",
        "--methods=ordinary,grid2",
        "--seeds=0",
        f"--root={root}",
        "--config_overrides=epochs=1",
        *[f"--config_overrides={k}={v!r}" for k, v in TINY.items()],
        f"--data_dir={fake_fashion_dir}",
        "--verbose=0",
    ]
    completed = run_script("reproduce.py", args, isolated_env)
    return {"root": root, "stdout": completed.stdout}


def test_reproduce_trains_every_run_and_prints_ours_beside_the_published(reproduced):
    root, stdout = reproduced["root"], reproduced["stdout"]
    ordinary = json.loads((root / "ordinary-seed0" / "results.json").read_text())
    grid = json.loads((root / "grid_w0.5_0.5-seed0" / "results.json").read_text())
    assert ordinary["method"] == "static" and ordinary["config"]["balancer"]["weights"] == [1.0, 1.0]
    assert grid["method"] == "static" and grid["config"]["balancer"]["weights"] == [0.5, 0.5]
    assert ordinary["config"]["epochs"] == 1 and ordinary["sizes"]["train"] == 256  # the overrides reached the runs
    row = next(line for line in stdout.splitlines() if line.startswith("| Ordinary"))
    ours = [f"{100 * ordinary['tasks'][t]['accuracy']:.2f}" for t in ("left", "right")]
    assert row.split("|")[2:6] == [" 81.97 ", " 81.25 ", f" {ours[0]} ", f" {ours[1]} "]
    grid_row = next(line for line in stdout.splitlines() if line.startswith("| Grid search"))
    assert f"{100 * grid['tasks']['left']['accuracy']:.2f}" in grid_row
    # Rows the paper has and we did not run keep their published numbers.
    assert any(line.startswith("| Proposed") and "82.41" in line and "—" in line for line in stdout.splitlines())
    table = (root / "lee_son_table1_multi_fashion.md").read_text()
    assert row in table
    # Not the paper's protocol: the table says which overrides made the runs (data_dir is not one).
    note = next(line for line in table.splitlines() if "NOT the paper protocol: config overrides" in line)
    assert "epochs=1" in note and "data.max_train_examples=256" in note and "data_dir" not in note
    assert note in stdout
    png = root / "lee_son_table1_multi_fashion_profile.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_reproduce_again_trains_nothing(reproduced):
    root = reproduced["root"]
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/results.json")}
    outcome = runner.run_table("lee_son_table1_multi_fashion", root=root, methods=["ordinary", "grid2"], seeds=[0],
                               log=lambda *_: None)
    assert outcome["trained"] == [] and sorted(outcome["skipped"]) == ["grid_w0.5_0.5-seed0", "ordinary-seed0"]
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/results.json")} == before


def test_the_runner_is_generic_over_registered_tables(reproduced):
    """A table registered elsewhere: its own runs, renderer and figures, nothing digits-specific."""
    seen = {}

    def render(results):
        seen["results"] = results
        return "| run | mean accuracy |\n" + "\n".join(
            f"| {r['run_key']} | {np.mean([m['accuracy'] for m in r['tasks'].values()]):.4f} |" for r in results
        )

    def figures(results, out_dir):
        path = out_dir / "tiny.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
        return [path]

    table = registry.PaperTable(
        name="tiny_test_table",
        description="a tiny table of the tests",
        default_methods=("ordinary",),
        runs=lambda methods, seeds: [registry.Run(f"{m}-seed{s}", "configs/multi_fashion.py:smoke", {"seed": s})
                                     for m in methods for s in seeds],
        render=render,
        figures=figures,
    )
    registry.register(table)
    try:
        outcome = runner.run_table("tiny_test_table", root=reproduced["root"], seeds=[0], log=lambda *_: None)
    finally:
        registry._TABLES.pop("tiny_test_table")
    assert outcome["trained"] == [] and outcome["skipped"] == ["ordinary-seed0"]
    assert [r["run_key"] for r in seen["results"]] == ["ordinary-seed0"]
    assert outcome["figures"] == [reproduced["root"] / "tiny.png"]
    assert "| ordinary-seed0 |" in outcome["markdown"]


def test_unknown_table_and_method_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown paper table 'nope'.*lee_son_table1_multi_fashion"):
        runner.run_table("nope", root=tmp_path)
    with pytest.raises(ValueError, match="unknown method 'mgda-ub'.*pareto_mtl_task1"):
        runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["mgda-ub"], dry_run=True)
    assert "sener_table3" in reports.available()


def test_parse_overrides():
    assert runner.parse_overrides(["epochs=1", "data.pareto_sizes=(1, 2, 3)", "balancer.normalization=loss+"]) == {
        "epochs": 1, "data.pareto_sizes": (1, 2, 3), "balancer.normalization": "loss+",
    }
    with pytest.raises(ValueError, match="field.path=value"):
        runner.parse_overrides(["epochs"])
