"""The README's "Quickstart" example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section):
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_quickstart_example_runs():
    blocks = python_blocks("Quickstart")
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    model, outputs = namespace["model"], namespace["outputs"]
    assert set(outputs) == {"left", "right"} and outputs["left"].shape == (8, 10)
    weights = namespace["history"].history["left_weight"]
    assert len(weights) == 2 and 0.0 <= weights[-1] <= 1.0
    assert model.balancer.method_name == "mgda_ub"


def _section(title):
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_methods_table_has_a_row_for_every_registered_method_and_its_options():
    from mtl_tf import balancers

    rows = {}
    for line in _section("Methods").splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2).rsplit("|", 1)[-1]
    assert set(balancers.available()) <= set(rows), sorted(set(balancers.available()) - set(rows))
    for name in balancers.available():
        # Options the table names must be options the method takes.
        named = set(re.findall(r"`([a-z_]+)`", rows[name]))
        taken = set(balancers.option_names(name))
        assert not {o for o in named if "_" in o or o in taken} - taken - set(balancers.available()) - {
            "shared_parameters", "representation", "paper_sequential", "normal", "epoch", "adam", "none", "loss",
            "projection", "softmax", "min", "hybrid",
        }, (name, named - taken)
