"""The API reference (docs/, Sphinx autodoc + napoleon) builds with warnings as errors and covers the public API."""

import html
import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is in the test extra: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """One HTML build of docs/ as the README's command runs it: (completed process, output directory).

    With --keep-going Sphinx writes every page even when it reports warnings,
    so the coverage tests below read the pages whatever the warnings test says.
    """
    out = tmp_path_factory.mktemp("docs_html")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    return completed, out


@pytest.fixture(scope="module")
def built(build):
    completed, out = build
    if not (out / "index.html").exists():
        pytest.fail(f"sphinx-build wrote no pages:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}")
    return out


def test_build_has_no_warnings(build):
    """Warnings are errors: a docstring that is not valid Google style / reST fails here, naming it."""
    completed, _ = build
    sphinx_warnings = [line for line in completed.stderr.splitlines() if "WARNING:" in line and "absl" not in line]
    assert not sphinx_warnings, "\n".join(sphinx_warnings)
    assert completed.returncode == 0, f"sphinx-build failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"


def page_text(built, page):
    """The visible text of a built page (tags stripped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", (built / page).read_text()))


def documented_ids(built, page):
    return set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', (built / page).read_text()))


def test_public_entry_points_are_documented(built):
    model = documented_ids(built, "api/model.html")
    assert "mtl_tf.model.MultiTaskModel" in model
    assert {"mtl_tf.step_guard.NonFiniteLossError", "mtl_tf.step_guard.NonFiniteLossGuard"} <= model
    registry = {f"mtl_tf.balancers.registry.{name}" for name in ("register", "available", "option_names", "get")}
    assert registry <= documented_ids(built, "api/balancers.html")
    assert "mtl_tf.solvers.min_norm_weights" in documented_ids(built, "api/solvers.html")
    assert "mtl_tf.export.export_saved_model" in documented_ids(built, "api/export.html")
    assert "mtl_tf.data.idx.load_idx_dataset" in documented_ids(built, "api/data.html")
    # The class signature is the constructor's, not Keras' `__new__(*args, **kwargs)`.
    signature = re.search(r"class mtl_tf\.model\.MultiTaskModel(\(.*?\))\[source\]", page_text(built, "api/model.html"), re.S)
    assert signature, "no MultiTaskModel signature on api/model.html"
    names = re.findall(r"(?:\(|,\s*)(\*{0,2}\w+)\s*[:=,)]", signature.group(1))  # not the words inside annotations
    assert names[:6] == ["encoder", "heads", "losses", "metrics", "balancer", "balancer_options"], names


def test_every_registered_balancer_class_has_its_page_entry(built):
    import mtl_tf.balancers  # noqa: PLC0415 - the registry the docs must cover

    # `register` stamps `method_name` on the class; find each class in its module.
    classes = {}
    for info in pkgutil.iter_modules(mtl_tf.balancers.__path__):
        module = importlib.import_module(f"mtl_tf.balancers.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and "method_name" in vars(obj):
                classes[obj.method_name] = f"{obj.__module__}.{obj.__qualname__}"
    assert set(classes) == set(mtl_tf.balancers.available())
    ids = documented_ids(built, "api/balancers.html")
    for name, qualified in sorted(classes.items()):
        assert qualified in ids, f"balancing method {name!r} ({qualified}) is not in the docs"


@pytest.mark.parametrize("package", ["mtl_tf.balancers", "mtl_tf.solvers", "mtl_tf.nets", "mtl_tf.data"])
def test_every_public_module_of_the_package_has_a_page(built, package):
    """A module added to one of these packages without a docs entry fails here."""
    modules = set(re.findall(r'id="module-([\w.]+)"', "".join(p.read_text() for p in (built / "api").glob("*.html"))))
    spec = importlib.util.find_spec(package)
    public = {
        f"{package}.{info.name}" for info in pkgutil.iter_modules(spec.submodule_search_locations)
        if not info.name.startswith("_")
    }
    assert public, package
    assert public <= modules, f"undocumented modules: {sorted(public - modules)}"


def test_examples_page_shows_every_example(built):
    text = page_text(built, "examples.html")
    for path in sorted((REPO / "examples").glob("*.py")):
        first_line = path.read_text().split("\n", 1)[0].strip('"')
        assert first_line in text, f"{path.name} is not on the examples page"


# -- docs/conf.py's handling of plain-text docstrings -------------------------------------------


@pytest.fixture(scope="module")
def conf():
    spec = importlib.util.spec_from_file_location("mtl_tf_docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "line, expected",
    [
        ("||g_t|| and |x|", r"\|\|g_t\|\| and \|x\|"),
        ("a {'name': ..., **options} dict", r"a {'name': ..., \*\*options} dict"),
        ("f(*args) keeps `a|b` and ``**kw``", r"f(\*args) keeps `a|b` and ``**kw``"),
        ("*emphasis* and **strong** stay", "*emphasis* and **strong** stay"),
        ("* a bullet, 2 * 3", "* a bullet, 2 * 3"),
    ],
)
def test_plain_text_markers_are_escaped_outside_code(conf, line, expected):
    assert conf._escape_outside_code(line) == expected


def test_rest_check_tells_plain_text_layout_from_rest(conf):
    assert conf._rest_problems("Two lines of\na paragraph:\n  then an indented line\n")
    assert conf._rest_problems("Text with ``code``, *emphasis*, :func:`f` and\n\n* a list\n") == []
