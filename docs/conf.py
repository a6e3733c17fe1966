"""Sphinx configuration of mtl_tf's API reference.

Build it from the repository root (warnings are errors, as in tests/test_docs.py):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import ast
import inspect
import io
import os
import re
import sys
from pathlib import Path

# Document the checkout this file belongs to, not another installed copy.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import docutils.core  # noqa: E402
from docutils.parsers.rst import directives, roles  # noqa: E402
from sphinx.util import inspect as sphinx_inspect  # noqa: E402
from sphinx.util import logging as sphinx_logging  # noqa: E402

import mtl_tf  # noqa: E402

project = "mtl_tf"
author = "mtl_tf authors"
release = mtl_tf.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Google-style docstrings ("Args:", "Returns:", "Raises:", "Attributes:").
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# mtl_tf's "Returns:" sections are prose (the types are in the annotations), so
# they are rendered as written instead of being split into "type: description".
napoleon_custom_sections = ["Returns", "Yields"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# Signatures keep the annotations and defaults as written.
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Inherited docstrings are Keras' own (another markup); document what mtl_tf writes.
autodoc_inherit_docstrings = False

# Docstrings put code in single backticks: show it as code. Names are not
# cross-referenced (most are Keras or TensorFlow objects without an inventory
# here), so unresolved references are not reported.
default_role = "code"
nitpicky = False
# Annotations read "Layer", "Mapping[str, Any]", not "keras.src.layers.layer.Layer".
python_use_unqualified_type_names = True

exclude_patterns = ["_build"]
html_theme = "alabaster"


# -- Docstrings written as plain text ----------------------------------------------
#
# mtl_tf's docstrings are read in editors and `help()` first: norms and absolute
# values are written |x|, keyword packs **options, and module docstrings hold
# lists, tables and pseudo-code laid out as plain text. Two rules let the same
# text render in Sphinx:
#
# 1. Before napoleon, a `|`, or a `*` / `**` directly before a name without a
#    closing one on the line, outside backtick spans, is escaped (reST would read
#    a substitution reference or the start of emphasis).
# 2. A *module* docstring must be valid reST after that: lay out a list with a
#    blank line before and after it, a table as a simple table (``====`` rules)
#    and pseudo-code as a literal block (a paragraph ending in ``::``); all of
#    them read as plain text too. One that is not is reported as a WARNING
#    naming the module, its file and the docutils message (tests/test_docs.py
#    builds with -W, so the build fails), and is then shown verbatim (a literal
#    block) so that a build without -W still renders it as it reads in the
#    source. Class and function docstrings follow the Google style, and a
#    markup error there is reported by Sphinx itself.

_LOGGER = sphinx_logging.getLogger("mtl_tf.docs")
_CODE_SPAN = re.compile(r"(`+)[^`]+?\1")
_STARS = re.compile(r"(?<![\w*\\])(\*{1,2})(?=[A-Za-z_])")
# Messages of a stand-alone docutils parse that are not errors under Sphinx.
_SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type", 'No role entry for', 'No directive entry for')
_MODULE_SOURCES = {}
# docutils' own look-ups, before Sphinx patches them while it reads a page: the
# check below parses outside any Sphinx page (Sphinx's roles need one), and the
# messages about Sphinx's roles and directives are dropped.
_DOCUTILS_LOOKUPS = (roles.role, directives.directive)


def _escape_outside_code(line):
    pieces, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        pieces.append(_escape_text(line[last:span.start()]))
        pieces.append(span.group(0))
        last = span.end()
    pieces.append(_escape_text(line[last:]))
    return "".join(pieces)


def _escape_text(text):
    text = re.sub(r"(?<!\\)\|", r"\\|", text)

    def star(match):
        stars = match.group(1)
        closing = re.compile(r"\w" + re.escape(stars) + r"(?![\w*])")
        return match.group(0) if closing.search(text, match.end()) else "\\" + "\\".join(stars)

    return _STARS.sub(star, text)


def _escape_plain_text(app, what, name, obj, options, lines):
    if what == "module":
        _MODULE_SOURCES[name] = list(lines)
    lines[:] = [_escape_outside_code(line) for line in lines]


def _rest_problems(text):
    stream = io.StringIO()
    patched = (roles.role, directives.directive)
    roles.role, directives.directive = _DOCUTILS_LOOKUPS
    try:
        docutils.core.publish_doctree(
            text, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": stream}
        )
    finally:
        roles.role, directives.directive = patched
    return [line for line in stream.getvalue().splitlines() if "(WARNING/" in line or "(ERROR/" in line or "(SEVERE/" in line
            if not any(marker in line for marker in _SPHINX_ONLY)]


def _docstring_location(obj, line):
    """`file:line` of a module docstring's `line` (1-based), for the warning."""
    try:
        path = inspect.getsourcefile(obj)
        first = ast.parse(Path(path).read_text(encoding="utf-8")).body[0].lineno
    except (TypeError, OSError, SyntaxError, IndexError, AttributeError):
        return None
    return f"{path}:{first + line - 1}"


def _warn_if_not_rest(app, what, name, obj, options, lines):
    if what != "module" or not lines:
        return
    problems = _rest_problems("\n".join(lines))
    if not problems:
        return
    found = re.match(r"<string>:(\d+): \((\w+)/\d\) (.*)", problems[0])
    line, message = (int(found.group(1)), found.group(3)) if found else (1, problems[0])
    _LOGGER.warning(
        "module docstring of %s is not valid reStructuredText: %s (%d problem(s); see the rules in docs/conf.py)",
        name, message, len(problems), location=_docstring_location(obj, line), type="mtl_tf", subtype="docstring",
    )
    source = _MODULE_SOURCES.get(name, lines)
    lines[:] = ["::", ""] + ["    " + line if line else "" for line in source] + [""]


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Keras layers and models define `__new__(cls, *args, **kwargs)`, which autodoc
    would show as the class signature; show the constructor's parameters instead."""
    if what != "class" or signature != "(*args, **kwargs)" or "__init__" not in vars(obj):
        return None
    init = sphinx_inspect.signature(obj.__init__, bound_method=True)  # without self
    return sphinx_inspect.stringify_signature(init, show_return_annotation=False, unqualified_typehints=True), return_annotation


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
    # napoleon converts docstrings at the default priority, 500.
    app.connect("autodoc-process-docstring", _escape_plain_text, priority=400)
    app.connect("autodoc-process-docstring", _warn_if_not_rest, priority=600)

# Cross-references to mtl_tf's public objects must resolve, so a renamed class fails
# the build instead of leaving a guide page with a dead link. References to Keras,
# TensorFlow and Python objects (no inventory here) and to private names (base
# classes shown by `show-inheritance`, private modules) are not checked.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!mtl_tf\b).*"), (r"py:.*", r".*\._\w+.*")]
