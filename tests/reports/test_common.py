"""mtl_tf.reports.common: runs that are not the paper's protocol are named; profile markers never hide a method."""

import json

from mtl_tf.reports import common, runner


def test_methods_at_the_same_point_get_concentric_markers_of_different_shapes():
    points = {"uniform": (80.0, 79.0), "mgda_ub": (80.0, 79.0), "gradnorm": (80.05, 79.0), "split_only": (70.0, 75.0)}
    styles = common.marker_styles(points)
    assert len({s["marker"] for s in styles.values()}) == 4  # a shape per method
    assert styles["split_only"]["ms"] == 7.0  # alone: the plain size
    # Three at (nearly) one point: the first largest and lowest, each next smaller and on top.
    group = [styles[label] for label in ("uniform", "mgda_ub", "gradnorm")]
    assert [s["ms"] for s in group] == [14.0, 10.5, 7.0]
    assert [s["zorder"] for s in group] == [3, 4, 5]
    assert common.marker_styles({"a": (1, 1)}, markers={"a": "*"})["a"] == {"marker": "*", "ms": 7.0, "zorder": 3}
    assert common.marker_styles({}) == {}


def test_protocol_differences_ignore_the_data_location_and_fields_one_side_lacks():
    protocol = {"epochs": 100, "data": {"data_dir": None, "sizes": [1, 2]}, "optimizer": {"lr": 0.1}}
    config = {"epochs": 1, "data": {"data_dir": "/x", "sizes": [1, 3], "new_field": 4}, "optimizer": {"lr": 0.1}}
    assert common.protocol_differences(config, protocol) == {"epochs": 1, "data.sizes": [1, 3]}
    results = [{"protocol_overrides": {"epochs": 1, "data.sizes": [1, 3]}}, {"protocol_overrides": {"epochs": 1}}]
    assert common.overrides_note(results) == \
        "NOT the paper protocol: config overrides epochs=1, data.sizes=(1, 3) (1 of 2 runs)"
    assert common.overrides_note([{"protocol_overrides": {}}, {}]) == ""


def _capture_figures(monkeypatch):
    """The title texts and the (marker, size) of every point plotted in each figure a report saves."""
    import matplotlib.figure

    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, **kwargs):
        titles = [ax.get_title() for ax in fig.axes] + ([fig._suptitle.get_text()] if fig._suptitle else [])
        markers = [(c.get_label(), c.lines[0].get_marker(), c.lines[0].get_markersize())
                   for ax in fig.axes for c in ax.containers if c.lines and c.lines[0] is not None]  # errorbar points
        drawn.append({"titles": titles, "markers": markers})
        return real_savefig(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return drawn


def test_a_table_of_runs_with_overrides_says_so_in_its_markdown_and_figure_title(tmp_path, monkeypatch):
    drawn = _capture_figures(monkeypatch)
    runs = {run.key: run for run in runner.registry.get("lee_son_table1_multi_fashion").runs(["uniform", "mgda_ub"], [0])}
    for key, run in runs.items():
        config = runner.protocol_config(run)
        config["data"]["data_dir"] = "/somewhere"  # where the data is: not a protocol change
        if key == "uniform-seed0":
            config["epochs"] = 1
        result = {"method": run.overrides["method"], "seed": 0, "config": config, "monitor": {"value": 0.5},
                  "tasks": {"left": {"accuracy": 0.7}, "right": {"accuracy": 0.6}}}
        (tmp_path / key).mkdir()
        (tmp_path / key / "results.json").write_text(json.dumps(result))
    outcome = runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["uniform", "mgda_ub"], seeds=[0],
                               log=lambda *_: None)
    note = "NOT the paper protocol: config overrides epochs=1 (1 of 2 runs)"
    assert outcome["note"] == note
    assert outcome["markdown"].startswith(f"**{note}**")
    assert f"**{note}**" in outcome["table_path"].read_text()
    assert [r["protocol_overrides"] for r in outcome["results"]] == [{"epochs": 1}, {}]
    assert any(note in title.replace("\n", " ") for title in drawn[-1]["titles"])
    # Both methods have the same accuracies: two markers of different shapes and sizes at one point.
    ours = {label: (marker, size) for label, marker, size in drawn[-1]["markers"] if "(ours" in label}
    assert len(ours) == 2 and len({m for m, _ in ours.values()}) == 2 and len({s for _, s in ours.values()}) == 2

    # Both runs as the protocol says: no note.
    config = json.loads((tmp_path / "uniform-seed0" / "results.json").read_text())
    config["config"]["epochs"] = runner.protocol_config(runs["uniform-seed0"])["epochs"]
    (tmp_path / "uniform-seed0" / "results.json").write_text(json.dumps(config))
    outcome = runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["uniform", "mgda_ub"], seeds=[0],
                               log=lambda *_: None)
    assert outcome["note"] == "" and outcome["markdown"].startswith("| Method")


def test_an_unknown_override_field_is_refused_before_any_run_trains(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(runner, "_train_inprocess", lambda *a, **k: pytest.fail("a run was trained"))
    with pytest.raises(runner.OverrideError, match=r"--config_overrides \['data.max_train_exampels'\]: no such field in "
                                                   r"configs/multi_fashion.py:pareto"):
        runner.run_table("lee_son_table1_multi_fashion", root=tmp_path, methods=["uniform"], seeds=[0],
                         overrides={"epochs": 1, "data.max_train_exampels": 5}, log=lambda *_: None)
