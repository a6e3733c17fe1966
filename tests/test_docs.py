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


# What a quiet (-q) build may print on stderr besides Sphinx's messages: TensorFlow's C++ start-up
# log lines (absl's "I0000 00:00:... port.cc:153] oneDNN custom operations are on ...", "Could not
# find cuda drivers ...") and absl's note before its first one. Anything else -- a warning, an
# error, a notice from docs/conf.py -- fails test_build_is_silent.
BENIGN_STDERR = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\] "),
)


def test_build_has_no_warnings(build):
    """Warnings are errors: a docstring that is not valid Google style / reST fails here, naming it.

    A module docstring that is not valid reST is a warning too (docs/conf.py, `_warn_if_not_rest`),
    not a silent verbatim fallback.
    """
    completed, _ = build
    sphinx_warnings = [line for line in completed.stderr.splitlines()
                       if ("WARNING:" in line or "ERROR:" in line or "CRITICAL:" in line) and "absl" not in line]
    assert not sphinx_warnings, "\n".join(sphinx_warnings)
    assert completed.returncode == 0, f"sphinx-build failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"


def test_build_is_silent(build):
    """With -q Sphinx prints only problems: every stderr line but TensorFlow's start-up log fails,
    and so does any notice on stdout (e.g. a docstring "shown verbatim")."""
    completed, _ = build
    noise = [line for line in completed.stderr.splitlines()
             if line.strip() and not any(pattern.match(line) for pattern in BENIGN_STDERR)]
    assert not noise, "sphinx-build -q printed:\n" + "\n".join(noise)
    assert "verbatim" not in completed.stdout + completed.stderr
    assert not completed.stdout.strip(), f"sphinx-build -q printed on stdout:\n{completed.stdout[-3000:]}"


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


def toctree_entries():
    """The pages named in docs/index.rst's toctrees."""
    entries, inside = [], False
    for line in (DOCS / "index.rst").read_text().splitlines():
        if line.startswith(".. toctree::"):
            inside = True
        elif inside and line and not line[0].isspace():
            inside = False
        elif inside and line.strip() and not line.strip().startswith(":"):
            entries.append(line.strip())
    return entries


@pytest.mark.parametrize("page", sorted(p.stem for p in (DOCS / "guide").glob("*.rst")))
def test_guide_page_is_in_the_toctree_and_written(page):
    """Every page of docs/guide/ is reachable from the index and is not a stub."""
    assert f"guide/{page}" in toctree_entries(), f"docs/guide/{page}.rst is not in docs/index.rst's toctree"
    text = (DOCS / "guide" / f"{page}.rst").read_text()
    assert "(being written)" not in text, f"docs/guide/{page}.rst is still a stub"


def test_every_toctree_entry_is_a_page():
    missing = [entry for entry in toctree_entries() if not (DOCS / f"{entry}.rst").exists()]
    assert not missing, missing


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


def test_every_documented_module_docstring_is_valid_rest(conf):
    """The check `_warn_if_not_rest` makes in the build, on every module docs/api/*.rst shows, without the
    build: a module docstring with a list that has no blank line before it, or a table laid out by
    indentation only, fails here with every such module's name and docutils' message."""
    from sphinx.ext.napoleon import Config, GoogleDocstring  # noqa: PLC0415
    from sphinx.util.docstrings import prepare_docstring  # noqa: PLC0415

    config = Config(napoleon_google_docstring=True, napoleon_numpy_docstring=False, napoleon_use_ivar=True,
                    napoleon_custom_sections=["Returns", "Yields"])
    problems = {}
    names = sorted({name for page in (DOCS / "api").glob("*.rst")
                    for name in re.findall(r"^\.\. automodule:: ([\w.]+)", page.read_text(), flags=re.M)})
    assert "mtl_tf.model" in names and "mtl_tf.balancers.famo" in names, names
    for name in names:
        module = importlib.import_module(name)
        if not module.__doc__:
            continue
        lines = [conf._escape_outside_code(line) for line in prepare_docstring(module.__doc__)]
        lines = GoogleDocstring(lines, config, what="module", name=name).lines()
        found = conf._rest_problems("\n".join(lines))
        if found:
            problems[name] = found[0]
    assert not problems, "\n".join(f"{name}: {problem}" for name, problem in sorted(problems.items()))


def test_a_module_docstring_that_is_not_rest_is_a_warning(conf, monkeypatch):
    """No silent verbatim fallback: the build reports the module, then shows the text verbatim."""
    messages = []
    monkeypatch.setattr(conf._LOGGER, "warning", lambda message, *args, **kwargs: messages.append(message % args))
    lines = ["Options:", "  a   one", "      two", "Done."]
    conf._warn_if_not_rest(None, "module", "mtl_tf.example", None, {}, lines)
    assert len(messages) == 1 and "mtl_tf.example" in messages[0] and "not valid reStructuredText" in messages[0]
    assert lines[0] == "::" and "  a   one" in "\n".join(lines)
    messages.clear()
    conf._warn_if_not_rest(None, "class", "mtl_tf.Example", None, {}, ["Not checked:", "  here"])
    assert not messages
