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

# Methods whose own code still records a tape (their extra passes need a stateless
# value-and-gradient operation the contract does not offer yet). The list only shrinks.
OWN_TAPES = {"gradnorm.py", "mgda.py", "pareto_mtl.py", "single_step.py"}


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
