"""The user guide and the README hold what a newcomer can rely on: code that runs, links that resolve.

* Every ``.. code-block:: python`` in docs/guide/*.rst and docs/*.rst runs on its own, in a fresh
  interpreter (single-threaded TensorFlow, no downloads, an empty working directory), within a
  timeout. ``literalinclude`` blocks show examples/*.py, which tests/test_examples.py runs; here
  only their paths are checked.
* Every link resolves. This machine has no internet, so an external link is not fetched: it must
  be a well-formed http(s) URL on one of the hosts in ``ALLOWED_HOSTS`` (paper, code and package
  sites). A relative link must name a file or directory of the repository, and its ``#anchor``
  a heading of the target markdown file (GitHub's slug of it); an image must exist. In the
  guide, ``:doc:`` targets, ``image`` / ``figure`` / ``literalinclude`` paths and external
  `` `text <url>`_ `` links are checked the same way (Sphinx -W fails on a missing ``:doc:``
  too, in tests/test_docs.py, but only after a minute's build).
* The README is short and speaks to users: at most ``README_MAX_LINES`` lines, no commit hashes,
  issue numbers or version history.

No Sphinx build here: tests/test_docs.py builds the docs once.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GUIDE = DOCS / "guide"
README = REPO / "README.md"

README_MAX_LINES = 260
BLOCK_TIMEOUT_S = 180  # one block: interpreter start, TensorFlow import (~5-10 s) and a tiny fit
ALLOWED_HOSTS = {
    "arxiv.org", "github.com", "openreview.net", "proceedings.neurips.cc", "keras.io", "www.tensorflow.org",
    "doi.org", "papers.nips.cc", "openaccess.thecvf.com", "proceedings.mlr.press", "pypi.org",
}
PYTHON_LANGUAGES = {"python", "python3", "py"}


def rst_pages():
    """The pages whose python blocks run and whose includes must exist: the guide and docs/*.rst."""
    return sorted(GUIDE.glob("*.rst")) + sorted(DOCS.glob("*.rst"))


def page_id(path):
    return path.relative_to(DOCS).as_posix()


# -- reST parsing (just enough: directives, their options and their indented content) -------------------

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\.[ \t]+(?P<name>[\w:-]+)::[ \t]*(?P<argument>.*)$")


def directives(text, names):
    """(name, argument, content, line number) of every directive in `names`, nested ones included."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match or match.group("name") not in names:
            continue
        indent = len(match.group("indent").expandtabs())
        body = []
        for following in lines[number + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        # Options (":caption: ...") come first, then a blank line, then the content.
        while body and re.match(r"^\s+:[\w-]+:", body[0]):
            body.pop(0)
        content = textwrap.dedent("\n".join(body)).strip("\n")
        found.append((match.group("name"), match.group("argument").strip(), content, number + 1))
    return found


def python_blocks():
    blocks = []
    for page in rst_pages():
        index = 0
        text = page.read_text(encoding="utf-8")
        for _, language, code, line in directives(text, {"code-block", "code", "sourcecode"}):
            if language.lower() in PYTHON_LANGUAGES:
                blocks.append(pytest.param(page, line, code, id=f"{page_id(page)}-{index}"))
                index += 1
    return blocks


@pytest.fixture(scope="module")
def block_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("guide_env")
    env = dict(os.environ)
    env.update(
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        MTL_TF_DOWNLOAD="0",
        MTL_TF_CACHE=str(root / "cache"),
        TFDS_DATA_DIR=str(root / "no_tfds"),
        KERAS_HOME=str(root / "keras_home"),
        MPLBACKEND="Agg",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


@pytest.mark.parametrize("page, line, code", python_blocks())
def test_python_block_runs(page, line, code, block_env, tmp_path):
    """The block runs alone: a reader can paste it into a fresh interpreter."""
    script = tmp_path / "block.py"
    script.write_text(code + "\n", encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        completed = subprocess.run(
            [sys.executable, str(script)], cwd=work, env=block_env, capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{page_id(page)}:{line}: the python block ran longer than {BLOCK_TIMEOUT_S} s")
    assert completed.returncode == 0, (
        f"{page_id(page)}:{line}: the python block failed ({completed.returncode}):\n"
        f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    )


def test_the_block_reader_finds_python_blocks_and_skips_other_languages():
    text = textwrap.dedent("""\
        Intro.

        .. code-block:: python
           :caption: one

           x = 1
           if x:
               y = 2

        .. code-block:: bash

           python run.py

        1. A step:

           .. code-block:: python

              print("nested")

        Text again.
        """)
    blocks = [(language, code) for _, language, code, _ in directives(text, {"code-block"})]
    assert blocks == [("python", "x = 1\nif x:\n    y = 2"), ("bash", "python run.py"), ("python", 'print("nested")')]


# -- links ----------------------------------------------------------------------------------------------


def external_link_problem(url):
    """Why `url` is not an acceptable external link, or None."""
    if any(c.isspace() for c in url):
        return "contains white space"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    host = (parts.hostname or "").lower()
    if not host or "." not in host:
        return "has no host"
    if host not in ALLOWED_HOSTS:
        return f"host {host!r} is not on the allowed list (tests/test_guide.py ALLOWED_HOSTS)"
    return None


def github_slug(heading):
    """The anchor GitHub gives a markdown heading (github-slugger: lower case, punctuation dropped)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_without_code(text):
    """`text` with fenced code blocks and inline code spans blanked (links in code are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    return re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", text)


def markdown_anchors(path):
    text = markdown_without_code(path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, flags=re.M)
    headings += re.findall(r"^(\S.*)\n(?:=+|-+)[ \t]*$", text, flags=re.M)
    anchors, seen = set(), {}
    for heading in headings:
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    # Explicit HTML anchors (<a name="x"> / id="x") count too.
    anchors |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", text))
    return anchors


def markdown_links(text):
    """(kind, target) of every link, image and reference definition in markdown `text`, code left out."""
    text = markdown_without_code(text)
    links = []
    link = r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)"
    for match in re.finditer(link, text):
        links.append(("image" if match.group(1) else "link", match.group(3)))
        # An image inside the link text ([![badge](img)](url)).
        for inner in re.finditer(r"!\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)", match.group(2)):
            links.append(("image", inner.group(1)))
    for match in re.finditer(r"^[ ]{0,3}\[([^\]]+)\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", text, flags=re.M):
        links.append(("link", match.group(2)))
    return links


def markdown_link_problem(kind, target, source):
    """Why the link `target` in markdown file `source` does not resolve, or None."""
    if not target:
        return "empty target"
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
        if kind == "image":
            return "an image must be a file of the repository (nothing can be fetched here)"
        return external_link_problem(target)
    path, _, anchor = target.partition("#")
    resolved = (source.parent / unquote(path)).resolve() if path else source
    try:
        resolved.relative_to(REPO)
    except ValueError:
        return "points outside the repository"
    if not resolved.exists():
        return f"{path} does not exist"
    if anchor:
        if resolved.suffix.lower() != ".md":
            return None if re.fullmatch(r"L\d+(-L\d+)?", anchor) else f"anchor #{anchor} in a non-markdown file"
        if anchor not in markdown_anchors(resolved):
            return f"#{anchor} is no heading of {resolved.relative_to(REPO)}"
    return None


def test_readme_links_resolve():
    links = markdown_links(README.read_text(encoding="utf-8"))
    problems = [f"{kind} {target}: {problem}" for kind, target in links
                if (problem := markdown_link_problem(kind, target, README))]
    assert not problems, "README.md:\n" + "\n".join(problems)


def rst_targets(text):
    """(role, target, line) of the references a guide page makes that must resolve."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(r":doc:`([^`]+)`", line):
            target = match.group(1)
            inner = re.search(r"<([^>]+)>\s*$", target)
            found.append(("doc", (inner.group(1) if inner else target).strip(), number))
        for match in re.finditer(r"`[^`<]*<([^>`]+)>`__?", line):
            found.append(("url", match.group(1).strip(), number))
        match = re.match(r"^\s*\.\.\s+_[^:]+:\s+(\S+)\s*$", line)
        if match:
            found.append(("url", match.group(1), number))
    for name, argument, _, number in directives(text, {"image", "figure", "literalinclude", "include"}):
        found.append((name, argument, number))
    return found


def rst_target_problem(role, target, page):
    if role == "url":
        if target.endswith("_"):  # `text <name_>`_ : a named reference, not a URL
            return None
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            return external_link_problem(target)
        return "a link to a repository file: write the path as code (``examples/x.py``) instead"
    base = DOCS if target.startswith("/") else page.parent
    resolved = (base / target.lstrip("/")).resolve()
    if role == "doc":
        resolved = resolved.with_name(resolved.name + ".rst")
    if not resolved.exists():
        return f"{target} does not exist ({resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved})"
    return None


def guide_pages():
    return [pytest.param(page, id=page_id(page)) for page in sorted(GUIDE.glob("*.rst"))]


@pytest.mark.parametrize("page", guide_pages())
def test_guide_page_links_resolve(page):
    problems = [f"{page_id(page)}:{line}: {role} {target}: {problem}"
                for role, target, line in rst_targets(page.read_text(encoding="utf-8"))
                if (problem := rst_target_problem(role, target, page))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [pytest.param(p, id=page_id(p)) for p in sorted(DOCS.glob("*.rst"))])
def test_literalinclude_paths_exist(page):
    """docs/*.rst pages (examples.rst) include example scripts; the guide's are checked above."""
    problems = [f"{page_id(page)}:{line}: {target}" for name, target, _, line in
                directives(page.read_text(encoding="utf-8"), {"literalinclude", "include", "image", "figure"})
                if not (page.parent / target).resolve().exists()]
    assert not problems, "missing files:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://arxiv.org/abs/1810.04650", True),
        ("https://github.com/isl-org/MultiObjectiveOptimization", True),
        ("https://example.com/x", False),
        ("ftp://arxiv.org/abs/1", False),
        ("https://arxiv.org/abs/1 2", False),
        ("https:///abs", False),
    ],
)
def test_external_link_rule(url, ok):
    assert (external_link_problem(url) is None) == ok


def test_markdown_link_reader():
    text = textwrap.dedent("""\
        # Title: `mtl_tf` & more
        ## Results (2026)
        See [the guide](docs/index.rst#x), ![plot](docs/plot.png), [![b](img.svg)](https://pypi.org/p),
        [ref]: https://keras.io/api/
        ```python
        x = "[not](a_link)"
        ```
        and `[nor](this)`.
        """)
    assert markdown_links(text) == [
        ("link", "docs/index.rst#x"), ("image", "docs/plot.png"), ("link", "https://pypi.org/p"), ("image", "img.svg"),
        ("link", "https://keras.io/api/"),
    ]
    assert github_slug("Title: `mtl_tf` & more") == "title-mtl_tf--more"
    assert github_slug("Results (2026)") == "results-2026"


# -- the README speaks to users ---------------------------------------------------------------------------


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


_HASH = r"`?(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}`?"
PROJECT_HISTORY = {
    "a commit hash": re.compile(rf"\b(?:at|commit)\s+{_HASH}(?![\w])|(?<![\w]){_HASH}\s+commit\b", re.I),
    "an issue number": re.compile(r"\bissues?\s+#?\d+", re.I),
    "version history (0.1.0 / 0.2.0)": re.compile(r"(?<![\d.])0\.[12]\.0(?![\d.])"),
}


def test_readme_has_no_project_history():
    """Commit hashes, issue numbers and release history belong in git log, not in the README."""
    problems = [f"README.md:{number}: {what}: {line.strip()}"
                for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1)
                for what, pattern in PROJECT_HISTORY.items() if pattern.search(line)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line, what",
    [
        ("measured at 2aecb18 on two cores", "a commit hash"),
        ("(commit `bc4eda5ef`)", "a commit hash"),
        ("at 1234567 steps", None),
        ("see issue 22", "an issue number"),
        ("since 0.2.0 the step", "version history (0.1.0 / 0.2.0)"),
        ("pip install tensorflow==2.21.0", None),
    ],
)
def test_project_history_patterns(line, what):
    assert [w for w, p in PROJECT_HISTORY.items() if p.search(line)] == ([what] if what else [])
