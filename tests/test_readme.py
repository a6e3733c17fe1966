"""The README's "Using the library" example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section):
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_using_the_library_example_runs():
    blocks = python_blocks("Using the library")
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    model, outputs = namespace["model"], namespace["outputs"]
    assert set(outputs) == {"left", "right"} and outputs["left"].shape == (8, 10)
    weights = namespace["history"].history["left_weight"]
    assert len(weights) == 2 and 0.0 <= weights[-1] <= 1.0
    assert model.balancer.method_name == "mgda_ub"
