"""`mtl_tf.nets` exports every public class and builder of its modules by name, as `keras.layers` does."""

import ast
import importlib
import pathlib

import mtl_tf.nets as nets

NETS_DIR = pathlib.Path(nets.__file__).parent
# Private modules (`_checks`: the option checks) are not part of the surface.
MODULES = sorted(p.stem for p in NETS_DIR.glob("*.py") if not p.stem.startswith("_"))

# Public names of a module that the package does not export, and why (the module doc says the same).
NOT_EXPORTED = {
    "mmoe": "the package attribute stays the module mtl_tf.nets.mmoe; its class MMoE is exported",
    "ple": "the package attribute stays the module mtl_tf.nets.ple; its class PLE is exported",
    "cross_stitch": "the package attribute stays the module mtl_tf.nets.cross_stitch; CrossStitch is exported",
    "INITIALIZERS": "two different tuples, in segnet and initializers: ambiguous at the package level",
}


def test_every_name_in_all_resolves():
    assert len(nets.__all__) == len(set(nets.__all__))
    for name in nets.__all__:
        assert getattr(nets, name) is not None, name


def test_every_public_name_of_every_module_is_exported_from_its_module():
    for stem in MODULES:
        module = importlib.import_module(f"mtl_tf.nets.{stem}")
        assert hasattr(module, "__all__"), f"mtl_tf.nets.{stem} has no __all__"
        for name in module.__all__:
            if name in NOT_EXPORTED:
                continue
            assert name in nets.__all__, f"mtl_tf.nets does not export {name} of mtl_tf.nets.{stem}"
            assert getattr(nets, name) is getattr(module, name), name


def test_modules_stay_reachable_and_the_architectures_import_by_name():
    from mtl_tf.nets import PLE, CrossStitch, MMoE, cgc, mmoe, ple  # noqa: F401

    assert mmoe.MMoE is MMoE and ple.PLE is PLE and cgc is ple.cgc
    for stem in MODULES:
        assert getattr(nets, stem).__name__ == f"mtl_tf.nets.{stem}"


def _is_backend_seam(node):
    """`from mtl_tf.backend import ops` / `from mtl_tf.backend.ops import ...`: the one allowed import.

    `mtl_tf.backend` imports nothing else of mtl_tf (its docstring says so), so the nets stay at the
    bottom of the house."""
    if node.module == "mtl_tf.backend.ops":
        return True
    return node.module == "mtl_tf.backend" and [alias.name for alias in node.names] == ["ops"]


def test_no_net_module_imports_from_the_rest_of_mtl_tf():
    # The one exception: the backend seam `mtl_tf.backend.ops` (imports only Keras, NumPy and, lazily, TensorFlow).
    for path in NETS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtl_tf"):
                if _is_backend_seam(node):
                    continue
                assert node.module.startswith("mtl_tf.nets"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("mtl_tf") or alias.name.startswith("mtl_tf.nets"), path.name
