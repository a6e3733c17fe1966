"""The TensorFlow engine implements the whole balancer contract (`MultiTaskProblem`).

The engine's behaviour is tested through every method's tests and the property
suite; here, that the contract is complete and that the backend stays behind it.
"""

import ast
import inspect
from pathlib import Path

from mtl_tf.balancers import base
from mtl_tf.engines.tensorflow import TensorFlowProblem

BALANCERS = Path(base.__file__).parent

# Methods whose own code still records a tape: none since the contract offers
# `value_and_gradients` (stateless extra passes) and `encoder_backward(variables=...)`.
OWN_TAPES = set()


def contract_members():
    return [name for name, member in vars(base.MultiTaskProblem).items()
            if not name.startswith("__") and (callable(member) or isinstance(member, property))]


def test_every_operation_of_the_contract_is_implemented():
    missing = [name for name in contract_members()
               if name not in vars(TensorFlowProblem) and name not in ("release_encoder", "_representation_gram_refusal")]
    assert not missing, missing


def test_the_contract_documents_every_operation():
    doc = inspect.getdoc(base.MultiTaskProblem)
    for name in contract_members():
        if not name.startswith("_"):
            assert f"`{name}" in doc, f"MultiTaskProblem's docstring does not mention {name}"


def test_only_the_listed_methods_record_their_own_tapes():
    recording = set()
    for path in BALANCERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "GradientTape":
                recording.add(path.name)
    assert recording == OWN_TAPES, (
        f"tapes outside the engine: new {sorted(recording - OWN_TAPES)}, gone {sorted(OWN_TAPES - recording)} "
        "(remove those from OWN_TAPES)"
    )


# Where TensorFlow may be imported (issue 24): the TensorFlow engine; the data loaders,
# export, the launch/training layer and timing; the model's TensorFlow training step
# and what it alone uses (`model.py`, `step_guard.py`, `step_logs.py`, `input_specs.py`:
# the JAX engine moves them behind the seam); and `mtl_tf/backend`, which imports it
# lazily inside a function, on TensorFlow only. Nothing else: balancers, solvers,
# nets, losses and metrics are `keras.ops`.
TENSORFLOW_ALLOWED = (
    "engines/tensorflow.py", "data/", "export.py", "training/", "timing/",
    "model.py", "step_guard.py", "step_logs.py", "input_specs.py", "backend/",
)


def imports_tensorflow(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorflow" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tensorflow":
            return True
    return False


def test_tensorflow_is_imported_only_by_the_engine_and_the_outer_layers():
    package = BALANCERS.parent
    offenders = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if imports_tensorflow(path) and not str(path.relative_to(package)).startswith(TENSORFLOW_ALLOWED)
    )
    assert not offenders, f"TensorFlow imported outside the engine and the outer layers: {offenders}"


def test_the_backend_package_imports_tensorflow_only_inside_functions():
    for path in (BALANCERS.parent / "backend").glob("*.py"):
        top_level = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not any(imports_tensorflow_node(node) for node in top_level), path.name


def imports_tensorflow_node(node):
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "tensorflow" for a in node.names)
    return (node.module or "").split(".")[0] == "tensorflow"
